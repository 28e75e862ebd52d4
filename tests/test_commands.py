"""The process commands as real subprocesses on free ports, against the test database."""

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psycopg
import pytest
from django.db import connection
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from collector.db import conninfo
from collector.models import ApiToken, Scope
from collector.runtime import LEADER_LOCK_KEY

ROOT = Path(__file__).resolve().parent.parent
STARTUP_SECONDS = 40


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def command_env(**extra) -> dict:
    """The environment of a subprocess that uses this test's database."""
    settings = connection.settings_dict
    url = (
        f"postgresql://{settings['USER']}@{settings['HOST'] or '127.0.0.1'}:"
        f"{settings['PORT'] or 5432}/{settings['NAME']}"
    )
    return {
        **os.environ,
        "DATABASE_URL": url,
        "DJANGO_SETTINGS_MODULE": "dashboard.settings",
        "EVENTSCOPE_LOG_LEVEL": "INFO",
        **extra,
    }


def manage(*args, env=None) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env=env or command_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def createtoken(*args) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "manage.py", "createtoken", *args],
        cwd=ROOT,
        env=command_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )


def wait_http(url: str, process: subprocess.Popen) -> httpx.Response:
    deadline = time.monotonic() + STARTUP_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"process exited early:\n{process.stdout.read()}")
        try:
            return httpx.get(url, timeout=2)
        except httpx.TransportError:
            time.sleep(0.2)
    raise AssertionError(f"{url} did not answer within {STARTUP_SECONDS}s")


def terminate(process: subprocess.Popen) -> str:
    """SIGTERM, wait for a clean exit, and return the output."""
    process.send_signal(signal.SIGTERM)
    try:
        output, _ = process.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        output, _ = process.communicate()
        raise AssertionError(f"no clean stop on SIGTERM:\n{output}") from None
    assert process.returncode == 0, output
    return output


def _trace_request() -> bytes:
    request = ExportTraceServiceRequest()
    spans = request.resource_spans.add()
    attribute = spans.resource.attributes.add()
    attribute.key, attribute.value.string_value = "service.name", "checkout"
    span = spans.scope_spans.add().spans.add()
    span.trace_id, span.span_id = os.urandom(16), os.urandom(8)
    span.name, span.kind = "GET /cart", 2
    span.start_time_unix_nano = time.time_ns() - 5_000_000
    span.end_time_unix_nano = time.time_ns()
    return request.SerializeToString()


def test_collector_answers_healthz_stores_data_and_stops_cleanly(telemetry_db, ingest_token):
    http_port, grpc_port = free_port(), free_port()
    process = manage(
        "collector", "--otlp-http-port", str(http_port), "--otlp-grpc-port", str(grpc_port)
    )
    try:
        assert wait_http(f"http://127.0.0.1:{http_port}/healthz", process).status_code == 200
        assert httpx.get(f"http://127.0.0.1:{http_port}/readyz").status_code == 200
        response = httpx.post(
            f"http://127.0.0.1:{http_port}/v1/traces",
            content=_trace_request(),
            headers={
                "content-type": "application/x-protobuf",
                "authorization": f"Bearer {ingest_token}",
            },
        )
        assert response.status_code == 200, response.text
        with socket.create_connection(("127.0.0.1", grpc_port), timeout=2):
            pass  # the gRPC port listens too
    finally:
        terminate(process)
    with connection.cursor() as cursor:
        cursor.execute("SELECT service FROM collector_span")
        assert cursor.fetchall() == [("checkout",)]


def test_serve_runs_web_and_receivers_in_one_process(telemetry_db):
    web, http_port, grpc_port = free_port(), free_port(), free_port()
    process = manage(
        "serve",
        "--port", str(web),
        "--otlp-http-port", str(http_port),
        "--otlp-grpc-port", str(grpc_port),
    )  # fmt: skip
    try:
        assert wait_http(f"http://127.0.0.1:{web}/healthz", process).status_code == 200
        assert httpx.get(f"http://127.0.0.1:{web}/readyz").status_code == 200
        assert httpx.get(f"http://127.0.0.1:{http_port}/healthz").status_code == 200
        metrics = httpx.get(f"http://127.0.0.1:{http_port}/metrics")
        assert "eventscope_queue_depth" in metrics.text
    finally:
        terminate(process)


def test_createtoken_prints_a_token_that_authenticates(transactional_db):
    result = createtoken("billing", "--project", "team-a")
    assert result.returncode == 0, result.stderr
    token = result.stdout.strip()
    assert token.startswith("es_") and "\n" not in token
    assert "shown once" in result.stderr


@pytest.mark.django_db(transaction=True)
def test_createtoken_token_is_stored_hashed_and_scoped():
    result = createtoken("grafana", "--project", "ops", "--scope", "read")
    assert result.returncode == 0, result.stderr
    token = result.stdout.strip()
    found = ApiToken.objects.authenticate(token, Scope.READ)
    assert found is not None and found.project.slug == "ops"
    assert ApiToken.objects.authenticate(token, Scope.INGEST) is None
    assert token not in {t.digest for t in ApiToken.objects.all()}


