"""TLS and mutual TLS on the ingest ports and the web port, with a CA made in the test.

The OpenTelemetry SDK exporters are configured the way users configure them:
an `https://` endpoint and OTEL_EXPORTER_OTLP_CERTIFICATE (plus
OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE / _CLIENT_KEY for mutual TLS).
"""

import asyncio
import contextlib
import socket
import ssl
from dataclasses import dataclass
from pathlib import Path

import grpc
import httpx
import pytest
import trustme
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (
    OTLPSpanExporter as GrpcSpanExporter,
)
from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
    OTLPSpanExporter as HttpSpanExporter,
)
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2

from collector import auth, runtime
from collector.receivers.otlp_grpc import start_grpc_server
from collector.receivers.otlp_http import make_app
from collector.tls import TLSFiles
from tests.collector.receiver_harness import CollectingWriter, running_writer
from tests.collector.test_sdk_exporters import (
    assert_shop_stored,
    export,
    provider,
    run_shop,
    stored,
)
from tests.test_commands import free_port

pytestmark = pytest.mark.django_db(transaction=True)

EXPORT_METHOD = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"


@dataclass
class Pki:
    """A server CA, a certificate for 127.0.0.1 in files, and client certificates."""

    ca: trustme.CA
    client_ca: trustme.CA
    dir: Path
    files: TLSFiles

    def pem(self, name: str, data: bytes) -> str:
        path = self.dir / name
        path.write_bytes(data)
        return str(path)

    def client(self, name: str, ca: trustme.CA | None = None) -> tuple[str, str]:
        """(certificate file, key file) of a client certificate with CN `name`."""
        cert = (ca or self.client_ca).issue_cert(f"{name}.clients.example", common_name=name)
        chain = b"".join(blob.bytes() for blob in cert.cert_chain_pems)
        stem = f"{name}-{len(list(self.dir.glob('*.key')))}"
        return self.pem(f"{stem}.crt", chain), self.pem(f"{stem}.key", cert.private_key_pem.bytes())

    def write_server_cert(self, cert) -> None:
        """Rewrite the server's files in place: the certificate first, then its key."""
        Path(self.files.cert_file).write_bytes(
            b"".join(blob.bytes() for blob in cert.cert_chain_pems)
        )
        Path(self.files.key_file).write_bytes(cert.private_key_pem.bytes())


def make_pki(tmp_path, client_auth="off") -> Pki:
    ca, client_ca = trustme.CA(), trustme.CA()
    pki = Pki(ca, client_ca, tmp_path, None)
    server = ca.issue_cert("127.0.0.1", "localhost")
    cert_file = pki.pem("server.crt", b"".join(b.bytes() for b in server.cert_chain_pems))
    key_file = pki.pem("server.key", server.private_key_pem.bytes())
    pki.pem("ca.crt", ca.cert_pem.bytes())
    client_ca_file = pki.pem("client-ca.crt", client_ca.cert_pem.bytes())
    pki.files = TLSFiles(
        cert_file, key_file, client_ca_file if client_auth != "off" else "", client_auth
    )
    return pki


@pytest.fixture(autouse=True)
def fresh_token_cache():
    auth.forget()
    yield
    auth.forget()


@pytest.fixture
def exporter_env(monkeypatch):
    """Clean OTEL_EXPORTER_OTLP_* variables; returns a setter for the test's own.

    requests (under the HTTP exporter) prefers REQUESTS_CA_BUNDLE and
    CURL_CA_BUNDLE over the exporter's certificate when they are set."""
    monkeypatch.delenv("REQUESTS_CA_BUNDLE", raising=False)
    monkeypatch.delenv("CURL_CA_BUNDLE", raising=False)
    for name in ("CERTIFICATE", "CLIENT_CERTIFICATE", "CLIENT_KEY"):
        monkeypatch.delenv(f"OTEL_EXPORTER_OTLP_{name}", raising=False)
        monkeypatch.delenv(f"OTEL_EXPORTER_OTLP_TRACES_{name}", raising=False)

    def use(certificate, client=None):
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_CERTIFICATE", certificate)
        if client is not None:
            monkeypatch.setenv("OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE", client[0])
            monkeypatch.setenv("OTEL_EXPORTER_OTLP_CLIENT_KEY", client[1])

    return use


