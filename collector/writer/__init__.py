"""The storage writer: a bounded queue in front of batched, deduplicating COPY.

Receivers `await writer.submit(batch)`; the answer comes after the rows are
committed, so a 200 to an exporter means the data is stored. A full queue
raises Saturated (429) at once: full in items, in request bytes (the
receivers reserve them from `writer.admission` from reading a body to its
answer) or in time (more than MAX_QUEUE_SECONDS of work at the measured
drain rate), so what is acknowledged is acknowledged within an exporter's
timeout. While the database is unreachable a batch waits up to
OUTAGE_HOLD_S for it, then StorageUnavailable (503). Memory stays bounded
and nothing is half-stored, because one request's rows always share one
transaction.

`submit` checks and encodes the batch's rows at once, in the receiver's
turn; writing lanes (each a task with its own connection) drain the queue,
each coalescing the waiting batches into a single transaction, so one
group's rows are being loaded while the next group is decoded and another
commits. Each table is loaded with binary COPY straight into the
partitioned table inside a savepoint; OTLP delivery is at-least-once, so when
that hits a row already stored (a retry) the savepoint is rolled back and the
rows go through a temporary staging table and `INSERT ... ON CONFLICT DO
NOTHING RETURNING`, which says which rows are new. Only new rows feed the
flow rollups, so a retried batch is stored once and counted once.

Time bounds: a row older than the retention window (its day would be dropped
at once) or more than a day in the future (a broken clock) is refused rather
than creating a partition that should not exist; `submit` reports refused rows
in its WriteResult, and the rest of the request is stored.

End-to-end latency (publish -> consume) is set on consume stages when the
publish is known: in the same transaction or already stored. A publish that
arrives after its consumers updates them then (`e2e_ms IS NULL` makes each
count once). Lanes, collector processes and collectors load one project's
rows at the same time but take turns, under a PostgreSQL advisory lock, from
their joins to their commit (_Transaction._lock), so a producer and its
consumer, or a CLIENT/SERVER pair, split across two of them are still joined
exactly once.

The package, one concern a module: `rows` (the tables and binary COPY rows),
`items` (a row on its way in, and the encoder: the compiled `binrows` when it
is built, psycopg's formatting of value tuples otherwise), `prepare`
(checking, encoding and deduplicating submitted rows), `lanes` (a
lane's connection), `transaction` (one group's transaction), `joins`
(end-to-end latency: publish and consume stages), `calls` (CLIENT/SERVER
pairs), `recent` (publishes committed lately), `upkeep` (partitions and their
statistics); the queue and the lanes' loop are here.
"""

import asyncio
import collections
import datetime as dt
import logging
import math
import random
import time

import psycopg
from django.conf import settings
from psycopg import errors as pg_errors

from collector import stats
from collector.admission import Admission, DrainRate, configure_memory
from collector.batch import (
    Batch,
    IngestUnavailable,
    Saturated,
    StorageUnavailable,
)
from collector.writer.items import warn_if_not_compiled
from collector.writer.joins import E2E_WINDOW
from collector.writer.lanes import CONNECT_TIMEOUT, WRITER_APPLICATION_NAME, _Lane
from collector.writer.prepare import WriteResult, _collect, _Pending, _prepare, _window
from collector.writer.recent import _RecentPublishes
from collector.writer.rows import (
    ENVELOPES,
    LOGS,
    SPANS,
    STAGES,
    bytea_array,
    configure_copy,
    dump_json,
    envelope_values,
    jsonb,
    log_values,
    span_values,
    stage_values,
    timestamptz,
    to_datetime,
)
from collector.writer.transaction import RECEIVE_TIME_WINDOW_NS, WRITE_LOCK_CLASS, _Transaction
from collector.writer.upkeep import ANALYZE_AFTER_ROWS, ANALYZED_COLUMNS, _PartitionUpkeep

# What `collector.writer` offers, wherever in the package it lives.
__all__ = [
    "ANALYZED_COLUMNS", "ANALYZE_AFTER_ROWS", "CONNECT_TIMEOUT", "DEADLOCK_ATTEMPTS",
    "E2E_WINDOW", "ENVELOPES", "LOGS", "MAX_QUEUE_SECONDS", "OUTAGE_HOLD_S", "OUTAGE_RETRY_S",
    "QUEUE_SECONDS_FLOOR_ITEMS", "RECEIVE_TIME_WINDOW_NS", "RECENT_PUBLISHES", "SPANS", "STAGES",
    "WRITER_APPLICATION_NAME", "WRITE_LOCK_CLASS", "Batch", "IngestUnavailable", "Saturated",
    "StorageUnavailable", "WriteResult", "Writer", "bytea_array", "configure_copy", "dump_json",
    "envelope_values", "jsonb", "log_values", "span_values", "stage_values", "timestamptz",
    "to_datetime", "_RecentPublishes", "_Transaction",
]  # fmt: skip

