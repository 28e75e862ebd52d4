"""Ingest benchmark: sustained OTLP/HTTP protobuf ingest into a real collector process.

What it measures, on a fresh database:

1. collector throughput: several concurrent exporters POST pre-built
   ExportTraceServiceRequest bodies (messaging producer/consumer spans with
   links to their producers, some failing, plus HTTP client/server pairs, so
   stages, e2e latency and call edges are all computed) and retry on
   429/503 after Retry-After, as OpenTelemetry exporters do;
2. correctness: every span sent is stored exactly once, the publish edge
   counts every message once, nothing is lost;
3. the baseline: the same rows loaded with plain psycopg binary COPY into
   the same tables (no HTTP, no decoding, no dedupe, no rollups), and the
   ratio between the two;
4. overload: many exporters that do not back off, against a collector with a
   small queue: it must answer 429/503 and its memory must stay bounded.
"""

import asyncio
import contextlib
import os
import random
import signal
import socket
import ssl
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import psutil
import psycopg
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

ROOT = Path(__file__).resolve().parent.parent
KIND_SERVER, KIND_CLIENT, KIND_PRODUCER, KIND_CONSUMER = 2, 3, 4, 5


# ---- workload ---------------------------------------------------------------------------


@dataclass
class Workload:
    bodies: list[bytes]
    spans: int  # spans in all bodies
    messages: int  # published messages (one publish stage each)
    consumed: int  # consumer stages
    calls: int  # CLIENT->SERVER pairs between two services


def _attr(span, key, value):
    kv = span.attributes.add()
    kv.key = key
    if isinstance(value, int):
        kv.value.int_value = value
    else:
        kv.value.string_value = value


def _resource(request, service):
    spans = request.resource_spans.add()
    kv = spans.resource.attributes.add()
    kv.key, kv.value.string_value = "service.name", service
    return spans.scope_spans.add()


def build_workload(requests: int, messages_per_request: int, calls_per_request: int, seed=7):
    """Pre-built request bodies; each request carries the producers of its own
    messages, the consumers of the previous request's messages (joined to
    producers already stored) and HTTP call pairs."""
    rng = random.Random(seed)
    now = time.time_ns() - 60 * 10**9
    bodies, spans, consumed = [], 0, 0
    previous: list[tuple[bytes, bytes, int]] = []
    channels = ("orders", "payments", "shipments")
    for r in range(requests):
        request = ExportTraceServiceRequest()
        producers = _resource(request, "orders")
        consumers = _resource(request, "payments")
        web = _resource(request, "web")
        api = _resource(request, "api")
        current = []
        for m in range(messages_per_request):
            trace_id, span_id = rng.randbytes(16), rng.randbytes(8)
            start = now + (r * messages_per_request + m) * 100_000
            span = producers.spans.add()
            span.trace_id, span.span_id, span.name, span.kind = (
                trace_id,
                span_id,
                "send",
                KIND_PRODUCER,
            )
            span.start_time_unix_nano, span.end_time_unix_nano = start, start + 800_000
            channel = channels[m % len(channels)]
            _attr(span, "messaging.system", "kafka")
            _attr(span, "messaging.destination.name", channel)
            _attr(span, "messaging.operation.type", "send")
            _attr(span, "messaging.message.id", f"m-{r}-{m}")
            current.append((trace_id, span_id, start, channel))
        for trace_id, parent_id, start, channel in previous:
            span = consumers.spans.add()
            span.trace_id, span.span_id, span.parent_span_id = trace_id, rng.randbytes(8), parent_id
            span.name, span.kind, span.flags = "process", KIND_CONSUMER, 0x300
            begin = start + rng.randint(2, 400) * 1_000_000
            span.start_time_unix_nano, span.end_time_unix_nano = begin, begin + 12_000_000
            _attr(span, "messaging.system", "kafka")
            _attr(span, "messaging.destination.name", channel)
            _attr(span, "messaging.operation.type", "process")
            _attr(span, "messaging.consumer.group.name", "payments")
            if rng.random() < 0.02:
                span.status.code, span.status.message = 2, "card declined"
            consumed += 1
        for c in range(calls_per_request):
            trace_id, client_id = rng.randbytes(16), rng.randbytes(8)
            start = now + (r * calls_per_request + c) * 200_000
            client = web.spans.add()
            client.trace_id, client.span_id, client.name, client.kind = (
                trace_id, client_id, "GET /stock", KIND_CLIENT,
            )  # fmt: skip
            client.start_time_unix_nano, client.end_time_unix_nano = start, start + 9_000_000
            _attr(client, "http.request.method", "GET")
            server = api.spans.add()
            server.trace_id, server.span_id, server.parent_span_id = (
                trace_id, rng.randbytes(8), client_id,
            )  # fmt: skip
            server.name, server.kind = "GET /stock", KIND_SERVER
            server.start_time_unix_nano, server.end_time_unix_nano = (
                start + 1_000_000, start + 8_000_000,
            )  # fmt: skip
            _attr(server, "http.route", "/stock")
        previous = [(t, s, start, ch) for t, s, start, ch in current]
        bodies.append(request.SerializeToString())
        spans += messages_per_request + len(consumers.spans) + 2 * calls_per_request
    return Workload(
        bodies, spans, requests * messages_per_request, consumed, requests * calls_per_request
    )