@contextlib.asynccontextmanager
async def https_receiver(writer, files: TLSFiles):
    server, task = await runtime.start_asgi(
        make_app(writer), "127.0.0.1", 0, "test receiver", tls=files, client_auth=True
    )
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"https://127.0.0.1:{port}"
    finally:
        await runtime.stop_asgi(server, task)


@contextlib.asynccontextmanager
async def grpcs_receiver(writer, files: TLSFiles):
    server = await start_grpc_server(writer, "127.0.0.1", 0, tls=files)
    try:
        yield f"127.0.0.1:{server.bound_port}"
    finally:
        await server.stop(grace=None)


def http_exporter(url, token=None, timeout=10):
    headers = {"authorization": f"Bearer {token}"} if token else {}
    return HttpSpanExporter(endpoint=f"{url}/v1/traces", headers=headers, timeout=timeout)


def grpc_exporter(address, token=None, timeout=10):
    headers = {"authorization": f"Bearer {token}"} if token else {}
    return GrpcSpanExporter(endpoint=f"https://{address}", headers=headers, timeout=timeout)


def client_context(pki: Pki, client=None, alpn=None) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(pki.dir / "ca.crt"))
    if client is not None:
        context.load_cert_chain(*client)
    if alpn:
        context.set_alpn_protocols(alpn)
    return context


async def served_certificate(port: int, context: ssl.SSLContext) -> bytes:
    """The DER certificate a fresh connection to 127.0.0.1:port is shown."""
    reader, writer = await asyncio.open_connection(
        "127.0.0.1", port, ssl=context, server_hostname="127.0.0.1"
    )
    try:
        return writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
    finally:
        writer.close()
        with contextlib.suppress(ssl.SSLError, ConnectionError):
            await writer.wait_closed()


def der(cert) -> bytes:
    return ssl.PEM_cert_to_DER_cert(cert.cert_chain_pems[0].bytes().decode())


async def grpc_export(address, pki, client=None, token=None):
    """One raw Export call over a TLS channel; returns the response or raises AioRpcError."""
    key, chain = (None, None)
    if client is not None:
        chain, key = Path(client[0]).read_bytes(), Path(client[1]).read_bytes()
    credentials = grpc.ssl_channel_credentials(
        (pki.dir / "ca.crt").read_bytes(), private_key=key, certificate_chain=chain
    )
    metadata = (("authorization", f"Bearer {token}"),) if token else ()
    async with grpc.aio.secure_channel(address, credentials) as channel:
        call = channel.unary_unary(
            EXPORT_METHOD,
            request_serializer=trace_service_pb2.ExportTraceServiceRequest.SerializeToString,
            response_deserializer=trace_service_pb2.ExportTraceServiceResponse.FromString,
        )
        return await call(
            trace_service_pb2.ExportTraceServiceRequest(), metadata=metadata, timeout=10
        )


# ---- TLS with tokens ------------------------------------------------------------------


async def test_the_http_exporter_over_https_stores_every_span(
    tmp_path, project, ingest_token, telemetry_db, exporter_env
):
    pki = make_pki(tmp_path)
    exporter_env(str(pki.dir / "ca.crt"))
    async with running_writer() as writer, https_receiver(writer, pki.files) as url:
        orders = provider("orders", http_exporter(url, ingest_token))
        payments = provider("payments", http_exporter(url, ingest_token))
        run_shop(orders, payments)
        await export(orders, payments)
    assert_shop_stored(*await stored(project.pk))


async def test_the_grpc_exporter_over_tls_stores_every_span(
    tmp_path, project, ingest_token, telemetry_db, exporter_env
):
    pki = make_pki(tmp_path)
    exporter_env(str(pki.dir / "ca.crt"))
    async with running_writer() as writer, grpcs_receiver(writer, pki.files) as address:
        orders = provider("orders", grpc_exporter(address, ingest_token))
        payments = provider("payments", grpc_exporter(address, ingest_token))
        run_shop(orders, payments)
        await export(orders, payments)
    assert_shop_stored(*await stored(project.pk))


