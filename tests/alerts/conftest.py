"""A real HTTP receiver for webhook tests, and a world with alerting data."""

import datetime as dt
import http.server
import json
import threading
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
