"""Ingest admission: how much a collector process takes in before it says 429.

A request costs memory from the moment its body is read until it is
answered: the body, its decompressed bytes, the decoded message, the
normalised rows and their COPY encoding. Counting items alone let 64 small
gzip requests that inflate to 18 MB each take a process to gigabytes, so
the receivers also reserve each request's bytes here (the body as read,
then its size after decompression) and release them with the answer; past
`max_bytes` in flight they answer 429 with Retry-After. A request larger
than the whole budget is still taken when nothing else is in flight.

Decoding a large body runs in a thread so the event loop keeps serving
(health checks, small exports, the writer's transactions), and only a few
of those run at once: each holds the decoded message and its rows, which
are several times the body's size. Small bodies decode on the loop, where
a thread hop would cost more than the work.

After a flood drains, the freed memory is handed back to the system
(`release_memory`): glibc keeps freed heap pages, and every thread that
decoded a body had an arena of its own.
"""

import asyncio
import contextlib
import ctypes
import ctypes.util
import gc
import logging
import threading
import time

from collector import stats
from collector.batch import Saturated

log = logging.getLogger(__name__)

# A request is counted as this many times its decompressed size: what its
# rows and their COPY encoding hold once decoded (14,000 spans of 20
# attributes, 17 MB, held 95 MB; requests of ordinary messaging spans hold
# 12 times their size, but the queue's bound in seconds stops them first).
# The budget then bounds memory rather than wire bytes.
DECODED_WEIGHT = 6
# Past this size a body is decoded in a thread (decoding holds the loop about
# 1 s per 10 MB); a compressed one past COMPRESSED_THREAD_THRESHOLD, as a few
# kilobytes of gzip can inflate to megabytes.
THREAD_THRESHOLD = 256 * 1024
COMPRESSED_THREAD_THRESHOLD = 4 * 1024
# Bodies decoded in threads at once; the others wait their turn, their
# bodies counted in the budget, for at most DECODE_WAIT_S (then 429): turns
# come every few milliseconds with ordinary requests, and bodies that take
# seconds each to decode must not pile up behind each other. Decoding holds
# the GIL, so more threads would not go faster, only hold more decoded
# messages at once.
DECODERS = 2
DECODE_WAIT_S = 1.0
# Memory is given back once the bytes in flight fall to zero after at least
# this many were in flight, and at most once per TRIM_INTERVAL_S.
TRIM_AFTER_BYTES = 32 * 1024 * 1024
TRIM_INTERVAL_S = 2.0


class Admission:
    """The byte budget and the decoding turns of one process (shared by its receivers)."""

    def __init__(self, max_bytes: int, decoders: int = DECODERS):
        self.max_bytes = max_bytes
        self.decoders = decoders
        self._lock = threading.Lock()  # reservations grow from decoding threads
        self._bytes = 0
        self.requests = 0  # live reservations: requests between their start and their answer
        self._peak = 0  # most bytes in flight since memory was last given back
        self._slots = asyncio.Semaphore(decoders)
        self._last_trim = 0.0
        self._trim_pending = False

    @property
    def bytes_in_flight(self) -> int:
        return self._bytes

    def check(self) -> None:
        """Raise Saturated when the budget is spent (before a body is read)."""
        if self._bytes >= self.max_bytes:
            raise Saturated(self._full_message(), retry_after=1)

    def reservation(self) -> "Reservation":
        """An empty reservation for one request, taken when it starts (it
        counts in `requests` from then on): `add()` bytes as they come,
        `release()` them all with the answer. Created and released on the
        event loop."""
        return Reservation(self)

    def _add(self, reservation: "Reservation", size: int) -> None:
        with self._lock:
            others = self._bytes - reservation.size
            if others and self._bytes + size > self.max_bytes:
                raise Saturated(self._full_message(size), retry_after=1)
            self._bytes += size
            self._peak = max(self._peak, self._bytes)
            stats.set_ingest_bytes(self._bytes)
        reservation.size += size

    def _release(self, size: int) -> None:
        with self._lock:
            self._bytes -= size
            stats.set_ingest_bytes(self._bytes)
            drained = self._bytes == 0 and self._peak >= TRIM_AFTER_BYTES
        if drained:
            self._maybe_release_memory()

    def _full_message(self, size: int = 0) -> str:
        extra = f" for another {size} bytes" if size else ""
        return (
            f"the collector is busy: {self._bytes} request bytes in flight, no room{extra} "
            f"within its {self.max_bytes} byte budget"
        )

    async def decode(self, size: int, function, *args, compressed: bool = False):
        """`function(*args)` for a body of `size` bytes: on the loop when it is
        small, else in a thread, `decoders` at a time. Raises Saturated when
        its turn does not come soon or the budget filled up meanwhile."""
        if size <= (COMPRESSED_THREAD_THRESHOLD if compressed else THREAD_THRESHOLD):
            return function(*args)
        try:
            await asyncio.wait_for(self._slots.acquire(), DECODE_WAIT_S)
        except TimeoutError:
            raise Saturated(
                f"the collector is busy: {self.decoders} large requests are being decoded "
                f"and this one waited {DECODE_WAIT_S:g} s for its turn",
                retry_after=1,
            ) from None
        try:
            # Refused before the body is decompressed and decoded.
            self.check()
            return await asyncio.to_thread(function, *args)
        finally:
            self._slots.release()

    def _maybe_release_memory(self) -> None:
        if self._trim_pending:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        # At most once per TRIM_INTERVAL_S, but always after the last drain.
        self._trim_pending = True
        delay = max(0.0, self._last_trim + TRIM_INTERVAL_S - time.monotonic())
        loop.call_later(delay, self._trim, loop)

    def _trim(self, loop) -> None:
        self._trim_pending = False
        with self._lock:
            if self._bytes:
                return  # busy again: the next drain tries
            self._peak = 0
        self._last_trim = time.monotonic()
        loop.run_in_executor(None, release_memory).add_done_callback(_ignore_result)