# ---- driving a collector ----------------------------------------------------------------


@dataclass
class DriveResult:
    seconds: float
    acked_requests: int = 0
    throttled: int = 0  # 429 answers
    unavailable: int = 0  # 503 answers
    errors: list[str] = field(default_factory=list)


class _Connection:
    """A minimal HTTP/1.1 keep-alive client for pre-built requests.

    The exporters of a real deployment run on other machines; here they
    share the cores with the collector, so they must cost next to nothing
    (a general-purpose client took a third of a core at these rates).
    """

    def __init__(self, host: str, port: int, tls=None):
        self.host, self.port, self.tls = host, port, tls
        self.reader = self.writer = None

    async def post(self, request: bytes) -> tuple[int, dict[str, str], bytes]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(
                self.host, self.port, ssl=self.tls
            )
        self.writer.write(request)
        head = await self.reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        headers = {}
        for line in lines[1:]:
            if ":" in line:
                name, value = line.split(":", 1)
                headers[name.strip().lower()] = value.strip()
        body = await self.reader.readexactly(int(headers.get("content-length", "0")))
        if headers.get("connection", "").lower() == "close":
            await self.close()
        return status, headers, body

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            with contextlib.suppress(OSError):
                await self.writer.wait_closed()
        self.reader = self.writer = None