log = logging.getLogger(__name__)

# Publishes a writer remembers having committed (see _RecentPublishes):
# about 240 bytes each, so some 12 MiB; consumers mostly follow their
# publish within seconds, and older ones are looked up.
RECENT_PUBLISHES = 50_000
# A transaction PostgreSQL cancels to break a deadlock is tried this many times.
DEADLOCK_ATTEMPTS = 3
# Admission bounds the wait as well as memory: a request is refused (429)
# when the queue holds more than this many seconds of work at the rate the
# writer is measured to commit, so what is acknowledged is acknowledged well
# within an exporter's timeout (10 s by default in the OpenTelemetry SDKs),
# and what is refused is refused at once, in time for the exporter to retry.
MAX_QUEUE_SECONDS = 3.0
# Below this many queued items the queue is never too long to wait for.
QUEUE_SECONDS_FLOOR_ITEMS = 1_000
# While the database is unreachable a batch waits this long for it before it
# is refused (503, Retry-After 1 s). An exporter with the SDKs' defaults (a
# 10 s deadline for all its attempts) then gets its answer with time left to
# try again, and a batch whose exporter gave up meanwhile is still stored
# when the database is back within this time: a short outage loses nothing.
OUTAGE_HOLD_S = 8.0
# How often a writing lane tries the database again during an outage.
OUTAGE_RETRY_S = 0.5


# ---- the writer ----------------------------------------------------------------------


