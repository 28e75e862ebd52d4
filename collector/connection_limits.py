"""What one process lets its clients hold open: connections, time, file descriptors.

Every listening port of an Eventscope process is bounded the same way:

- a request's headers must arrive within EVENTSCOPE_HTTP_HEADER_TIMEOUT_SECONDS
  of the connection opening (on a kept-alive connection: of the request's
  first byte), so connections that never finish a request do not pile up;
- a kept-alive connection may idle EVENTSCOPE_HTTP_KEEPALIVE_SECONDS;
- at most EVENTSCOPE_MAX_CONNECTIONS connections per port. At the cap a new
  connection displaces the one that has waited longest without a complete
  request (a half-sent request or an idle kept-alive connection); when every
  connection is busy with a request, the new one is answered 503 and closed.
  Either way descriptors stay free and a health probe still gets through.

uvicorn runs HTTP with `HttpProtocol` (collector/runtime.py passes it; under
a plain uvicorn it is `--http collector.connection_limits:HttpProtocol`),
gRPC gets the equivalent server options from `grpc_options()`.
"""

import asyncio
import logging
import resource
import weakref

from django.conf import settings
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from collector import balance

log = logging.getLogger(__name__)

# Descriptors kept free for everything that is not a client connection:
# database connections, the writer, outbound webhooks and broker polls, files.
RESERVED_FILES = 256
# A process listens on at most three ports (web, OTLP/HTTP, OTLP/gRPC); each
# gets an equal share of the descriptors left.
LISTENERS = 3
# asyncio accepts up to `backlog` connections at a time, and a connection is
# counted against the cap a few loop turns after it was accepted: a port may
# briefly hold its cap plus about four such batches (ACCEPT_BATCHES) before
# the surplus is closed. The backlog is therefore at most the cap.
ACCEPT_BATCHES = 4
MAX_BACKLOG = 1024
MIN_CAP = 16

_REFUSED_BODY = b"too many connections; retry soon\n"
REFUSED = (
    b"HTTP/1.1 503 Service Unavailable\r\n"
    b"content-type: text/plain; charset=utf-8\r\n"
    b"retry-after: 1\r\n"
    b"connection: close\r\n"
    b"content-length: %d\r\n\r\n%s" % (len(_REFUSED_BODY), _REFUSED_BODY)
)

_cap_logged = False


def raise_open_file_limit() -> int:
    """Raise this process's soft limit of open files to its hard limit, where the
    system allows; returns the soft limit in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft >= hard:
        return soft
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    except (ValueError, OSError) as exc:  # e.g. a hard limit above what the kernel takes
        log.info("open-file limit stays at %d (hard %d): %s", soft, hard, exc)
        return soft
    return hard


def connection_cap() -> int:
    """Connections one port of this process may hold: EVENTSCOPE_MAX_CONNECTIONS,
    lowered to fit the open-file limit."""
    global _cap_logged
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = settings.MAX_CONNECTIONS
    if soft == resource.RLIM_INFINITY:
        return wanted
    fits = max(MIN_CAP, (soft - RESERVED_FILES) // (LISTENERS * (1 + ACCEPT_BATCHES)))
    if fits < wanted and not _cap_logged:
        _cap_logged = True
        log.warning(
            "open-file limit %d allows %d connections per port, not EVENTSCOPE_MAX_CONNECTIONS=%d",
            soft, fits, wanted,
        )  # fmt: skip
    return min(wanted, fits)


def accept_backlog() -> int:
    """The listen backlog of a port: connections the kernel queues for accepting,
    and the most asyncio accepts at a time."""
    return min(MAX_BACKLOG, connection_cap())


class _Port:
    """What the connections of one listening port share."""

    def __init__(self):
        self.cap = connection_cap()
        # Connections without a request in progress, oldest first: the ones
        # a new connection may displace at the cap (dicts keep order).
        self.waiting: dict[HttpProtocol, None] = {}


_ports: "weakref.WeakKeyDictionary[object, _Port]" = weakref.WeakKeyDictionary()


class HttpProtocol(HttpToolsProtocol):
    """uvicorn's HTTP/1.1 protocol with a header deadline and a connection cap.

    uvicorn times out an idle kept-alive connection, but not one that opens
    and never completes its request headers (its keep-alive timer stops at
    the first byte), and it answers its concurrency limit only once a
    request's headers are in: half-open connections were never bounded.
    """

    def __init__(self, config, server_state, app_state, _loop=None):
        super().__init__(config, server_state, app_state, _loop)
        self.timeout_keep_alive = settings.HTTP_KEEPALIVE_SECONDS
        self._header_timer: asyncio.TimerHandle | None = None
        port = _ports.get(server_state)
        if port is None:
            port = _ports[server_state] = _Port()
        self._port = port

    # -- connection ---------------------------------------------------------

    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        balance.opened()
        if len(self.connections) > self._port.cap and not self._make_room():
            transport.write(REFUSED)
            transport.close()
            return
        self._port.waiting[self] = None
        self._arm_header_timer()

    def _make_room(self) -> bool:
        """Close the connection that has waited longest without a request; False
        when every connection is busy."""
        waiting = self._port.waiting
        if not waiting:
            return False
        oldest = next(iter(waiting))
        del waiting[oldest]
        oldest._cancel_header_timer()
        oldest.transport.close()
        return True

    def connection_lost(self, exc) -> None:
        balance.closed()
        self._port.waiting.pop(self, None)
        self._cancel_header_timer()
        super().connection_lost(exc)

    # -- request headers ----------------------------------------------------

    def on_message_begin(self) -> None:
        # The first byte of a request on a kept-alive connection: its headers
        # are now due (before that, uvicorn's keep-alive timeout applies).
        super().on_message_begin()
        if self._header_timer is None:
            self._arm_header_timer()

    def on_headers_complete(self) -> None:
        self._cancel_header_timer()
        self._port.waiting.pop(self, None)
        super().on_headers_complete()

    def on_response_complete(self) -> None:
        pipelined = bool(self.pipeline)
        super().on_response_complete()
        if not pipelined and not self.transport.is_closing():
            self._port.waiting[self] = None  # idle until the next request

    def _arm_header_timer(self) -> None:
        self._header_timer = self.loop.call_later(
            settings.HTTP_HEADER_TIMEOUT_SECONDS, self._headers_overdue
        )

    def _cancel_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _headers_overdue(self) -> None:
        self._header_timer = None
        if not self.transport.is_closing():
            self.transport.close()


def grpc_options() -> list[tuple[str, int]]:
    """gRPC server options with the same bounds as the HTTP ports."""
    return [
        ("grpc.max_allowed_incoming_connections", connection_cap()),
        # A connection must finish its HTTP/2 preface and settings in time.
        ("grpc.server_handshake_timeout_ms", settings.HTTP_HEADER_TIMEOUT_SECONDS * 1000),
        # Connections without calls are closed (GOAWAY) after the keep-alive time.
        ("grpc.max_connection_idle_ms", settings.HTTP_KEEPALIVE_SECONDS * 1000),
        # Long-lived connections are recycled now and then, so exporters spread
        # over the processes of `collector --processes N` and over replicas.
        ("grpc.max_connection_age_ms", 10 * 60 * 1000),
        ("grpc.max_connection_age_grace_ms", 30 * 1000),
        # Ping quiet clients; one that does not answer within 20 s is gone.
        ("grpc.keepalive_time_ms", 60 * 1000),
        ("grpc.keepalive_timeout_ms", 20 * 1000),
    ]
