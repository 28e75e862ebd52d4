"""Lag tests share: committed-data tables emptied around each test, a way to
read the present through a connection of its own, and polling until a
broker's own statistics have caught up."""

import asyncio
import http.server
import threading
import time
import types
from pathlib import Path

import psycopg
import pytest

from collector.brokers import lag
from collector.db import conninfo
from tests.dashboard.conftest import consumer_connections  # noqa: F401 - shared fixture

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

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200 if self.path == "/metrics" else 404)
            self.send_header("Content-Type", "text/plain; version=0.0.4")
            self.end_headers()
            self.wfile.write(served.text.encode() if self.path == "/metrics" else b"")

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    served.url = f"http://127.0.0.1:{server.server_address[1]}"
    yield served
    server.shutdown()
    server.server_close()


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
