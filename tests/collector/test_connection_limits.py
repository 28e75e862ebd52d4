"""Connections a client may hold open on the collector's and the web app's ports:
a deadline for request headers, a keep-alive time, and a cap per port."""

import asyncio
import contextlib
import resource
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import psutil
import pytest

from collector import runtime
from tests.test_commands import ROOT, command_env, free_port, wait_http

HALF_A_REQUEST_LINE = b"POST /v1/tra"
HEALTHZ = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"


@contextlib.asynccontextmanager
async def running_server():
    """runtime.run as `serve` runs it (receivers, writer and the web app), on free ports."""
    from dashboard.asgi import web_application

    ports = runtime.Ports(otlp_http=free_port(), otlp_grpc=free_port(), web=free_port())
    stop, started = asyncio.Event(), asyncio.Event()
    server = asyncio.create_task(
        runtime.run(ports, stop, web_app=web_application, on_started=started.set)
    )
    try:
        await asyncio.wait_for(started.wait(), 30)
        yield ports
    finally:
        stop.set()
        await asyncio.wait_for(server, 30)


async def _closed_within(reader, seconds) -> float:
    """Seconds until the server closed the connection; fails after `seconds`."""
    started = time.monotonic()
    try:
        data = await asyncio.wait_for(reader.read(), seconds)
    except TimeoutError:
        raise AssertionError(f"the server kept the connection open for {seconds}s") from None
    except ConnectionResetError:
        data = b""
    assert b"200 OK" not in data
    return time.monotonic() - started


async def _get(reader, writer, request=HEALTHZ) -> bytes:
    writer.write(request)
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
    return head + await asyncio.wait_for(reader.readexactly(length), 5)


@pytest.mark.parametrize("port", ["otlp_http", "web"])
async def test_a_connection_that_never_completes_its_headers_is_closed_in_time(
    telemetry_db, settings, port
):
    settings.HTTP_HEADER_TIMEOUT_SECONDS = 1
    settings.HTTP_KEEPALIVE_SECONDS = 3
    async with running_server() as ports:
        number = getattr(ports, port)
        silent = await asyncio.open_connection("127.0.0.1", number)
        half = await asyncio.open_connection("127.0.0.1", number)
        half[1].write(HALF_A_REQUEST_LINE)
        kept = await asyncio.open_connection("127.0.0.1", number)
        assert b"200 OK" in await _get(*kept)

        assert await _closed_within(silent[0], 4) < 2.5
        assert await _closed_within(half[0], 4) < 2.5
        # A kept-alive connection idles on the keep-alive time, not the header
        # deadline: it still serves a request after the deadline has passed.
        assert b"200 OK" in await _get(*kept)
        for _reader, writer in (silent, half, kept):
            writer.close()


async def test_a_grpc_connection_that_never_sends_its_preface_is_closed_in_time(
    telemetry_db, settings
):
    settings.HTTP_HEADER_TIMEOUT_SECONDS = 1
    async with running_server() as ports:
        silent = await asyncio.open_connection("127.0.0.1", ports.otlp_grpc)
        half = await asyncio.open_connection("127.0.0.1", ports.otlp_grpc)
        half[1].write(b"PRI * HTTP/2.0\r\n")  # half the HTTP/2 preface
        # The server's own SETTINGS frame comes first, then the close.
        assert await _closed_within(silent[0], 4) < 2.5
        assert await _closed_within(half[0], 4) < 2.5
        for _reader, writer in (silent, half):
            writer.close()


async def test_at_the_cap_busy_connections_are_kept_and_a_new_one_is_refused(
    telemetry_db, settings, ingest_token
):
    settings.MAX_CONNECTIONS = 4
    async with running_server() as ports:
        busy = []
        for _ in range(4):
            # Headers in, body still to come: a request in progress.
            reader, writer = await asyncio.open_connection("127.0.0.1", ports.otlp_http)
            writer.write(
                b"POST /v1/traces HTTP/1.1\r\nHost: x\r\ncontent-type: application/x-protobuf\r\n"
                b"authorization: Bearer %s\r\ncontent-length: 100\r\n\r\n0123456789"
                % ingest_token.encode()
            )
            busy.append((reader, writer))
        await asyncio.sleep(0.3)

        reader, writer = await asyncio.open_connection("127.0.0.1", ports.otlp_http)
        refused = await asyncio.wait_for(reader.read(), 5)
        assert refused.startswith(b"HTTP/1.1 503 ")
        assert b"retry-after: 1" in refused and b"too many connections" in refused
        writer.close()
        for _reader, busy_writer in busy:
            assert not busy_writer.is_closing()  # not cut off for the newcomer

        busy[0][1].close()
        await asyncio.sleep(0.3)
        fresh = await asyncio.open_connection("127.0.0.1", ports.otlp_http)
        assert b"200 OK" in await _get(*fresh)
        for _reader, busy_writer in busy + [fresh]:
            busy_writer.close()


def _low_open_file_limit():
    resource.setrlimit(resource.RLIMIT_NOFILE, (512, 512))


def test_more_connections_than_the_cap_leave_healthz_answering(telemetry_db):
    """With 512 descriptors, 600 connections that never complete a request
    would leave none for a health probe (or anything else)."""
    http_port, grpc_port = free_port(), free_port()
    process = subprocess.Popen(
        [sys.executable, "manage.py", "collector",
         "--otlp-http-port", str(http_port), "--otlp-grpc-port", str(grpc_port)],
        cwd=ROOT,
        env=command_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        preexec_fn=_low_open_file_limit,
    )  # fmt: skip
    clients = []
    try:
        wait_http(f"http://127.0.0.1:{http_port}/healthz", process)

        def connect(i: int) -> socket.socket:
            client = socket.create_connection(("127.0.0.1", http_port), timeout=5)
            clients.append(client)
            if i % 2:
                client.sendall(HALF_A_REQUEST_LINE)
            return client

        # Sixty at a time, as a flood comes: one by one, a connect that finds
        # the short backlog full waits out a SYN retransmission alone.
        with ThreadPoolExecutor(60) as pool:
            list(pool.map(connect, range(600)))
        started = time.monotonic()
        answer = httpx.get(f"http://127.0.0.1:{http_port}/healthz", timeout=5)
        assert (answer.status_code, answer.text) == (200, "ok\n")
        assert time.monotonic() - started < 2
        assert psutil.Process(process.pid).num_fds() < 512
    finally:
        for client in clients:
            client.close()
        process.terminate()
        output, _ = process.communicate(timeout=30)
    assert "open-file limit 512 allows 17 connections per port" in output


def test_a_plain_uvicorn_applies_the_limits_with_the_documented_http_option(transactional_db):
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "dashboard.asgi:application", "--port", str(port),
         "--http", "collector.connection_limits:HttpProtocol"],
        cwd=ROOT,
        env=command_env(EVENTSCOPE_HTTP_HEADER_TIMEOUT_SECONDS="1"),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )  # fmt: skip
    try:
        wait_http(f"http://127.0.0.1:{port}/healthz", process)
        with socket.create_connection(("127.0.0.1", port), timeout=4) as client:
            client.sendall(HALF_A_REQUEST_LINE)
            started = time.monotonic()
            assert client.recv(100) == b""
            assert time.monotonic() - started < 2.5
        assert httpx.get(f"http://127.0.0.1:{port}/login/").status_code == 200
    finally:
        process.terminate()
        process.communicate(timeout=30)