@pytest.mark.django_db(transaction=True)
def test_createtoken_output_writes_a_private_token_file_once(tmp_path):
    path = tmp_path / "demo_token"
    first = createtoken("demo", "--output", str(path))
    assert first.returncode == 0, first.stderr
    assert first.stdout == ""  # written, not printed
    token = path.read_text().strip()
    assert ApiToken.objects.authenticate(token, Scope.INGEST).project.slug == "default"
    assert path.stat().st_mode & 0o777 == 0o600
    again = createtoken("demo", "--output", str(path))  # a container restarting
    assert again.returncode == 0 and "exists" in again.stderr
    assert path.read_text().strip() == token
    assert ApiToken.objects.filter(name="demo").count() == 1


def test_createtoken_refuses_a_bad_project_slug(transactional_db):
    result = createtoken("x", "--project", "Not A Slug")
    assert result.returncode != 0
    assert "not a valid slug" in result.stderr


def _leader(conn) -> str | None:
    # Advisory locks are per database: other databases on the same server may
    # have leaders of their own, so only this test database's lock counts.
    row = conn.execute(
        "SELECT a.application_name FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
        "WHERE l.locktype = 'advisory' AND l.granted AND l.objid = %s AND l.classid = 0 "
        "AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database()) "
        "AND a.datname = current_database()",
        (LEADER_LOCK_KEY,),
    ).fetchall()
    assert len(row) <= 1, row
    return row[0][0] if row else None


def _wait_leader(conn, expected, process_by_name) -> str:
    deadline = time.monotonic() + STARTUP_SECONDS
    while time.monotonic() < deadline:
        leader = _leader(conn)
        if leader in expected:
            return leader
        for name, process in process_by_name.items():
            if name in expected and process.poll() is not None:
                raise AssertionError(f"{name} exited:\n{process.stdout.read()}")
        time.sleep(0.2)
    raise AssertionError(f"no leader among {expected}")


def test_two_workers_elect_one_leader_and_the_other_takes_over(telemetry_db):
    workers = {
        name: manage("worker", env=command_env(PGAPPNAME=name))
        for name in ("es-worker-a", "es-worker-b")
    }
    try:
        with psycopg.connect(conninfo(), autocommit=True) as conn:
            first = _wait_leader(conn, set(workers), workers)
            time.sleep(1.0)
            assert _leader(conn) == first  # still exactly one, the same one
            other = next(name for name in workers if name != first)
            assert workers[other].poll() is None  # the follower waits

            workers[first].kill()  # a crash: the session ends, the lock is released
            workers[first].communicate(timeout=10)
            assert _wait_leader(conn, {other}, workers) == other
    finally:
        # Stop both before checking either: a failed check must not leave
        # the other worker running against the test database.
        running = [process for process in workers.values() if process.poll() is None]
        for process in running:
            process.send_signal(signal.SIGTERM)
        for process in running:
            output, _ = process.communicate(timeout=30)
            assert process.returncode == 0, output


def uvicorn(port: int, env: dict) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "dashboard.asgi:application", "--port", str(port)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def test_the_web_app_under_uvicorn_answers_healthz_and_readyz(transactional_db):
    up, down = free_port(), free_port()
    # A database nobody listens on: the process is up, but not ready.
    unreachable = command_env(DATABASE_URL=f"postgresql://postgres@127.0.0.1:{free_port()}/none")
    processes = [uvicorn(up, command_env()), uvicorn(down, unreachable)]
    try:
        assert wait_http(f"http://127.0.0.1:{up}/healthz", processes[0]).status_code == 200
        assert httpx.get(f"http://127.0.0.1:{up}/readyz").status_code == 200
        health = wait_http(f"http://127.0.0.1:{down}/healthz", processes[1])
        assert (health.status_code, health.text) == (200, "ok\n")  # no database needed
        ready = httpx.get(f"http://127.0.0.1:{down}/readyz", timeout=10)
        assert (ready.status_code, ready.text) == (503, "database unreachable\n")
        # Everything else is still the web app.
        assert httpx.get(f"http://127.0.0.1:{up}/login/").status_code == 200
    finally:
        for process in processes:
            process.send_signal(signal.SIGTERM)  # uvicorn re-raises it once it has stopped
            process.communicate(timeout=30)


def test_serve_demo_flushes_its_last_spans_before_the_receivers_stop(telemetry_db):
    web, http_port, grpc_port = free_port(), free_port(), free_port()
    process = manage(
        "serve", "--demo",
        "--port", str(web),
        "--otlp-http-port", str(http_port),
        "--otlp-grpc-port", str(grpc_port),
    )  # fmt: skip
    try:
        wait_http(f"http://127.0.0.1:{web}/healthz", process)
        with psycopg.connect(conninfo(), autocommit=True) as conn:
            deadline = time.monotonic() + STARTUP_SECONDS
            while not conn.execute("SELECT count(*) FROM collector_span").fetchone()[0]:
                assert time.monotonic() < deadline, "the demo stored no spans"
                time.sleep(0.2)
    finally:
        output = terminate(process)
    # The demo's exporters flush on the way out; with the receivers already
    # closed they would retry against a refused connection and give up.
    assert "Failed to export" not in output, output
    assert "Transient error" not in output, output
    assert "not accepted" not in output, output
