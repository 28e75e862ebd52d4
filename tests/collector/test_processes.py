"""`collector --processes N`: several processes on the same ports, results as with one."""

import contextlib
import http.client
import os
import signal
import socket
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import psutil
from django.db import connection
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from collector.writer import WRITER_APPLICATION_NAME
from tests.test_commands import free_port, manage, terminate

KIND_PRODUCER, KIND_CONSUMER = 4, 5
MESSAGES = 60


def _span(scope, trace_id, span_id, kind, start_ns, parent=None):
    span = scope.spans.add()
    span.trace_id, span.span_id, span.kind, span.name = trace_id, span_id, kind, "orders"
    if parent:
        span.parent_span_id = parent
    span.start_time_unix_nano, span.end_time_unix_nano = start_ns, start_ns + 2_000_000
    for key, value in (
        ("messaging.system", "kafka"),
        ("messaging.destination.name", "orders"),
        ("messaging.operation.type", "send" if kind == KIND_PRODUCER else "process"),
        ("messaging.consumer.group.name", "payments"),
    ):
        attribute = span.attributes.add()
        attribute.key, attribute.value.string_value = key, value


def requests_that_join_across_requests() -> list[bytes]:
    """Request i publishes message i and consumes message i-1 (published by another request)."""
    now = time.time_ns() - 60 * 10**9
    contexts = [(os.urandom(16), os.urandom(8)) for _ in range(MESSAGES)]
    bodies = []
    for i, (trace_id, span_id) in enumerate(contexts):
        request = ExportTraceServiceRequest()
        for service, kind in (("orders", KIND_PRODUCER), ("payments", KIND_CONSUMER)):
            resource = request.resource_spans.add()
            attribute = resource.resource.attributes.add()
            attribute.key, attribute.value.string_value = "service.name", service
            scope = resource.scope_spans.add()
            if kind == KIND_PRODUCER:
                _span(scope, trace_id, span_id, kind, now + i * 1_000_000)
            elif i:
                previous_trace, previous_span = contexts[i - 1]
                _span(
                    scope, previous_trace, os.urandom(8), kind, now + i * 1_000_000 + 500_000,
                    parent=previous_span,
                )  # fmt: skip
        bodies.append(request.SerializeToString())
    return bodies


def _banner(process) -> str:
    """The line that says the collector serves (log lines come before it)."""
    lines = []
    for line in process.stdout:
        lines.append(line)
        if line.startswith("collector:") or "did not all start" in line:
            return line
    raise AssertionError("".join(lines))


def _pool(processes: int):
    """`collector --processes N` on free ports: the parent process and its OTLP/HTTP port."""
    http_port, grpc_port = free_port(), free_port()
    process = manage(
        "collector", "--processes", str(processes),
        "--otlp-http-port", str(http_port), "--otlp-grpc-port", str(grpc_port),
    )  # fmt: skip
    return process, http_port


def fetch(sql):
    with connection.cursor() as cursor:
        cursor.execute(sql)
        return cursor.fetchall()


def test_several_processes_share_the_ports_and_join_producers_and_consumers_exactly(
    telemetry_db, ingest_token
):
    process, http_port = _pool(2)
    url = f"http://127.0.0.1:{http_port}/v1/traces"
    headers = {"content-type": "application/x-protobuf", "authorization": f"Bearer {ingest_token}"}
    try:
        banner = _banner(process)
        assert banner.startswith("collector: 2 processes, OTLP/HTTP on 127.0.0.1:"), banner
        children = psutil.Process(process.pid).children()
        assert len(children) == 2

        # A new connection per request: the kernel spreads them over both processes.
        def post(body):
            return httpx.post(url, content=body, headers=headers, timeout=30).status_code

        with ThreadPoolExecutor(16) as pool:
            statuses = list(pool.map(post, requests_that_join_across_requests()))
        assert statuses == [200] * MESSAGES
        writers = fetch(
            "SELECT count(DISTINCT application_name) FROM pg_stat_activity "
            f"WHERE datname = current_database() AND application_name LIKE '{WRITER_APPLICATION_NAME} (pid %%)'"
        )
        assert writers == [(2,)]  # both processes stored some of it

        # A process that dies is replaced, and ingest goes on meanwhile.
        children[0].send_signal(signal.SIGKILL)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            pids = {child.pid for child in psutil.Process(process.pid).children()}
            if len(pids) == 2 and children[0].pid not in pids:
                break
            time.sleep(0.2)
        else:
            raise AssertionError("the killed collector process was not replaced")
        assert post(requests_that_join_across_requests()[0]) == 200
    finally:
        output = terminate(process)
    assert "exited with -9; restarting" in output

    # MESSAGES publishes and MESSAGES - 1 consumes, then one more publish.
    assert fetch("SELECT count(*), count(DISTINCT span_id) FROM collector_span") == [
        (2 * MESSAGES, 2 * MESSAGES)
    ]
    rollup = fetch(
        "SELECT kind, sum(count), sum(e2e_count) FROM collector_flowrollup "
        "GROUP BY kind ORDER BY kind"
    )
    # Every consume found its publish, whichever process stored either of them.
    assert [(kind, int(n), int(e2e)) for kind, n, e2e in rollup] == [
        ("consume", MESSAGES - 1, MESSAGES - 1),
        ("publish", MESSAGES + 1, 0),
    ]


def test_it_refuses_to_start_on_a_port_in_use(telemetry_db):
    http_port = free_port()
    with socket.create_server(("127.0.0.1", http_port)):  # any listener will do
        process = manage(
            "collector", "--processes", "2",
            "--otlp-http-port", str(http_port), "--otlp-grpc-port", str(free_port()),
        )  # fmt: skip
        output, _ = process.communicate(timeout=60)
    assert process.returncode != 0
    assert "cannot start the collector" in output and "in use" in output


