"""The OpenTelemetry Node SDK exporting over TLS and mutual TLS.

tests/node/export.mjs runs two Node services of the Kafka shop with
exporters that take no options in code: endpoint, protocol, CA, client
certificate and token come from the standard OTEL_EXPORTER_OTLP_*
variables, as users set them. The Node project's modules are installed once
per session from its lock file (`npm ci`); Node.js and npm come from
scripts/prepare-tests.
"""

import asyncio
import fcntl
import hashlib
import os
import shutil
import subprocess
from pathlib import Path
from urllib.parse import quote

import pytest

from collector import auth
from tests.collector.receiver_harness import running_writer
from tests.collector.test_sdk_exporters import assert_shop_stored, stored
from tests.collector.test_tls import grpcs_receiver, https_receiver, make_pki

pytestmark = pytest.mark.django_db(transaction=True)

NODE_PROJECT = Path(__file__).resolve().parent.parent / "node"
STAMP = NODE_PROJECT / "node_modules" / ".package-lock.sha256"


def _installed_lock_digest() -> str:
    return STAMP.read_text().strip() if STAMP.exists() else ""


@pytest.fixture(scope="session")
def node_sdk() -> str:
    """The `node` executable, with tests/node/node_modules matching its lock file."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        missing = " and ".join(n for n, path in (("node", node), ("npm", npm)) if path is None)
        pytest.fail(
            f"{missing} not found on PATH: the Node SDK tests need Node.js >= 18.19 and npm; "
            "run scripts/prepare-tests (or apt-get install nodejs npm)",
            pytrace=False,
        )
    digest = hashlib.sha256((NODE_PROJECT / "package-lock.json").read_bytes()).hexdigest()
    # One installer at a time, should two test runs start together.
    with open(NODE_PROJECT / ".install.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if _installed_lock_digest() != digest:
            done = subprocess.run(
                [npm, "ci", "--no-audit", "--no-fund"],
                cwd=NODE_PROJECT,
                capture_output=True,
                text=True,
                timeout=600,
            )
            if done.returncode != 0:
                pytest.fail(
                    f"npm ci in {NODE_PROJECT} failed ({done.returncode}):\n"
                    f"{done.stdout}\n{done.stderr}",
                    pytrace=False,
                )
            STAMP.write_text(digest + "\n")
    return node


@pytest.fixture(autouse=True)
def fresh_token_cache():
    auth.forget()
    yield
    auth.forget()


async def run_node(node: str, endpoint: str, protocol: str, **otel) -> tuple[int, str]:
    """Run export.mjs with only the given OTEL_EXPORTER_OTLP_* settings;
    returns (exit status, what it printed)."""
    env = {name: value for name, value in os.environ.items() if not name.startswith("OTEL_")}
    env.update(
        OTEL_EXPORTER_OTLP_ENDPOINT=endpoint,
        OTEL_EXPORTER_OTLP_PROTOCOL=protocol,
        OTEL_EXPORTER_OTLP_TIMEOUT="5000",
    )
    env.update({f"OTEL_EXPORTER_OTLP_{name.upper()}": value for name, value in otel.items()})
    # Only OTEL_EXPORTER_OTLP_CERTIFICATE may make the test's CA trusted.
    env.pop("NODE_EXTRA_CA_CERTS", None)
    process = await asyncio.create_subprocess_exec(
        node,
        "export.mjs",
        cwd=NODE_PROJECT,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await asyncio.wait_for(process.communicate(), 60)
    return process.returncode, output.decode()


def bearer(token: str) -> str:
    """OTEL_EXPORTER_OTLP_HEADERS for a token (values are URL-encoded)."""
    return f"authorization={quote(f'Bearer {token}', safe='')}"


@pytest.mark.parametrize("protocol", ["http/protobuf", "http/json"])
async def test_node_over_https_stores_every_span(
    node_sdk, protocol, tmp_path, project, ingest_token, telemetry_db
):
    pki = make_pki(tmp_path)
    async with running_writer() as writer, https_receiver(writer, pki.files) as url:
        status, output = await run_node(
            node_sdk,
            url,
            protocol,
            certificate=str(pki.dir / "ca.crt"),
            headers=bearer(ingest_token),
        )
    assert status == 0, output
    assert_shop_stored(*await stored(project.pk))


async def test_node_over_grpc_with_tls_stores_every_span(
    node_sdk, tmp_path, project, ingest_token, telemetry_db
):
    pki = make_pki(tmp_path)
    async with running_writer() as writer, grpcs_receiver(writer, pki.files) as address:
        status, output = await run_node(
            node_sdk,
            f"https://{address}",
            "grpc",
            certificate=str(pki.dir / "ca.crt"),
            headers=bearer(ingest_token),
        )
    assert status == 0, output
    assert_shop_stored(*await stored(project.pk))


async def test_node_with_a_mapped_client_certificate_stores_without_a_token(
    node_sdk, tmp_path, settings, project, other_project, telemetry_db
):
    settings.TLS_CLIENT_PROJECTS = {"payments-service": other_project.slug}
    pki = make_pki(tmp_path, "required")
    certificate, key = pki.client("payments-service")
    files = {
        "certificate": str(pki.dir / "ca.crt"),
        "client_certificate": certificate,
        "client_key": key,
    }
    async with running_writer() as writer:
        async with https_receiver(writer, pki.files) as url:
            status, output = await run_node(node_sdk, url, "http/protobuf", **files)
            assert status == 0, output
        assert_shop_stored(*await stored(other_project.pk))
        async with grpcs_receiver(writer, pki.files) as address:
            status, output = await run_node(node_sdk, f"https://{address}", "grpc", **files)
            assert status == 0, output
    spans, _stages, _rollups = await stored(other_project.pk)
    assert len(spans) == 2 * 6
    assert (await stored(project.pk))[0] == []


async def test_node_without_a_client_certificate_is_refused_when_one_is_required(
    node_sdk, tmp_path, project, ingest_token, telemetry_db
):
    pki = make_pki(tmp_path, "required")
    async with running_writer() as writer:
        async with (
            https_receiver(writer, pki.files) as url,
            grpcs_receiver(writer, pki.files) as address,
        ):
            for endpoint, protocol in ((url, "http/protobuf"), (f"https://{address}", "grpc")):
                # A valid token does not make up for the missing certificate.
                status, output = await run_node(
                    node_sdk,
                    endpoint,
                    protocol,
                    certificate=str(pki.dir / "ca.crt"),
                    headers=bearer(ingest_token),
                    timeout="2000",
                )
                assert status == 1, output
                assert f"export(s) over {protocol} failed" in output
    assert (await stored(project.pk))[0] == []