def http_request(url: str, token: str, body: bytes) -> bytes:
    parts = urlsplit(url)
    head = (
        f"POST {parts.path} HTTP/1.1\r\nhost: {parts.netloc}\r\n"
        f"content-type: application/x-protobuf\r\nauthorization: Bearer {token}\r\n"
        f"content-length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


async def drive(
    url, token, bodies, clients, honour_retry_after=True, deadline=None, tls=None
) -> DriveResult:
    """POST every body (each until acknowledged, unless `honour_retry_after` is False);
    over TLS with the ssl.SSLContext `tls` for an https URL."""
    queue = list(reversed(range(len(bodies))))
    result = DriveResult(0.0)
    requests = [http_request(url, token, body) for body in bodies]  # untimed
    parts = urlsplit(url)

    async def client_loop():
        connection = _Connection(
            parts.hostname, parts.port, tls if parts.scheme == "https" else None
        )
        try:
            while queue and (deadline is None or time.monotonic() < deadline):
                index = queue.pop()
                while True:
                    try:
                        status, headers, body = await connection.post(requests[index])
                    except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
                        result.errors.append(repr(exc))
                        await connection.close()
                        await asyncio.sleep(0.5)
                        continue
                    if status == 200:
                        result.acked_requests += 1
                        break
                    if status in (429, 503):
                        if status == 429:
                            result.throttled += 1
                        else:
                            result.unavailable += 1
                        if not honour_retry_after:
                            queue.insert(0, index)  # back of the line, sent again later
                            break
                        await asyncio.sleep(float(headers.get("retry-after", "1")))
                        continue
                    result.errors.append(f"{status}: {body[:200]!r}")
                    break
        finally:
            await connection.close()

    started = time.perf_counter()
    await asyncio.gather(*(client_loop() for _ in range(clients)))
    result.seconds = time.perf_counter() - started
    return result


# ---- processes and databases ---------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def manage(env, *args, **kwargs):
    return subprocess.run(
        [sys.executable, "manage.py", *args], cwd=ROOT, env=env, check=True, text=True,
        capture_output=True, **kwargs,
    )  # fmt: skip


class Collector:
    """A `manage.py collector [--processes N]` subprocess on free ports; over TLS
    when `env` names a certificate, with `tls` the client context that trusts it."""

    def __init__(self, env, processes: int = 1, tls=None, root: Path = ROOT):
        self.port = free_port()
        self.grpc_port = free_port()
        self.process = subprocess.Popen(
            [sys.executable, "manage.py", "collector", "--otlp-http-port", str(self.port),
             "--otlp-grpc-port", str(self.grpc_port), "--processes", str(processes)],
            cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        )  # fmt: skip
        self.tls = tls
        self.url = f"{'https' if tls else 'http'}://127.0.0.1:{self.port}"
        # The banner comes once every process serves.
        banner = self.process.stdout.readline()
        if not banner.startswith("collector:"):
            raise RuntimeError(f"the collector did not start (exit {self.process.wait()})")
        if httpx.get(self.url + "/readyz", timeout=5, verify=tls or True).status_code != 200:
            raise RuntimeError("the collector is not ready")

    def processes(self) -> list[psutil.Process]:
        """The collector's processes: itself, or the pool's children."""
        parent = psutil.Process(self.process.pid)
        return parent.children() or [parent]

    def rss(self) -> int:
        return sum(p.memory_info().rss for p in self.processes())

    def cpu_seconds(self) -> float:
        return sum(sum(p.cpu_times()[:2]) for p in self.processes())

    def stop(self):
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(60)


class PostgresCPU:
    """CPU seconds used by the whole PostgreSQL server (it runs on this machine).

    The postmaster's own time, the time of the backends it has reaped and
    of those alive: a connection opened and closed during a run counts too.
    """

    def __init__(self, conninfo):
        with psycopg.connect(conninfo) as conn:
            backend = conn.execute("SELECT pg_backend_pid()").fetchone()[0]
            self.postmaster = psutil.Process(backend).parent()

    def seconds(self) -> float:
        times = self.postmaster.cpu_times()
        total = times.user + times.system + times.children_user + times.children_system
        for child in self.postmaster.children():
            with contextlib.suppress(psutil.Error):
                total += sum(child.cpu_times()[:2])
        return total


def tls_setup(directory: Path) -> tuple[dict, ssl.SSLContext]:
    """A CA and a certificate for 127.0.0.1 made for the run: the collector's
    environment for them, and the client context that trusts the CA."""
    import trustme

    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    cert.cert_chain_pems[0].write_to_path(str(directory / "cert.pem"))
    cert.private_key_pem.write_to_path(str(directory / "key.pem"))
    client = ssl.create_default_context()
    ca.configure_trust(client)
    env = {
        "EVENTSCOPE_TLS_CERT_FILE": str(directory / "cert.pem"),
        "EVENTSCOPE_TLS_KEY_FILE": str(directory / "key.pem"),
    }
    return env, client


def machine(conninfo) -> dict:
    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    with psycopg.connect(conninfo) as conn:
        version = conn.execute("SHOW server_version").fetchone()[0]
    return {
        "cores": os.cpu_count(),
        "ram_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "cpu": model,
        "postgresql": version,
        "python": sys.version.split()[0],
        "load": " / ".join(f"{n:.1f}" for n in os.getloadavg()),
    }
