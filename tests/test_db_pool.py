"""The web app's PostgreSQL connections come from one bounded pool per process,
whatever serves it: many requests leave the connection count flat."""

import signal
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import httpx
import psycopg
import pytest

from collector.db import conninfo
from tests.test_commands import ROOT, command_env, free_port, manage, wait_http

POOL_SIZE = 3
# Besides the pool: the worker's leader lock and the live updates' LISTEN
# connection, and one short-lived connection of a background pass.
OTHER_CONNECTIONS = 3
REQUESTS = 240
BATCH = 24


def _web_server(kind: str, port: int, application_name: str) -> subprocess.Popen:
    # libpq names every connection that does not name itself (the writer does).
    env = command_env(EVENTSCOPE_DB_POOL_SIZE=str(POOL_SIZE), PGAPPNAME=application_name)
    if kind == "serve":
        return manage(
            "serve", "--port", str(port),
            "--otlp-http-port", str(free_port()), "--otlp-grpc-port", str(free_port()),
            env=env,
        )  # fmt: skip
    return subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "dashboard.asgi:application", "--port", str(port)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


@pytest.mark.parametrize("kind", ["serve", "uvicorn"])
def test_web_requests_leave_the_database_connections_flat(telemetry_db, read_token, kind):
    port = free_port()
    application_name = f"es-pool-test-{port}"
    process = _web_server(kind, port, application_name)
    bound = POOL_SIZE + OTHER_CONNECTIONS
    url = f"http://127.0.0.1:{port}/api/flow?window=1h"
    headers = {"authorization": f"Bearer {read_token}"}
    try:
        wait_http(f"http://127.0.0.1:{port}/healthz", process)
        with psycopg.connect(conninfo(), autocommit=True) as conn, httpx.Client() as client:

            def connections() -> int:
                return conn.execute(
                    "SELECT count(*) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND application_name = %s",
                    (application_name,),
                ).fetchone()[0]

            def get(_):
                return client.get(url, headers=headers, timeout=30).status_code

            counts = []
            with ThreadPoolExecutor(8) as requests:
                for _ in range(REQUESTS // BATCH):
                    assert set(requests.map(get, range(BATCH))) == {200}
                    counts.append(connections())
                    # Stop at once when they pile up: the server is shared.
                    assert counts[-1] <= bound, counts
            assert max(counts) <= bound, counts
    finally:
        process.send_signal(signal.SIGTERM)
        process.communicate(timeout=30)
