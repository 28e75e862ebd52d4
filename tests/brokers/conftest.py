"""Lag tests share: committed-data tables emptied around each test, a way to
read the present through a connection of its own, and polling until a
broker's own statistics have caught up."""

import asyncio
import time
import types
from pathlib import Path

import psycopg
import pytest

from collector.brokers import lag
from collector.db import conninfo
from tests.brokers.azurite import azurite  # noqa: F401 - fixture: the Blob storage emulator
from tests.dashboard.conftest import consumer_connections  # noqa: F401 - shared fixture
from tests.http_sink import LocalHttpServer, QuietHandler

LAG_TABLES = (
    "brokers_lagsample",
    "brokers_groupstate",
    "brokers_brokerstate",
    "brokers_topologyedge",
)
FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "brokers"


@pytest.fixture
def scrape_target():
    """A Prometheus text endpoint on an ephemeral port serving `.text` at /metrics.

    `.url` is its base URL; set `.text` to change what the next scrape sees
    (an exporter's output as the broker moves on).
    """
    served = types.SimpleNamespace(text="")

    class Handler(QuietHandler):
        def do_GET(self):
            self.send_response(200 if self.path == "/metrics" else 404)
            self.send_header("Content-Type", "text/plain; version=0.0.4")
            self.end_headers()
            self.wfile.write(served.text.encode() if self.path == "/metrics" else b"")

    with LocalHttpServer(Handler) as server:
        served.url = server.base_url
        yield served


@pytest.fixture
def lag_db(transactional_db):
    """Pollers write through their own connections, so data must really commit."""
    from django.db import connection

    def truncate():
        with connection.cursor() as cursor:
            cursor.execute(f"TRUNCATE {', '.join(LAG_TABLES)}")

    truncate()
    yield
    truncate()


def read_current(project_id: int) -> list[dict]:
    with psycopg.connect(conninfo()) as conn, conn.cursor() as cursor:
        return lag.current(project_id, cursor)


def group_item(project_id: int, system: str, channel: str, group: str = "", **where) -> dict | None:
    """The item of one group; `where` narrows further (vhost="shop", account="A")."""
    for item in read_current(project_id):
        if (item["system"], item["channel"], item["group"]) == (system, channel, group) and all(
            item[k] == v for k, v in where.items()
        ):
            return item
    return None


async def poll_until(poll, check, timeout: float = 20.0, pause: float = 0.3):
    """Poll (a coroutine function) until `check()` returns a truthy value; return it.

    Brokers publish their own statistics on a timer (RabbitMQ's management
    plugin every few seconds), so a figure may need a few polls to show.
    """
    deadline = time.monotonic() + timeout
    while True:
        await poll()
        found = await asyncio.to_thread(check)
        if found:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s; last: {found!r}")
        await asyncio.sleep(pause)


CLOUD_FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"


def cloud_fixture(system: str, name: str) -> str:
    """A documented response body kept under tests/fixtures/<system>/ (its
    README names the documentation each file follows)."""
    return (CLOUD_FIXTURES / system / name).read_text()


@pytest.fixture
def documented_api():
    """A local HTTP server answering like a cloud service's documented API.

    `.routes[path]` (the path without its query) is `(content type, body)` or
    a function of the request's (path, query dict, headers, body) returning
    `(status, content type, body)`; unknown paths are 404. `.requests` records
    (method, path, query dict, headers) of every request; `.url` is the base URL.
    """
    from urllib.parse import parse_qsl, urlsplit

    served = types.SimpleNamespace(routes={}, requests=[])

    class Handler(QuietHandler):
        def _answer(self):
            parts = urlsplit(self.path)
            query = dict(parse_qsl(parts.query, keep_blank_values=True))
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            served.requests.append((self.command, parts.path, query, dict(self.headers)))
            route = served.routes.get(parts.path)
            if route is None:
                status, kind, text = 404, "application/json", '{"error": "not found"}'
            elif callable(route):
                status, kind, text = route(parts.path, query, dict(self.headers), body)
            else:
                status, (kind, text) = 200, route
            data = text.encode() if isinstance(text, str) else text
            self.send_response(status)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = do_PUT = _answer

    with LocalHttpServer(Handler) as server:
        served.url = server.base_url
        yield served


@pytest.fixture
def service_account(tmp_path, monkeypatch, documented_api):
    """A service account key whose token_uri is the local server, which checks
    the signed assertion with the key's public half before handing a token."""
    import base64
    import json

    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import padding, rsa

    from collector.brokers import gcp_pubsub

    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    key = {
        "type": "service_account",
        "project_id": "shop-prod",
        "private_key_id": "k1",
        "private_key": private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ).decode(),
        "client_email": "eventscope@shop-prod.iam.gserviceaccount.com",
        "token_uri": f"{documented_api.url}/token",
    }
    path = tmp_path / "key.json"
    path.write_text(json.dumps(key))
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(path))
    monkeypatch.delenv("GOOGLE_OAUTH_ACCESS_TOKEN", raising=False)
    monkeypatch.setattr(gcp_pubsub, "_tokens", {})

    def unb64(text: str) -> bytes:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))

    def token(path, query, headers, body):
        from urllib.parse import parse_qsl

        form = dict(parse_qsl(body.decode()))
        signing_input, _, signature = form["assertion"].rpartition(".")
        try:
            private.public_key().verify(
                unb64(signature), signing_input.encode(), padding.PKCS1v15(), hashes.SHA256()
            )
        except Exception:
            return 400, "application/json", '{"error": "invalid_grant"}'
        claims = json.loads(unb64(signing_input.split(".")[1]))
        assert form["grant_type"] == "urn:ietf:params:oauth:grant-type:jwt-bearer"
        assert claims["aud"] == key["token_uri"] and claims["iss"] == key["client_email"]
        assert "monitoring.read" in claims["scope"]
        return 200, "application/json", '{"access_token": "ya29.local", "expires_in": 3599}'

    documented_api.routes["/token"] = token
    return key
