"""Process composition: receivers, writer, web app and background loops in one asyncio loop.

`manage.py collector` runs the receivers and the writer; `manage.py serve`
adds the web app, the background loops and optionally the demo; `manage.py
worker` runs the loops alone. All of them stop cleanly on SIGTERM/SIGINT in
the same order: stop accepting requests, let requests in flight finish (they
wait on the writer), drain the writer, stop the loops.

Background loops run on one leader per database: the process holding a
session-level PostgreSQL advisory lock on a dedicated connection. When the
leader dies its session ends, the lock is released, and a waiting process
takes over within a few seconds.
"""

import asyncio
import contextlib
import gc
import importlib
import logging
import signal
import socket
from dataclasses import dataclass, field

import psycopg
import uvicorn
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from collector import balance, connection_limits
from collector.db import conninfo as django_conninfo
from collector.tls import TLSFiles, uvicorn_options
from collector.writer import Writer

log = logging.getLogger(__name__)

# Session advisory lock held by the worker leader; the number is arbitrary but fixed.
LEADER_LOCK_KEY = 0x45530002
LEADER_POLL_SECONDS = 2.0
TASK_RESTART_SECONDS = 5.0


class _Server(uvicorn.Server):
    """uvicorn without its own signal handling: the process owns SIGTERM/SIGINT."""

    @contextlib.contextmanager
    def capture_signals(self):
        yield


def tune_gc() -> None:
    """Make the cyclic garbage collector cheap for an ingest process.

    Ingest allocates millions of short-lived rows and almost no cycles; with
    the default thresholds the collector keeps re-walking every queued row
    and took a third of the CPU. Objects alive after start-up are frozen out
    of collections altogether.
    """
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)


def install_stop_signals(stop: asyncio.Event) -> None:
    """Set `stop` on SIGTERM and SIGINT."""
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)


