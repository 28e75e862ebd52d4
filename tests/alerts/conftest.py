"""A real HTTP receiver for webhook tests, and a world with alerting data."""

import datetime as dt
import http.server
import json
import socket
import threading
import time
from dataclasses import dataclass, field

import pytest
from django.db import connection

from collector import partitions


@dataclass
class Received:
    path: str
    headers: dict
    body: bytes

    def json(self):
        return json.loads(self.body)


@dataclass
class Reply:
    status: int = 200
    headers: dict = field(default_factory=dict)
    body: bytes = b"ok"
    delay: float = 0.0
    # Send the header section one line every half second for this long first.
    dribble: float = 0.0


class Receiver:
    """A threaded HTTP server on 127.0.0.1:<free port> that records every POST
    and answers from a script of replies (then 200)."""

    def __init__(self):
        self.requests: list[Received] = []
        self.replies: list[Reply] = []
        self.hold = threading.Event()  # set: requests wait on `release`
        self.release = threading.Event()
        self.arrived = threading.Event()
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                receiver.arrived.set()
                if receiver.hold.is_set():
                    receiver.release.wait(30)
                    return  # the connection is dropped without an answer
                reply = receiver.replies.pop(0) if receiver.replies else Reply()
                if reply.dribble:
                    receiver.requests.append(
                        Received(self.path, {k.lower(): v for k, v in self.headers.items()}, body)
                    )
                    self.dribble(reply)
                    return
                if reply.delay:
                    threading.Event().wait(reply.delay)
                receiver.requests.append(
                    Received(self.path, {k.lower(): v for k, v in self.headers.items()}, body)
                )
                try:
                    self.send_response(reply.status)
                    for name, value in reply.headers.items():
                        self.send_header(name, value)
                    self.send_header("Content-Length", str(len(reply.body)))
                    self.end_headers()
                    self.wfile.write(reply.body)
                except (BrokenPipeError, ConnectionResetError):
                    pass

            def dribble(self, reply):
                # Every line comes well within any per-read timeout; only a
                # limit on the whole answer stops this.
                try:
                    self.wfile.write(f"HTTP/1.1 {reply.status} OK\r\n".encode())
                    until = time.monotonic() + reply.dribble
                    n = 0
                    while time.monotonic() < until:
                        self.wfile.write(f"X-Wait-{n}: still here\r\n".encode())
                        self.wfile.flush()
                        n += 1
                        time.sleep(0.5)
                    self.wfile.write(b"Content-Length: 2\r\n\r\nok")
                except (BrokenPipeError, ConnectionResetError):
                    pass

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def script(self, *replies: Reply):
        self.replies.extend(replies)


@pytest.fixture
def receiver(settings):
    settings.WEBHOOK_ALLOW_PRIVATE = True
    server = Receiver()
    server.thread.start()
    yield server
    server.release.set()
    server.server.shutdown()
    server.server.server_close()


@pytest.fixture
def dns(monkeypatch):
    """Names resolved as the test says: the system resolver is the outside
    world. dns["hooks.example.test"] = ["127.0.0.1"], or a function of the name
    (that may be slow or raise); other names resolve as usual."""
    answers = {}
    real = socket.getaddrinfo

    def getaddrinfo(host, port, family=0, type=0, proto=0, flags=0):
        if host not in answers:
            return real(host, port, family, type, proto, flags)
        addresses = answers[host]
        if callable(addresses):
            addresses = addresses(host)
        return [
            (
                socket.AF_INET6 if ":" in a else socket.AF_INET,
                socket.SOCK_STREAM,
                socket.IPPROTO_TCP,
                "",
                (a, port, 0, 0) if ":" in a else (a, port),
            )
            for a in addresses
        ]

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return answers


def insert_stages(project_id: int, rows) -> None:
    """Stage rows (time, stage, service, system, channel, group) straight into
    collector_stage, as the writer would store them."""
    with connection.cursor() as cursor:
        partitions.ensure(cursor, sorted({r[0].date() for r in rows}))
        for n, (time, stage, service, system, channel, group) in enumerate(rows):
            cursor.execute(
                """INSERT INTO collector_stage (project_id, time, dedupe_key, stage, role,
                       system, channel, service, consumer_group, origin, error)
                   VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, 2, %s)""",
                [
                    project_id,
                    time,
                    f"{time.isoformat()}-{n}-{stage}".encode(),
                    stage,
                    "consumer" if group else "producer",
                    system,
                    channel,
                    service,
                    group,
                    "boom" if stage in ("failed", "deadlettered") else None,
                ],
            )


def insert_rollup(
    project_id, minute, source, target, kind, group="", count=0, received=0, errors=0
):
    from collector import histogram

    with connection.cursor() as cursor:
        cursor.execute(
            """INSERT INTO collector_flowrollup (project_id, minute, source, target, kind,
                   consumer_group, count, received, errors, duration_hist, e2e_hist)
               VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)""",
            [
                project_id,
                minute.replace(second=0, microsecond=0),
                source,
                target,
                kind,
                group,
                count,
                received,
                errors,
                histogram.empty(),
                histogram.empty(),
            ],
        )


@pytest.fixture
def t0():
    """A fixed 'now' for evaluations, inside today's partition."""
    return dt.datetime.now(dt.UTC).replace(microsecond=0) - dt.timedelta(hours=2)