@pytest.mark.filterwarnings("ignore:ssl.TLSVersion.TLSv1_1 is deprecated")
async def test_tls_1_1_and_plain_http_are_refused(tmp_path):
    pki = make_pki(tmp_path)
    async with https_receiver(CollectingWriter(), pki.files) as url:
        port = int(url.rsplit(":", 1)[1])
        old = client_context(pki)
        old.minimum_version = ssl.TLSVersion.MINIMUM_SUPPORTED
        old.maximum_version = ssl.TLSVersion.TLSv1_1
        with pytest.raises((ssl.SSLError, ConnectionError)):
            await served_certificate(port, old)
        async with httpx.AsyncClient() as client:
            with pytest.raises(httpx.HTTPError):
                await client.get(f"http://127.0.0.1:{port}/healthz")
        # The same port answers HTTPS.
        async with httpx.AsyncClient(verify=client_context(pki)) as client:
            assert (await client.get(f"{url}/healthz")).status_code == 200


# ---- mutual TLS -----------------------------------------------------------------------


def answer_over_tls(port: int, context: ssl.SSLContext) -> bytes:
    """What the server answers one request on a fresh TLS connection (b"" when it
    closed the connection without answering).

    With TLS 1.3 a client finishes its side of the handshake before the
    server has checked the client's certificate; the server's verdict comes
    on the first read."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        with context.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
            tls.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            try:
                return tls.recv(100)
            except (ssl.SSLError, ConnectionError):
                return b""


async def test_required_client_auth_refuses_a_client_without_a_certificate_at_the_handshake(
    tmp_path, ingest_token, project, telemetry_db, exporter_env
):
    pki = make_pki(tmp_path, "required")
    exporter_env(str(pki.dir / "ca.crt"))
    async with running_writer() as writer:
        async with (
            https_receiver(writer, pki.files) as url,
            grpcs_receiver(writer, pki.files) as address,
        ):
            port = int(url.rsplit(":", 1)[1])
            assert await asyncio.to_thread(answer_over_tls, port, client_context(pki)) == b""
            tls12 = client_context(pki)
            tls12.maximum_version = ssl.TLSVersion.TLSv1_2
            with pytest.raises(ConnectionError):  # the handshake itself is cut
                await served_certificate(port, tls12)
            # A valid token does not make up for the missing certificate: the
            # real exporters cannot deliver anything.
            exporters = provider("orders", http_exporter(url, ingest_token, timeout=2))
            grpc_exporters = provider("payments", grpc_exporter(address, ingest_token, timeout=2))
            run_shop(exporters, grpc_exporters, messages=1)
            for tracer_provider in (exporters, grpc_exporters):
                await asyncio.to_thread(tracer_provider.shutdown)
            with pytest.raises(grpc.aio.AioRpcError) as grpc_refused:
                await grpc_export(address, pki, token=ingest_token)
            assert grpc_refused.value.code() == grpc.StatusCode.UNAVAILABLE
            # With a certificate from the client CA (and the token), both answer.
            client = pki.client("payments")
            answer = await asyncio.to_thread(answer_over_tls, port, client_context(pki, client))
            assert answer.startswith(b"HTTP/1.1 200")
            await grpc_export(address, pki, client=client, token=ingest_token)
    assert (await stored(project.pk))[0] == []


async def test_a_client_certificate_from_another_ca_is_refused(tmp_path, settings, ingest_token):
    # Even one that bears a mapped name: only the client CA vouches for names.
    settings.TLS_CLIENT_PROJECTS = {"payments": "shop"}
    for mode in ("optional", "required"):
        pki = make_pki(_fresh(tmp_path, mode), mode)
        stranger = pki.client("payments", ca=trustme.CA())
        async with https_receiver(CollectingWriter(), pki.files) as url:
            port = int(url.rsplit(":", 1)[1])
            refused = await asyncio.to_thread(answer_over_tls, port, client_context(pki, stranger))
            assert refused == b"", mode
            trusted = pki.client("payments")
            answer = await asyncio.to_thread(answer_over_tls, port, client_context(pki, trusted))
            assert answer.startswith(b"HTTP/1.1 200"), mode
    async with grpcs_receiver(CollectingWriter(), pki.files) as address:
        with pytest.raises(grpc.aio.AioRpcError) as grpc_refused:
            await grpc_export(address, pki, client=stranger, token=ingest_token)
        assert grpc_refused.value.code() == grpc.StatusCode.UNAVAILABLE


def _fresh(tmp_path, name) -> Path:
    path = tmp_path / name
    path.mkdir()
    return path


async def test_a_mapped_client_certificate_stores_in_its_project_without_a_token(
    tmp_path, settings, project, other_project, telemetry_db, exporter_env
):
    settings.TLS_CLIENT_PROJECTS = {"payments-service": other_project.slug}
    pki = make_pki(tmp_path, "required")
    client = pki.client("payments-service")
    exporter_env(str(pki.dir / "ca.crt"), client)
    async with running_writer() as writer:
        async with https_receiver(writer, pki.files) as url:
            orders = provider("orders", http_exporter(url))
            payments = provider("payments", http_exporter(url))
            run_shop(orders, payments)
            await export(orders, payments)
        assert_shop_stored(*await stored(other_project.pk))
        async with grpcs_receiver(writer, pki.files) as address:
            orders = provider("orders", grpc_exporter(address))
            payments = provider("payments", grpc_exporter(address))
            run_shop(orders, payments, messages=2)
            await export(orders, payments)
    spans, _stages, _rollups = await stored(other_project.pk)
    assert len(spans) == 6 + 4
    assert (await stored(project.pk))[0] == []


async def test_an_unmapped_client_certificate_still_needs_a_token(
    tmp_path, settings, project, ingest_token, telemetry_db
):
    settings.TLS_CLIENT_PROJECTS = {"payments-service": "shop"}
    pki = make_pki(tmp_path, "optional")
    client = pki.client("analytics")
    async with https_receiver(CollectingWriter(), pki.files) as url:
        async with httpx.AsyncClient(verify=client_context(pki, client)) as http:
            body = trace_service_pb2.ExportTraceServiceRequest().SerializeToString()
            headers = {"content-type": "application/x-protobuf"}
            refused = await http.post(f"{url}/v1/traces", content=body, headers=headers)
            assert refused.status_code == 401
            assert "'analytics' is not mapped to a project" in refused.text
            headers["authorization"] = f"Bearer {ingest_token}"
            accepted = await http.post(f"{url}/v1/traces", content=body, headers=headers)
            assert accepted.status_code == 200
        # Optional: a client without a certificate uses its token as before.
        async with httpx.AsyncClient(verify=client_context(pki)) as http:
            accepted = await http.post(f"{url}/v1/traces", content=body, headers=headers)
            assert accepted.status_code == 200


# ---- certificate rotation --------------------------------------------------------------


async def test_rewritten_certificate_files_are_served_without_a_restart(tmp_path, settings):
    """Through runtime.run, as `serve` runs: OTLP/HTTP, OTLP/gRPC and the web port."""
    pki = make_pki(tmp_path)
    settings.TLS_CERT_FILE, settings.TLS_KEY_FILE = pki.files.cert_file, pki.files.key_file
    ports = runtime.Ports(otlp_http=free_port(), otlp_grpc=free_port(), web=free_port())

    async def web_app(scope, receive, send):
        raise AssertionError("only /healthz is asked for")

    stop, started = asyncio.Event(), asyncio.Event()
    server = asyncio.create_task(runtime.run(ports, stop, web_app=web_app, on_started=started.set))
    try:
        await asyncio.wait_for(started.wait(), 30)
        first = pki.ca.issue_cert("127.0.0.1")
        second = pki.ca.issue_cert("127.0.0.1")
        for cert in (first, second):
            pki.write_server_cert(cert)
            for port, alpn in (
                (ports.otlp_http, None),
                (ports.web, None),
                (ports.otlp_grpc, ["h2"]),
            ):
                shown = await served_certificate(port, client_context(pki, alpn=alpn))
                assert shown == der(cert), port
        async with httpx.AsyncClient(verify=client_context(pki)) as client:
            for port in (ports.otlp_http, ports.web):
                answer = await client.get(f"https://127.0.0.1:{port}/healthz")
                assert answer.status_code == 200
    finally:
        stop.set()
        await asyncio.wait_for(server, 30)


async def test_a_half_written_certificate_keeps_the_previous_one(tmp_path):
    pki = make_pki(tmp_path)
    async with https_receiver(CollectingWriter(), pki.files) as url:
        port = int(url.rsplit(":", 1)[1])
        before = await served_certificate(port, client_context(pki))
        fresh = pki.ca.issue_cert("127.0.0.1")
        # The certificate is new, its key not yet: the pair does not load.
        Path(pki.files.cert_file).write_bytes(fresh.cert_chain_pems[0].bytes())
        assert await served_certificate(port, client_context(pki)) == before
        Path(pki.files.key_file).write_bytes(fresh.private_key_pem.bytes())
        assert await served_certificate(port, client_context(pki)) == der(fresh)