class DrainRate:
    """Items per second the writer commits while work waits for it.

    Measured from commit to commit (of any lane) when the committed work
    had been queued before the previous commit, so the writer was busy all
    along: that shows what it does when it is the bottleneck, which is when
    the figure matters, with whatever else the process does meanwhile
    (decoding takes the same cores). Older measures fade with a half-life
    of HALF_LIFE_S, and each weighs by its items.
    """

    HALF_LIFE_S = 10.0

    def __init__(self):
        self._items = 0.0
        self._seconds = 0.0
        self._at: float | None = None

    def observe(self, items: int, seconds: float, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        if self._at is not None:
            decay = 0.5 ** ((now - self._at) / self.HALF_LIFE_S)
            self._items *= decay
            self._seconds *= decay
        self._at = now
        self._items += items
        self._seconds += max(seconds, 1e-6)

    @property
    def per_second(self) -> float | None:
        """The measured rate, None before anything was measured."""
        return self._items / self._seconds if self._seconds else None


class Reservation:
    """One request's share of the byte budget; a context manager that releases it."""

    __slots__ = ("admission", "size", "live")

    def __init__(self, admission: Admission):
        self.admission = admission
        self.size = 0
        self.live = True
        admission.requests += 1

    def add(self, size: int) -> None:
        """Reserve `size` more bytes (thread-safe); raises Saturated past the budget."""
        self.admission._add(self, size)

    def release(self) -> None:
        if self.live:
            self.live = False
            self.admission.requests -= 1
        size, self.size = self.size, 0
        if size:
            self.admission._release(size)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.release()


# ---- giving memory back ----------------------------------------------------------------

_libc = None
_configured = False
# glibc's mallopt parameters
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD, _M_ARENA_MAX = -1, -3, -8
MMAP_THRESHOLD = 1024 * 1024


def _glibc():
    global _libc
    if _libc is None:
        try:
            libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
            libc.malloc_trim, libc.mallopt  # noqa: B018 (glibc only)
        except (OSError, AttributeError):
            libc = False
        _libc = libc
    return _libc or None


def configure_memory() -> None:
    """Make freed request memory go back to the system (once per process, glibc only).

    glibc raises its mmap threshold each time a large block is freed, so
    after the first large bodies every later one came from the heap, where
    freed pages stay with the process. A fixed threshold keeps buffers of a
    megabyte and more in mappings of their own, returned on free; two
    arenas instead of eight per core keep the decoding threads from each
    holding a heap of their own.
    """
    global _configured
    libc = _glibc()
    if _configured or libc is None:
        return
    _configured = True
    libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)
    libc.mallopt(_M_ARENA_MAX, 2)


def release_memory() -> None:
    """Hand freed memory back to the system: cyclic garbage first (the
    collector's thresholds are high, see runtime.tune_gc), then the free
    heap pages (glibc's malloc_trim)."""
    started = time.perf_counter()
    gc.collect()
    libc = _glibc()
    if libc is not None:
        libc.malloc_trim(0)
    log.debug("memory released in %.1f ms", (time.perf_counter() - started) * 1000)


def _ignore_result(future) -> None:
    with contextlib.suppress(Exception):
        future.result()