def listen_socket(host: str, port: int, reuse_port: bool = False) -> socket.socket:
    """A listening TCP socket; with `reuse_port`, several processes share the port
    and the kernel spreads new connections over them."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
        sock.listen(2048)
    except OSError:
        sock.close()
        raise
    return sock


async def start_asgi(
    app,
    host: str,
    port: int,
    name: str,
    reuse_port: bool = False,
    tls: TLSFiles | None = None,
    client_auth: bool = False,
) -> tuple[_Server, asyncio.Task]:
    """Serve `app` with uvicorn on host:port; returns once it listens.

    With `tls`, over TLS from those files (re-read when they change);
    `client_auth` asks clients for certificates as the files say (ingest).
    Connections are bounded by collector.connection_limits: a deadline for
    request headers, a keep-alive time and a cap per port."""
    sock = listen_socket(host, port, reuse_port)
    options = {
        "http": connection_limits.HttpProtocol,
        **uvicorn_options(tls, client_auth, connection_limits.HttpProtocol),
    }
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        timeout_keep_alive=settings.HTTP_KEEPALIVE_SECONDS,
        backlog=connection_limits.accept_backlog(),
        lifespan="off",
        log_level="warning",
        access_log=False,
        timeout_graceful_shutdown=15,
        **options,
    )
    server = _Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]), name=name)
    while not server.started:
        if task.done():
            task.result()  # raises the bind error
            raise OSError(f"{name} could not start on {host}:{port}")
        await asyncio.sleep(0.02)
    log.info("%s listening on %s://%s:%s", name, "https" if tls else "http", host, port)
    return server, task


async def stop_asgi(server: _Server, task: asyncio.Task) -> None:
    server.should_exit = True
    await task


def with_health(app, writer: Writer):
    """`app` with GET /healthz (process up) and /readyz (database reachable) answered
    in front of it, so the web port of `serve` has them however the app routes."""

    async def health(scope, receive, send):
        if scope["type"] == "http" and scope["path"] in ("/healthz", "/readyz"):
            status, body = 200, b"ok\n"
            if scope["path"] == "/readyz" and not await writer.ready():
                status, body = 503, b"database unreachable\n"
            headers = [(b"content-type", b"text/plain"), (b"content-length", b"%d" % len(body))]
            await send({"type": "http.response.start", "status": status, "headers": headers})
            await send({"type": "http.response.body", "body": body})
            return
        await app(scope, receive, send)

    return health


# ---- background loops on the leader ------------------------------------------------


def load_tasks(tasks: dict[str, str]) -> dict[str, object]:
    """Import each "module:function".

    A configured task whose module or function does not exist stops the
    start with ImproperlyConfigured naming both: a background loop that
    silently never runs (alerts never evaluated, data never expired) is worse
    than a process that refuses to start. Any other import error is raised
    as it is.
    """
    loaded = {}
    for name, spec in tasks.items():
        module_name, _, function = spec.partition(":")
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name and (module_name == exc.name or module_name.startswith(exc.name + ".")):
                raise ImproperlyConfigured(
                    f"background task {name!r}: module {module_name} does not exist"
                ) from exc
            raise
        try:
            loaded[name] = getattr(module, function)
        except AttributeError:
            raise ImproperlyConfigured(
                f"background task {name!r}: module {module_name} has no {function!r}"
            ) from None
    return loaded


async def _keep_running(name: str, run, stop: asyncio.Event) -> None:
    """Run one loop until `stop`; a crash is logged and the loop restarted."""
    while not stop.is_set():
        try:
            await run(stop)
            return
        except Exception:
            log.exception(
                "background task %s crashed; restarting in %ss", name, TASK_RESTART_SECONDS
            )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), TASK_RESTART_SECONDS)


async def _wait(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)


@dataclass
class Leadership:
    """What the leader loop is doing, for logs and tests."""

    leading: bool = False
    terms: int = 0
    running: list[str] = field(default_factory=list)


async def lead(
    tasks: dict[str, object],
    stop: asyncio.Event,
    conninfo: str | None = None,
    state: Leadership | None = None,
    poll: float = LEADER_POLL_SECONDS,
) -> None:
    """Run `tasks` (name -> async run(stop)) while holding the leader lock, until `stop`."""
    conninfo = conninfo or django_conninfo()
    state = state or Leadership()
    waiting_logged = False
    while not stop.is_set():
        try:
            conn = await psycopg.AsyncConnection.connect(
                conninfo, autocommit=True, connect_timeout=5
            )
        except psycopg.Error as exc:
            log.warning("worker cannot reach the database: %s", exc)
            await _wait(stop, poll)
            continue
        async with conn:
            cur = await conn.execute("SELECT pg_try_advisory_lock(%s)", (LEADER_LOCK_KEY,))
            if not (await cur.fetchone())[0]:
                if not waiting_logged:
                    log.info("another worker leads; waiting to take over")
                    waiting_logged = True
                await _wait(stop, poll)
                continue
            waiting_logged = False
            state.leading, state.terms = True, state.terms + 1
            log.info("this worker leads: running %s", ", ".join(tasks) or "no tasks")
            try:
                await _run_while_holding(conn, tasks, stop, state, poll)
            finally:
                state.leading = False


async def _run_while_holding(conn, tasks, stop, state: Leadership, poll: float) -> None:
    term_stop = asyncio.Event()
    running = [
        asyncio.create_task(_keep_running(name, run, term_stop), name=f"task-{name}")
        for name, run in tasks.items()
    ]
    state.running = list(tasks)
    try:
        # The lock lives as long as this session: check it is alive, so a
        # leader cut off from the database stops instead of running twice.
        while not stop.is_set():
            await _wait(stop, poll)
            try:
                await conn.execute("SELECT 1")
            except psycopg.Error as exc:
                log.warning("worker lost its database session, stepping down: %s", exc)
                return
    finally:
        term_stop.set()
        await asyncio.gather(*running, return_exceptions=True)
        state.running = []


# ---- the collector (and the all-in-one server) --------------------------------------


@dataclass
class Ports:
    host: str = "127.0.0.1"
    otlp_http: int = 4318
    otlp_grpc: int = 4317
    web: int | None = None
    # Set in each process of `collector --processes N`: the OTLP/HTTP port is
    # shared (SO_REUSEPORT), as gRPC's is by default.
    reuse_port: bool = False


async def run(
    ports: Ports,
    stop: asyncio.Event,
    *,
    web_app=None,
    tasks: dict[str, object] | None = None,
    on_started=None,
) -> None:
    """Run the receivers and the writer (plus the web app and the leader loops when
    given) until `stop` is set, then shut down in order without losing acknowledged data."""
    from collector.normalize import wire
    from collector.receivers.otlp_grpc import start_grpc_server
    from collector.receivers.otlp_http import make_app

    tune_gc()
    wire.warn_if_missing()
    connection_limits.raise_open_file_limit()
    # A process of a `collector --processes N` pool writes on one lane: the
    # pool's processes already keep N transactions going, and two lanes in
    # each made them contend (on two cores, 33,000 against 37,000 spans/s).
    writer = Writer(lanes=1 if ports.reuse_port else 2)
    if ports.reuse_port:
        balance.configure()
    tls = TLSFiles.from_settings()
    await writer.start()
    started = []
    grpc_server = None
    leader = None
    try:
        started.append(
            await start_asgi(
                make_app(writer),
                ports.host,
                ports.otlp_http,
                "OTLP/HTTP receiver",
                reuse_port=ports.reuse_port,
                tls=tls,
                client_auth=True,
            )  # fmt: skip
        )
        grpc_server = await start_grpc_server(writer, ports.host, ports.otlp_grpc, tls=tls)
        if web_app is not None:
            web = with_health(web_app, writer)
            started.append(await start_asgi(web, ports.host, ports.web, "web app", tls=tls))
        if tasks is not None:
            leader = asyncio.create_task(lead(tasks, stop), name="leader")
        if on_started is not None:
            on_started()
        await stop.wait()
    finally:
        log.info("shutting down: finishing requests in flight, then draining the writer")
        # Receivers first: requests in flight still wait on the writer, which runs.
        for server, _task in started:
            server.should_exit = True
        if grpc_server is not None:
            await grpc_server.stop(grace=10)
        for server, task in started:
            await stop_asgi(server, task)
        await writer.stop()
        if leader is not None:
            stop.set()
            await leader
        log.info("stopped")