class Writer(_PartitionUpkeep):
    """Bounded queue + writing lanes. Use `await start()`, `submit()`, `await stop()`.

    The queue is bounded in items (`max_items`), in request bytes
    (`max_bytes`, kept by `admission`, which the receivers reserve from) and
    in time (`max_wait` seconds of work at the measured drain rate).
    """

    def __init__(
        self,
        conninfo: str | None = None,
        *,
        max_items: int | None = None,
        max_bytes: int | None = None,
        max_wait: float = MAX_QUEUE_SECONDS,
        hold: float = OUTAGE_HOLD_S,
        group_items: int = 20_000,
        linger: float = 0.003,
        lanes: int = 2,
    ):
        if conninfo is None:
            from collector.db import conninfo as django_conninfo

            conninfo = django_conninfo()
        self.conninfo = conninfo
        self.max_items = max_items or settings.QUEUE_MAX_ITEMS
        self.admission = Admission(max_bytes or settings.QUEUE_MAX_BYTES)
        self.max_wait = max_wait
        self.hold = hold
        self.drain = DrainRate()
        # A transaction takes at most about this many items (one batch may exceed it).
        self.group_items = group_items
        # How long to wait for more batches when the queue is nearly empty.
        self.linger = linger
        # Transactions in flight at once, each on a connection of its own.
        self.lanes = max(1, lanes)
        self._queue: collections.deque[_Pending] = collections.deque()
        self._items = 0
        self._batches = 0  # batches submitted and not yet answered (as _items counts items)
        self._batch_items = 0.0  # items per batch, a moving average
        self._last_commit = 0.0  # monotonic time of the last commit
        self._wakeup = asyncio.Event()
        self._tasks: list[asyncio.Task] = []
        self._lanes: list[_Lane] = []
        self._partitions_lock = asyncio.Lock()
        # Clear unless a lane holds a project's write lock (see make_way).
        self._road = asyncio.Event()
        self._road.set()
        self._holders = 0
        self._known_days: set[dt.date] = set()
        self._day_rows: collections.Counter[dt.date] = collections.Counter()
        self.recent = _RecentPublishes(RECENT_PUBLISHES)
        self._background: set[asyncio.Task] = set()
        self._down_since: float | None = None  # when the current outage was noticed
        self._stopping = False

    # -- lifecycle -------------------------------------------------------------------

    async def start(self) -> None:
        """Start the writing lanes (the database may still be down; submits then get 503)."""
        if self._tasks:
            return
        configure_memory()
        warn_if_not_compiled()
        self._stopping = False
        self._lanes = [_Lane(self) for _ in range(self.lanes)]
        self._tasks = [
            asyncio.create_task(self._run(lane), name=f"eventscope-writer-{n}")
            for n, lane in enumerate(self._lanes)
        ]

    async def stop(self) -> None:
        """Refuse new batches, commit everything already queued, close the connections."""
        self._stopping = True
        self._wakeup.set()
        try:
            await asyncio.gather(*self._tasks)
        finally:
            for lane in self._lanes:
                await lane.close()
            self._tasks, self._lanes = [], []
            await asyncio.gather(*self._background, return_exceptions=True)

    async def ready(self) -> bool:
        """True when the database answers SELECT 1."""
        try:
            async with await psycopg.AsyncConnection.connect(
                self.conninfo, connect_timeout=2, autocommit=True
            ) as conn:
                await conn.execute("SELECT 1")
            return True
        except (psycopg.Error, OSError):
            return False

    @property
    def queued_items(self) -> int:
        return self._items

    def queued_seconds(self, items: int = 0) -> float:
        """How long the queue (plus `items` more) takes to write at the measured rate."""
        return self._seconds_for(self._items + items)

    def _expected_seconds(self) -> float:
        """How long a request admitted now would take: the queue, the requests
        being read and decoded ahead of it (they hold reservations and are not
        in the queue yet; the caller's own is one of them), and itself, each
        counted as a batch of the average size."""
        ahead = max(1, self.admission.requests - self._batches)
        return self._seconds_for(self._items + ahead * self._batch_items)

    def _seconds_for(self, queued: float) -> float:
        if queued < QUEUE_SECONDS_FLOOR_ITEMS:
            return 0.0
        rate = self.drain.per_second
        if rate is None:
            # Nothing measured yet (the writer has not had a backlog): a
            # transaction's worth per lane is taken, and writing it measures.
            return math.inf if queued > self.group_items * self.lanes else 0.0
        return queued / rate

    # -- giving way ------------------------------------------------------------------

    async def make_way(self) -> None:
        """Wait while a lane of this writer holds a project's write lock.

        Receivers call it before decoding a request. Decoding one takes the
        event loop for milliseconds, and a lane that holds the lock needs the
        loop for a moment between its last statements: every writer of the
        project, in every collector process, waits for its commit meanwhile.
        """
        if not self._road.is_set():
            await self._road.wait()

    def hold_the_road(self) -> None:
        self._holders += 1
        self._road.clear()

    def clear_the_road(self) -> None:
        self._holders -= 1
        if not self._holders:
            self._road.set()

    # -- submitting ------------------------------------------------------------------

    def admit(self) -> None:
        """Raise what `submit` would raise right now for a full queue.

        Receivers call it before reading and decoding a body, so an overloaded
        collector spends its CPU on the requests it can take.
        """
        if self._stopping or not self._tasks:
            raise StorageUnavailable("the collector is shutting down", retry_after=1)
        if self._items >= self.max_items:
            raise self._full(f"the write queue is full ({self._items} items waiting)")
        seconds = self._expected_seconds()
        if seconds > self.max_wait:
            raise self._full(self._too_long(seconds))
        self.admission.check()

    def _full(self, message: str) -> IngestUnavailable:
        if self._down_since is not None:
            # Nothing drains while the database is away: say so.
            return StorageUnavailable(f"the database is unreachable and {message}", retry_after=1)
        # Refused exporters come back spread over a few seconds rather than
        # all together; at most 3 s leaves an SDK exporter (10 s for all its
        # attempts) four tries.
        return Saturated(message, retry_after=random.randint(1, 3))

    def _too_long(self, seconds: float) -> str:
        if math.isinf(seconds):
            return f"the write queue is full ({self._items} items queued, more on their way)"
        return (
            f"the write queue holds {seconds:.1f} s of work ({self._items} items queued, "
            f"more on their way), more than the {self.max_wait:g} s it may"
        )

    async def submit(self, batch: Batch) -> WriteResult:
        """Queue `batch` and wait until its rows are committed.

        Raises Saturated when the queue is full and StorageUnavailable when the
        database cannot be reached or the write failed; in both cases none of
        the batch's rows are stored.
        """
        if self._stopping or not self._tasks:
            raise StorageUnavailable("the collector is shutting down", retry_after=1)
        size = batch.size
        # A batch larger than the whole bound is still taken when the queue is empty.
        if self._items and self._items + size > self.max_items:
            raise self._full(f"the write queue is full ({self._items} items waiting)")
        # Applied when the queue already holds some work, so that one large
        # batch is still taken by an idle writer.
        seconds = self.queued_seconds(size)
        if self._items >= QUEUE_SECONDS_FLOOR_ITEMS and seconds > self.max_wait:
            raise self._full(self._too_long(seconds))
        # The batch counts against the bound from here: memory stays bounded
        # while it waits for the road.
        self._items += size
        self._batches += 1
        self._batch_items += (size - self._batch_items) / (16 if self._batch_items else 1)
        stats.set_queue_depth(self._items)
        pending = None
        try:
            await self.make_way()
            if self._stopping:
                raise StorageUnavailable("the collector is shutting down", retry_after=1)
            pending = _Pending(batch, asyncio.get_running_loop().create_future())
            # Encoding the rows here, while no transaction waits on it, keeps
            # the transactions (and the time they hold the project's lock) short.
            _prepare(pending, *_window())
        except BaseException:
            self._items -= size
            self._batches -= 1
            stats.set_queue_depth(self._items)
            if pending is not None:
                pending.clear()
            raise
        self._queue.append(pending)
        self._wakeup.set()
        return await pending.future

    # -- the writing lanes -------------------------------------------------------------

    async def _run(self, lane: "_Lane") -> None:
        while True:
            if not self._queue:
                if self._stopping:
                    return
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            if (
                self._items < self.group_items
                and self.linger
                and not self._stopping
                and self.admission.requests > self._batches
            ):
                # Let requests being read and decoded join this transaction:
                # one commit for many. When every request in the process has
                # been submitted (exporters that all wait for their answers),
                # none is coming and waiting would only delay them all.
                await asyncio.sleep(self.linger)
                if not self._queue:
                    continue  # another lane took them
            group, items = [], 0
            while self._queue and (
                not group or items + self._queue[0].batch.size <= self.group_items
            ):
                pending = self._queue.popleft()
                group.append(pending)
                items += pending.batch.size
            if await self._write_group(lane, group):
                # The rate is measured over the time since the previous
                # commit (of any lane) when this group's work was queued
                # before it, so that work waited all along (see DrainRate):
                # a writer that waits for requests measures how fast they
                # come, not how fast it writes. A group of a backlog's size
                # is measured even when it came to an idle writer, from when
                # it was queued: otherwise a large request's own transaction
                # goes unmeasured, and a small group that commits after it,
                # held meanwhile by the decoding of the next large request,
                # measures that stall as the writer's pace (ten items in
                # 0.3 s: a refusal for "500 s of work" behind 20,000 items).
                now = time.monotonic()
                queued_at = group[0].queued_at
                if queued_at < self._last_commit:
                    self.drain.observe(items, now - self._last_commit)
                elif items >= QUEUE_SECONDS_FLOOR_ITEMS:
                    self.drain.observe(items, now - queued_at)
                self._last_commit = now
            for pending in group:
                pending.clear()
            self._items -= items
            self._batches -= len(group)
            # Not kept alive while this lane waits for the next group.
            group = pending = None
            stats.set_queue_depth(self._items)

    async def _write_group(self, lane: "_Lane", group: list[_Pending]) -> bool:
        """Store the group and answer its submitters; True when it was committed
        in one go (the drain rate measures those)."""
        first_try = True
        while True:
            started = time.perf_counter()
            try:
                await self._store(lane, group)
            except (psycopg.OperationalError, psycopg.InterfaceError, OSError) as exc:
                if isinstance(exc, pg_errors.ProgramLimitExceeded):
                    # An "operational" error that is the data's fault (a key too
                    # large for an index): the server is fine.
                    await self._write_refused(lane, group, exc)
                    return False
                await lane.discard()
                # Tried again until the database is back or the batches have
                # waited `hold`: a retried transaction is stored once (the
                # dedupe sees rows a lost commit may have stored after all).
                group = self._outage(group, exc)
                if not group:
                    return False
                first_try = False
                await asyncio.sleep(OUTAGE_RETRY_S)
                continue
            except Exception as exc:
                await self._write_refused(lane, group, exc)
                return False
            break
        if self._down_since is not None:
            log.warning(
                "the database is reachable again after %.1f s",
                time.monotonic() - self._down_since,
            )
            self._down_since = None
        stats.observe_write(time.perf_counter() - started)
        # Refused rows are counted by the receivers, which report them.
        for pending in group:
            if not pending.future.done():
                pending.future.set_result(pending.result)
        return first_try

    def _outage(self, group: list[_Pending], exc: Exception) -> list[_Pending]:
        """After a failed connection: refuse (503) the batches of `group` and of the
        queue that have waited `hold` (all of them when stopping); return the rest
        of `group`, to be tried again."""
        now = time.monotonic()
        if self._down_since is None:
            self._down_since = now
            log.warning("database unreachable; batches wait up to %g s for it: %s", self.hold, exc)
        error = StorageUnavailable("the database is unreachable", retry_after=1)

        def expired(pending: _Pending) -> bool:
            # A batch whose submitter went away is still stored if it can
            # be: its exporter may not know whether it was.
            return self._stopping or now - pending.queued_at >= self.hold

        waiting = [p for p in group if not expired(p)]
        self._fail([p for p in group if expired(p)], error)
        stale = [p for p in self._queue if expired(p)]
        if stale:
            # Queued batches would wait for the same server: answered now,
            # their exporters retry sooner. Their items leave the count here;
            # the group's leave it when its lane is done with it.
            self._queue = collections.deque(p for p in self._queue if not expired(p))
            self._items -= sum(p.batch.size for p in stale)
            self._batches -= len(stale)
            stats.set_queue_depth(self._items)
            self._fail(stale, error)
            for pending in stale:
                pending.clear()
        return waiting

    async def _write_refused(self, lane: "_Lane", group: list[_Pending], exc: Exception) -> None:
        """After a write failed for a reason other than the database being away.

        The transaction is gone, but one request's unexpected row must not
        fail the others, so each is retried alone. A bug must not stop the
        writer either.
        """
        if not isinstance(exc, psycopg.Error):
            await lane.discard()
        if len(group) > 1:
            for pending in group:
                await self._write_group(lane, [pending])
            return
        (pending,) = group
        batch = pending.batch
        if isinstance(exc, pg_errors.DataError | pg_errors.ProgramLimitExceeded):
            # PostgreSQL refuses a value (or a key too large for an index) the
            # receivers did not catch: a permanent problem of this request,
            # refused whole (partial success), never a retryable 503.
            log.warning("a %s batch was refused by PostgreSQL: %s", batch.signal, exc)
            refused = WriteResult()
            # Counted in the sender's unit: spans, log records or events.
            refused.refused = len(batch.spans) + len(batch.logs) + len(batch.envelopes)
            refused.reasons.append(f"the data could not be stored: {_first_line(exc)}")
            if not pending.future.done():
                pending.future.set_result(refused)
            return
        log.exception("write failed for a %s batch", batch.signal)
        # The cause is in the log; the exporter is told no more than that.
        self._fail(group, StorageUnavailable("the write failed", retry_after=5))

    def _fail(self, group, exc) -> None:
        for pending in group:
            if not pending.future.done():
                pending.future.set_exception(exc)

    # -- one transaction -----------------------------------------------------------------

    async def _store(self, lane: "_Lane", group: list[_Pending]) -> None:
        attempt, copy_straight = 1, True
        while True:
            rows = _collect(group)  # counts start afresh on each attempt
            if not rows.any():
                return
            await self._ensure_partitions(rows.days())
            conn = await lane.connection()
            transaction = None
            try:
                async with conn.cursor() as cur:
                    transaction = _Transaction(lane, cur, rows, copy_straight=copy_straight)
                    try:
                        await transaction.run()  # BEGIN ... COMMIT
                    except BaseException:
                        await lane.roll_back()
                        raise
                self._count_day_rows(rows)
                self.recent.merge(*transaction.published)
                return
            except pg_errors.UniqueViolation:
                if not copy_straight:
                    raise
                # Some rows were stored before (an exporter's retry): again,
                # each table deduplicated. Savepoints around each COPY would
                # save redoing the transaction in this rare case, at two
                # round trips a table in every other one.
                copy_straight = False
                continue
            except pg_errors.DeadlockDetected:
                # Two lanes loading the same retried rows in crossed order:
                # PostgreSQL cancelled this one; the other has gone on.
                if attempt == DEADLOCK_ATTEMPTS:
                    raise
                attempt += 1
                log.info("a write was chosen as a deadlock victim; trying again")
            except psycopg.Error as exc:
                if conn.broken:
                    raise psycopg.OperationalError(f"the connection was lost: {exc}") from exc
                raise
            finally:
                if transaction is not None:
                    transaction.release()


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