def _running(process: psutil.Process) -> bool:
    # An orphan that exited stays a zombie until whoever adopted it reaps it.
    try:
        return process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_the_children_stop_when_the_parent_is_killed_and_the_ports_are_free_again(
    telemetry_db,
):
    http_port, grpc_port = free_port(), free_port()
    args = (
        "collector", "--processes", "2",
        "--otlp-http-port", str(http_port), "--otlp-grpc-port", str(grpc_port),
    )  # fmt: skip
    parent = manage(*args)
    children = []
    try:
        assert _banner(parent).startswith("collector: 2 processes")
        children = psutil.Process(parent.pid).children()
        assert len(children) == 2
        parent.kill()  # SIGKILL: the parent gets no chance to stop them
        parent.wait(timeout=10)
        deadline = time.monotonic() + 10
        while any(_running(child) for child in children):
            assert time.monotonic() < deadline, "children still run 10 s after their parent died"
            time.sleep(0.1)
    finally:
        for child in children:
            with contextlib.suppress(psutil.NoSuchProcess):
                child.kill()
        parent.stdout.close()  # the children wrote to it too

    again = manage(*args)
    try:
        assert _banner(again).startswith("collector: 2 processes"), "the ports are still taken"
        assert httpx.get(f"http://127.0.0.1:{http_port}/healthz", timeout=5).status_code == 200
    finally:
        terminate(again)


def _accepted_spans(http_port: int) -> float:
    """eventscope_accepted_items_total for traces, from one scrape (a new connection,
    so whichever process the kernel picks answers)."""
    text = httpx.get(f"http://127.0.0.1:{http_port}/metrics", timeout=30).text
    for line in text.splitlines():
        if line.startswith('eventscope_accepted_items_total{signal="traces"} '):
            return float(line.split()[1])
    raise AssertionError(text)


def test_metrics_of_every_process_add_up_and_survive_a_restart(telemetry_db, ingest_token):
    process, http_port = _pool(2)
    url = f"http://127.0.0.1:{http_port}/v1/traces"
    headers = {"content-type": "application/x-protobuf", "authorization": f"Bearer {ingest_token}"}
    bodies = requests_that_join_across_requests()
    sent = 2 * MESSAGES - 1  # spans: the first request has no consume
    try:
        _banner(process)
        children = psutil.Process(process.pid).children()

        def post(body):
            return httpx.post(url, content=body, headers=headers, timeout=30).status_code

        # Scrapes while the requests come in, each on a connection of its own.
        with ThreadPoolExecutor(8) as pool:
            posts = [pool.submit(post, body) for body in bodies]
            scrapes = []
            while not all(p.done() for p in posts):
                scrapes.append(_accepted_spans(http_port))
            assert [p.result() for p in posts] == [200] * MESSAGES
        scrapes += [_accepted_spans(http_port) for _ in range(20)]
        assert scrapes == sorted(scrapes), scrapes  # never back, whichever process answers
        assert scrapes[-20:] == [sent] * 20
        writers = fetch(
            "SELECT count(DISTINCT application_name) FROM pg_stat_activity "
            f"WHERE datname = current_database() AND application_name LIKE '{WRITER_APPLICATION_NAME} (pid %%)'"
        )
        assert writers == [(2,)]  # both processes stored (and counted) some of it

        # A process that dies and is replaced takes none of the totals with it.
        children[0].send_signal(signal.SIGKILL)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            pids = {child.pid for child in psutil.Process(process.pid).children()}
            if len(pids) == 2 and children[0].pid not in pids:
                break
            time.sleep(0.2)
        else:
            raise AssertionError("the killed collector process was not replaced")
        time.sleep(2)  # the replacement starts serving
        assert [_accepted_spans(http_port) for _ in range(20)] == [sent] * 20
    finally:
        terminate(process)


def _held_connections(child: psutil.Process, port: int) -> int:
    return sum(
        1
        for c in child.net_connections(kind="tcp")
        if c.status == psutil.CONN_ESTABLISHED and c.laddr and c.laddr.port == port
    )


def test_kept_alive_connections_even_out_over_the_processes(telemetry_db, ingest_token):
    # The kernel places each connection by a hash of its addresses: 18 of them
    # land 6, 6 and 6 on three processes in 4 starts out of 100. Exporters keep
    # theirs, so without evening out an uneven start would stay.
    process, http_port = _pool(3)
    headers = {"content-type": "application/x-protobuf", "authorization": f"Bearer {ingest_token}"}
    exporters = [http.client.HTTPConnection("127.0.0.1", http_port, timeout=30) for _ in range(18)]
    try:
        _banner(process)
        children = psutil.Process(process.pid).children()
        held, closed = [], 0
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            for exporter in exporters:
                # Each exporter keeps its connection, and opens a new one (as
                # HTTP clients do) when an answer says it closes.
                exporter.request("POST", "/v1/traces", body=b"", headers=headers)
                answer = exporter.getresponse()
                answer.read()
                assert answer.status == 200
                closed += answer.getheader("connection", "").lower() == "close"
            held = sorted(_held_connections(child, http_port) for child in children)
            if held == [6, 6, 6]:
                break
        assert held == [6, 6, 6], f"held {held} after {closed} connections were let go"
        # Even, they stay: no process lets one go any more.
        for _ in range(5):
            for exporter in exporters:
                exporter.request("POST", "/v1/traces", body=b"", headers=headers)
                answer = exporter.getresponse()
                answer.read()
                assert answer.getheader("connection", "").lower() != "close"
    finally:
        for exporter in exporters:
            exporter.close()
        terminate(process)
