"""Kept-alive OTLP/HTTP connections spread evenly over `collector --processes N`.

The processes share the port with SO_REUSEPORT, and the kernel hands each
new connection to one of them by a hash of its addresses. Exporters keep
their connection for as long as they run, so a few exporters can land
unevenly for good: of 8 connections on 2 processes, one process gets 6 or
more in about 3 starts out of 10, does three times the work of the other and
decides the rate while the other idles (the ingest benchmark on two cores:
0.64 of the raw COPY rate with 7 and 1, 0.80 to 0.84 with an even split).

Each process counts its open connections in a slot of a small file the
pool's parent makes (`Pool.run`), and reads the others'. A process holding
more than its even share (the total divided by the processes, rounded up)
answers one request with `Connection: close`; that exporter reconnects, as
HTTP clients do, and the kernel places the new connection afresh. One
connection goes at a time, at most every SHED_INTERVAL_S per process, so
the counts settle instead of swinging. gRPC exporters are spread by the
connection age limit of the gRPC server instead
(collector.connection_limits.grpc_options).
"""

import mmap
import os
import struct
import time

FILE_ENV = "EVENTSCOPE_CONNECTION_COUNTS"  # the slots file of the pool
INDEX_ENV = "EVENTSCOPE_PROCESS_INDEX"  # this process's slot in it
SLOT = struct.Struct("q")
# A process lets one connection go, then waits this long before the next:
# time for the exporter to reconnect and the counts to show where it went.
SHED_INTERVAL_S = 0.1


def make_slots(path: str, processes: int) -> None:
    """The parent: a zeroed slot per process."""
    with open(path, "wb") as f:
        f.write(bytes(SLOT.size * processes))


class Connections:
    """This process's connection count, and the decision to let one go."""

    def __init__(self, path: str, index: int):
        with open(path, "r+b") as f:
            self._map = mmap.mmap(f.fileno(), 0)
        self._slots = memoryview(self._map).cast("q")
        self.index = index
        self.open = 0
        self._quiet_until = 0.0
        self._publish()  # a restarted process starts from none

    def opened(self) -> None:
        self.open += 1
        self._publish()

    def closed(self) -> None:
        self.open -= 1
        self._publish()

    def _publish(self) -> None:
        # An aligned 8-byte store: the others never read half of it.
        self._slots[self.index] = self.open

    def counts(self) -> list[int]:
        return list(self._slots)

    def over_share(self) -> bool:
        """True (at most once per SHED_INTERVAL_S) when this process holds more
        connections than its even share: the caller then closes one."""
        now = time.monotonic()
        if now < self._quiet_until:
            return False
        counts = self.counts()
        share = -(-sum(counts) // len(counts))
        if self.open > share:
            self._quiet_until = now + SHED_INTERVAL_S
            return True
        return False


_connections: Connections | None = None


def configure() -> Connections | None:
    """In a pool's process: count its connections in the slot the parent named."""
    global _connections
    path, index = os.environ.get(FILE_ENV), os.environ.get(INDEX_ENV)
    if path and index is not None:
        _connections = Connections(path, int(index))
    return _connections


def opened() -> None:
    if _connections is not None:
        _connections.opened()


def closed() -> None:
    if _connections is not None:
        _connections.closed()


def let_one_go() -> bool:
    """Whether the answer being sent should close its connection (`Connection: close`)."""
    return _connections is not None and _connections.over_share()
