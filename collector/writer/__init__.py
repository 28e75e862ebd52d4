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
"""

import asyncio
import collections
import datetime as dt
import json
import logging
import math
import operator
import os
import random
import struct
import time
from dataclasses import dataclass, field

import orjson
import psycopg
from django.conf import settings
from psycopg import errors as pg_errors
from psycopg.types.string import BytesBinaryDumper

from collector import notify, partitions, rollups, stats
from collector.admission import Admission, DrainRate, configure_memory
from collector.batch import (
    CONSUMER,
    KIND_CLIENT,
    KIND_SERVER,
    ORIGIN_CLOUDEVENT,
    PRODUCER,
    STATUS_ERROR,
    Batch,
    IngestUnavailable,
    Saturated,
    StorageUnavailable,
)

log = logging.getLogger(__name__)

_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_DAY_NS = 86_400 * 10**9
# CloudEvents without a `time` are stamped on receipt; a retry then carries a
# different time, so such rows are deduplicated by key within this window.
RECEIVE_TIME_WINDOW_NS = _DAY_NS
# How far apart a publish and its consume stage may be looked for.
E2E_WINDOW = dt.timedelta(days=1)
_E2E_WINDOW_NS = int(E2E_WINDOW.total_seconds()) * 10**9
CONNECT_TIMEOUT = 5
WRITER_APPLICATION_NAME = "eventscope writer"
# pg_advisory_xact_lock(WRITE_LOCK_CLASS, project id) orders writers of a project.
WRITE_LOCK_CLASS = 0x45530003
# A day partition gets its first planner statistics from the writer once
# this many of its rows have landed, unless it has some already: autovacuum
# comes to a fresh partition only after a minute or more, and until then the
# planner can take the primary key for the stage lookups and read the whole
# day once per key. Statistics from the first rows keep that choice right as
# the day grows (the keys are unique, the time range covers the day).
ANALYZE_AFTER_ROWS = 1_000
ANALYZED_COLUMNS = {
    "collector_span": (
        "project_id", "trace_id", "span_id", "parent_span_id", "start_time", "kind", "service",
    ),
    "collector_stage": (
        "project_id", "time", "dedupe_key", "trace_id", "span_id", "role", "stage", "event_id",
        "e2e_ms",
    ),
}  # fmt: skip
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


def to_datetime(time_ns: int) -> dt.datetime:
    return _EPOCH + dt.timedelta(microseconds=time_ns // 1000)


@dataclass
class WriteResult:
    """What became of one submitted batch."""

    stored: int = 0  # rows newly stored (spans, stages, envelopes, logs)
    duplicates: int = 0  # rows already stored by an earlier delivery
    refused: int = 0  # items refused (time outside the accepted window)
    reasons: list[str] = field(default_factory=list)

    def refuse(self, reason: str) -> None:
        self.refused += 1
        if reason not in self.reasons:
            self.reasons.append(reason)

    def copy(self) -> "WriteResult":
        return WriteResult(self.stored, self.duplicates, self.refused, list(self.reasons))


_ENCODED_TYPES = frozenset(("jsonb", "timestamptz", "bytea[]"))


@dataclass
class _Table:
    name: str
    columns: tuple[str, ...]
    types: tuple[str, ...]
    key: tuple[str, ...]  # columns that identify a row (RETURNING on the staging path)

    @property
    def column_list(self) -> str:
        return ", ".join(self.columns)

    @property
    def copy_types(self) -> tuple[str, ...]:
        """Column types as COPY is told them: values encoded in the row tuple
        (see "row encoding") go through as bytes."""
        return tuple("bytea" if t in _ENCODED_TYPES else t for t in self.types)


SPANS = _Table(
    "collector_span",
    (
        "project_id", "trace_id", "span_id", "parent_span_id", "start_time", "duration_ns",
        "service", "name", "kind", "status_code", "status_message", "attributes", "resource",
        "events", "links", "scope",
    ),
    (
        "int4", "bytea", "bytea", "bytea", "timestamptz", "int8", "text", "text", "int2",
        "int2", "text", "jsonb", "jsonb", "jsonb", "jsonb", "text",
    ),
    ("project_id", "trace_id", "span_id", "start_time"),
)  # fmt: skip
STAGES = _Table(
    "collector_stage",
    (
        "project_id", "time", "dedupe_key", "stage", "role", "system", "channel", "service",
        "consumer_group", "trace_id", "span_id", "parent_span_id", "linked_trace_ids",
        "linked_span_ids", "event_id", "event_source", "event_type", "error", "duration_ms",
        "e2e_ms", "origin",
    ),
    (
        "int4", "timestamptz", "bytea", "text", "text", "text", "text", "text", "text",
        "bytea", "bytea", "bytea", "bytea[]", "bytea[]", "text", "text", "text", "text",
        "float8", "float8", "int2",
    ),
    ("project_id", "dedupe_key", "time"),
)  # fmt: skip
ENVELOPES = _Table(
    "collector_envelope",
    (
        "project_id", "time", "source", "event_id", "type", "subject", "datacontenttype",
        "dataschema", "extensions", "data", "data_text", "data_base64", "data_size",
        "truncated", "trace_id",
    ),
    (
        "int4", "timestamptz", "text", "text", "text", "text", "text", "text", "jsonb",
        "jsonb", "text", "bool", "int4", "bool", "bytea",
    ),
    ("project_id", "source", "event_id", "time"),
)  # fmt: skip
_E2E_AT = STAGES.columns.index("e2e_ms")
LOGS = _Table(
    "collector_log",
    (
        "project_id", "time", "dedupe_key", "service", "severity_number", "severity_text",
        "body", "trace_id", "span_id", "attributes",
    ),
    ("int4", "timestamptz", "bytea", "text", "int2", "text", "text", "bytea", "bytea", "jsonb"),
    ("project_id", "dedupe_key", "time"),
)  # fmt: skip


class _Pending:
    """A submitted batch, its rows prepared, and the future its submitter awaits."""

    __slots__ = (
        "batch", "future", "result", "prepared", "spans", "stages", "envelopes", "logs",
        "hints", "receive_timed", "days", "queued_at",
    )  # fmt: skip

    def __init__(self, batch: Batch, future: asyncio.Future):
        self.batch = batch
        self.future = future
        self.queued_at = time.monotonic()
        # What preparing found (refused and repeated rows); each attempt to
        # store the batch starts from it.
        self.prepared = WriteResult()
        self.result = self.prepared
        self.spans: list[_Item] = []
        self.stages: list[_Item] = []
        self.envelopes: list[_Item] = []
        self.logs: list[_Item] = []
        self.hints: set = set()  # span ids and dedupe keys (see _collect)
        # (project, source, event_id, time_ns) of envelopes stamped on receipt
        self.receive_timed: set[tuple] = set()
        self.days: set[int] = set()  # days (since the epoch) the rows fall on

    def clear(self) -> None:
        """Let go of the prepared rows once answered: they refer back to this
        object, and only a full garbage collection (rare here) would free them."""
        self.spans = self.stages = self.envelopes = self.logs = []
        self.hints = set()


class _Item:
    """One row on its way in: the source object, its pending request and its tuple."""

    __slots__ = ("row", "pending", "key", "time_ns", "values")

    def __init__(self, row, pending, key, time_ns, values):
        self.row = row
        self.pending = pending
        self.key = key  # a stage's or log record's dedupe key
        self.time_ns = time_ns
        self.values = values  # the COPY row (a stage's with e2e_ms NULL; see _Transaction)


# ---- row encoding ------------------------------------------------------------------
# A row is a tuple in its table's column order. jsonb, timestamptz and
# bytea[] values are encoded here, once, into PostgreSQL's binary forms and
# travel as plain bytes (_Table.copy_types): psycopg's compiled formatter then
# writes whole rows without calling back into Python for a single value.

_PG_EPOCH_US = 946_684_800 * 10**6  # 2000-01-01 in Unix microseconds
_pack_int8 = struct.Struct("!q").pack
_pack_int4 = struct.Struct("!i").pack
_array_header = struct.Struct("!iiIii").pack
_BYTEA_OID = psycopg.postgres.types["bytea"].oid
_JSONB_VERSION = b"\x01"


def dump_json(value) -> bytes:
    """`value` as JSON text for a jsonb column.

    orjson is several times faster than the json module on the small dicts
    that every span carries; the json module takes what orjson refuses
    (integers beyond 64 bits in a CloudEvents payload).
    """
    try:
        return orjson.dumps(value)
    except TypeError:
        return json.dumps(value, ensure_ascii=False).encode()


def jsonb(value) -> bytes | None:
    """Binary jsonb (version 1 + JSON text); None stays NULL."""
    return None if value is None else _JSONB_VERSION + dump_json(value)


def timestamptz(time_ns: int) -> bytes:
    """Binary timestamptz (microseconds since 2000-01-01) from Unix nanoseconds."""
    return _pack_int8(time_ns // 1000 - _PG_EPOCH_US)


def bytea_array(values: list[bytes]) -> bytes | None:
    """Binary bytea[] of a flat list of bytes (linked trace and span ids); [] is NULL."""
    if not values:
        return None
    # ndim 1, no NULLs, element type bytea, length, lower bound 1
    parts = [_array_header(1, 0, _BYTEA_OID, len(values), 1)]
    for value in values:
        parts.append(_pack_int4(len(value)))
        parts.append(value)
    return b"".join(parts)


def configure_copy(conn) -> None:
    """Prepare `conn` for COPY of these rows: bytea by oid would otherwise be the
    DB-API Binary wrapper's dumper, in Python; registering the bytes dumper
    again gets the compiled one."""
    conn.adapters.register_dumper(None, BytesBinaryDumper)


def span_values(s, resources: dict | None = None) -> tuple:
    """A span's COPY row. `resources` memoises the resource's encoding by object:
    every span of one resource shares the same dict."""
    resource = s.resource or None
    if resource is not None and resources is not None:
        encoded = resources.get(id(resource))
        if encoded is None:
            encoded = resources[id(resource)] = jsonb(resource)
        resource = encoded
    else:
        resource = jsonb(resource)
    return (
        s.project_id, s.trace_id, s.span_id, s.parent_span_id, timestamptz(s.start_time_ns),
        s.duration_ns, s.service, s.name, s.kind, s.status_code, s.status_message,
        jsonb(s.attributes) if s.attributes else None, resource,
        jsonb(s.events) if s.events else None, jsonb(s.links) if s.links else None, s.scope,
    )  # fmt: skip


def stage_values(s, key: bytes, e2e_ms) -> tuple:
    linked = s.linked
    return (
        s.project_id, timestamptz(s.time_ns), key, s.stage, s.role, s.system, s.channel,
        s.service, s.consumer_group, s.trace_id, s.span_id, s.parent_span_id,
        bytea_array([pair[0] for pair in linked]) if linked else None,
        bytea_array([pair[1] for pair in linked]) if linked else None,
        s.event_id, s.event_source, s.event_type, s.error, s.duration_ms, e2e_ms, s.origin,
    )  # fmt: skip


def envelope_values(e) -> tuple:
    return (
        e.project_id, timestamptz(e.time_ns), e.source, e.event_id, e.type, e.subject,
        e.datacontenttype, e.dataschema, jsonb(e.extensions or None), jsonb(e.data),
        e.data_text, e.data_base64, e.data_size, e.truncated, e.trace_id,
    )  # fmt: skip


def log_values(r, key: bytes) -> tuple:
    return (
        r.project_id, timestamptz(r.time_ns), key, r.service, r.severity_number,
        r.severity_text, r.body, r.trace_id, r.span_id, jsonb(r.attributes or None),
    )  # fmt: skip


# ---- the writer ----------------------------------------------------------------------


class Writer:
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
            if self._items < self.group_items and self.linger and not self._stopping:
                # Let concurrent requests join this transaction: one commit for many.
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
                # come, not how fast it writes.
                now = time.monotonic()
                if group[0].queued_at < self._last_commit:
                    self.drain.observe(items, now - self._last_commit)
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
        for attempt in range(1, DEADLOCK_ATTEMPTS + 1):
            rows = _collect(group)  # counts start afresh on each attempt
            if not rows.any():
                return
            await self._ensure_partitions(rows.days())
            conn = await lane.connection()
            transaction = None
            try:
                async with conn.transaction(), conn.cursor() as cur:
                    transaction = _Transaction(lane, cur, rows)
                    await transaction.run()
                self._count_day_rows(rows)
                self.recent.add(item.row for item in rows.stages)
                return
            except pg_errors.DeadlockDetected:
                # Two lanes loading the same retried rows in crossed order:
                # PostgreSQL cancelled this one; the other has gone on.
                if attempt == DEADLOCK_ATTEMPTS:
                    raise
                log.info("a write was chosen as a deadlock victim; trying again")
            except psycopg.Error as exc:
                if conn.broken:
                    raise psycopg.OperationalError(f"the connection was lost: {exc}") from exc
                raise
            finally:
                if transaction is not None:
                    transaction.release()

    async def _ensure_partitions(self, days: set[dt.date]) -> None:
        if not days - self._known_days:
            return
        async with self._partitions_lock:
            missing = days - self._known_days
            if missing:
                # The DDL commits on its own short connection, so the data
                # transaction never holds the partition lock.
                await asyncio.to_thread(self._create_partitions, sorted(missing))
                self._known_days |= missing

    def _count_day_rows(self, rows: "_Rows") -> None:
        """Analyse a day's partitions when enough rows have landed in them (ANALYZE_AFTER_ROWS)."""
        count = len(rows.spans) + len(rows.stages)
        for day in rows.days():
            before = self._day_rows[day]
            self._day_rows[day] = before + count
            if before < ANALYZE_AFTER_ROWS <= before + count:
                task = asyncio.create_task(asyncio.to_thread(self._analyze, day))
                self._background.add(task)
                task.add_done_callback(self._background.discard)
        while len(self._day_rows) > 4:  # days long past need no more counting
            del self._day_rows[min(self._day_rows)]

    def _analyze(self, day: dt.date) -> None:
        # The columns the writer's and the dashboard's lookups filter on, from
        # a small sample: whole rows (jsonb above all) would take seconds.
        targets = ", ".join(
            f'"{partitions.partition_name(table, day)}" ({", ".join(columns)})'
            for table, columns in ANALYZED_COLUMNS.items()
        )
        try:
            with psycopg.connect(
                self.conninfo, connect_timeout=CONNECT_TIMEOUT, autocommit=True
            ) as conn:
                analysed = conn.execute(
                    "SELECT EXISTS (SELECT FROM pg_stats WHERE tablename = %s "
                    "AND attname = 'trace_id')",
                    (partitions.partition_name(STAGES.name, day),),
                ).fetchone()[0]
                if not analysed:  # by another collector process, or autovacuum
                    conn.execute("SET default_statistics_target = 20")
                    conn.execute(f"ANALYZE {targets}")
        except (psycopg.Error, OSError) as exc:
            log.warning("could not analyse the partitions of %s: %s", day, exc)

    def _create_partitions(self, days) -> None:
        with psycopg.connect(self.conninfo, connect_timeout=CONNECT_TIMEOUT) as conn:
            with conn.cursor() as cur:
                partitions.ensure(cur, days)


class _RecentPublishes:
    """The publishes this writer committed lately, by (project, trace id, span
    id) and, for CloudEvents, (project, source, event id), with their time.

    A consumer whose every publish is here gets its end-to-end latency
    without a lookup: only committed publishes are added, so this answers
    what the lookup would. The oldest are forgotten past `limit`.
    """

    def __init__(self, limit: int):
        self.limit = limit
        self.contexts: dict[tuple, int] = {}
        self.events: dict[tuple, int] = {}

    def add(self, stages) -> None:
        contexts, events = self.contexts, self.events
        for s in stages:
            if s.role == PRODUCER and s.stage == "published":
                _index_publish(contexts, events, s)
        for index in (contexts, events):
            for _ in range(len(index) - self.limit):
                del index[next(iter(index))]

    def publish_time(self, stage) -> int | None:
        """The earliest publish of the messages a consume stage handles, if all are here."""
        times = []
        for trace_id, span_id in stage.linked:
            known = self.contexts.get((stage.project_id, trace_id, span_id))
            if known is None:
                return None
            times.append(known)
        if stage.origin == ORIGIN_CLOUDEVENT and stage.event_id:
            known = self.events.get((stage.project_id, stage.event_source, stage.event_id))
            if known is None:
                return None
            times.append(known)
        if not times or abs(stage.time_ns - min(times)) > _E2E_WINDOW_NS:
            return None  # the lookup would not look that far either
        return min(times)


class _Lane:
    """One writing lane: its connection and that connection's staging tables."""

    def __init__(self, writer: Writer):
        self.writer = writer
        self.conninfo = writer.conninfo
        self._conn: psycopg.AsyncConnection | None = None
        self._staging_ready: set[str] = set()

    async def connection(self) -> psycopg.AsyncConnection:
        if self._conn is None or self._conn.closed:
            self._conn = await psycopg.AsyncConnection.connect(
                self.conninfo,
                connect_timeout=CONNECT_TIMEOUT,
                # Operators find the writers in pg_stat_activity by this name,
                # and which collector process each belongs to.
                application_name=f"{WRITER_APPLICATION_NAME} (pid {os.getpid()})",
                # A hung server must not hold acknowledgements forever.
                options="-c statement_timeout=60000",
            )
            configure_copy(self._conn)
            self._staging_ready.clear()
        return self._conn

    async def discard(self) -> None:
        conn, self._conn = self._conn, None
        self._staging_ready.clear()
        if conn is not None:
            try:
                await conn.close()
            except Exception:  # the connection is already broken; nothing to save
                log.debug("closing a broken connection failed", exc_info=True)

    async def close(self) -> None:
        if self._conn is not None:
            await self._conn.close()
            self._conn = None

    async def staging_table(self, cur, table: _Table) -> str:
        name = f"es_staging_{table.name}"
        if name not in self._staging_ready:
            # Temporary and per connection: no WAL, no contention between collectors.
            await cur.execute(
                f"CREATE TEMP TABLE IF NOT EXISTS {name} (LIKE {table.name}) ON COMMIT DELETE ROWS"
            )
            self._staging_ready.add(name)
        return name


# ---- preparing rows ---------------------------------------------------------------------


class _Rows:
    """The group's rows, each once."""

    def __init__(self, group: list[_Pending]):
        self.pendings = group
        self.spans: list[_Item] = []
        self.stages: list[_Item] = []
        self.envelopes: list[_Item] = []
        self.logs: list[_Item] = []
        self.receive_timed: set[tuple] = set()
        self.day_numbers: set[int] = set()

    def any(self) -> bool:
        return bool(self.spans or self.stages or self.envelopes or self.logs)

    def projects(self) -> set[int]:
        return {pending.batch.project_id for pending in self.pendings}

    def days(self) -> set[dt.date]:
        return {to_datetime(day * _DAY_NS).date() for day in self.day_numbers}


def _window() -> tuple[int, int]:
    """(oldest, newest) accepted times in ns: the retention window and one day ahead."""
    today = dt.datetime.now(dt.UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    oldest = today - dt.timedelta(days=settings.RETENTION_DAYS)
    oldest_ns = int((oldest - _EPOCH).total_seconds()) * 10**9
    return oldest_ns, time.time_ns() + _DAY_NS


def _prepare(pending: _Pending, oldest_ns: int, newest_ns: int) -> None:
    """Check and encode one batch's rows: refuse those outside the time window,
    drop those repeated within the batch, build each COPY row."""
    batch = pending.batch
    result = pending.prepared
    hints = pending.hints
    days = pending.days
    seen: set[tuple] = set()  # exact identities, for the rows checked one by one

    def accept(kind: str, time_ns: int, ident: tuple) -> bool:
        if time_ns < oldest_ns:
            result.refuse(
                f"{kind} time is older than the {settings.RETENTION_DAYS}-day retention window"
            )
            return False
        if time_ns > newest_ns:
            result.refuse(f"{kind} time is more than a day in the future")
            return False
        if ident in seen:
            result.duplicates += 1
            return False
        seen.add(ident)
        days.add(time_ns // _DAY_NS)
        return True

    def all_fit(times: list[int], unique: set, count: int) -> bool:
        # The common case: nothing to refuse and nothing repeated, so the rows
        # are not checked one by one.
        first, last = min(times), max(times)
        if len(unique) != count or first < oldest_ns or last > newest_ns:
            return False
        days.update(range(first // _DAY_NS, last // _DAY_NS + 1))
        hints.update(unique)
        return True

    resources: dict[int, bytes] = {}
    if spans := batch.spans:
        starts = [span.start_time_ns for span in spans]
        if all_fit(starts, {span.span_id for span in spans}, len(spans)):
            pending.spans = [
                _Item(span, pending, None, start, span_values(span, resources))
                for span, start in zip(spans, starts, strict=True)
            ]
        else:
            for span, start in zip(spans, starts, strict=True):
                if accept("span", start, _ident(SPANS, span, None, start)):
                    pending.spans.append(
                        _Item(span, pending, None, start, span_values(span, resources))
                    )
                    hints.add(span.span_id)
    for env in batch.envelopes:
        if accept("event", env.time_ns, _ident(ENVELOPES, env, None, env.time_ns)):
            pending.envelopes.append(_Item(env, pending, None, env.time_ns, envelope_values(env)))
            hints.add((env.source, env.event_id))
            if not env.time_from_event:
                pending.receive_timed.add((env.project_id, env.source, env.event_id, env.time_ns))
    if stages := batch.stages:
        keys = [stage.dedupe_key() for stage in stages]
        times = [stage.time_ns for stage in stages]
        if all_fit(times, set(keys), len(stages)):
            pending.stages = [
                _Item(stage, pending, key, time_ns, stage_values(stage, key, None))
                for stage, key, time_ns in zip(stages, keys, times, strict=True)
            ]
        else:
            for stage, key, time_ns in zip(stages, keys, times, strict=True):
                if not oldest_ns <= time_ns <= newest_ns:
                    continue  # its span or envelope was refused (and counted) already
                if accept("stage", time_ns, _ident(STAGES, stage, key, time_ns)):
                    pending.stages.append(
                        _Item(stage, pending, key, time_ns, stage_values(stage, key, None))
                    )
                    hints.add(key)
    for record in batch.logs:
        key = record.dedupe_key()
        if accept("log record", record.time_ns, _ident(LOGS, record, key, record.time_ns)):
            pending.logs.append(
                _Item(record, pending, key, record.time_ns, log_values(record, key))
            )
            hints.add(key)


def _ident(table: _Table, row, key: bytes | None, time_ns: int) -> tuple:
    """What tells a row from every other of its table: its primary key."""
    if table is SPANS:
        return (row.project_id, row.trace_id, row.span_id, time_ns)
    if table is ENVELOPES:
        return ("env", row.project_id, row.source, row.event_id)
    if table is LOGS and not row.time_from_record:
        return (table.name, row.project_id, key, None)  # stamped on receipt
    return (table.name, row.project_id, key, time_ns)


def _collect(group: list[_Pending]) -> _Rows:
    """The group's prepared rows, without the ones another batch of the group
    carries too (a retry sent while the first delivery still waited).

    Each batch brings a set of hints (span ids, dedupe keys): batches whose
    hints do not meet are taken whole; where they meet, the rows are told
    apart by their full identity.
    """
    rows = _Rows(group)
    taken = (
        (SPANS, rows.spans),
        (STAGES, rows.stages),
        (ENVELOPES, rows.envelopes),
        (LOGS, rows.logs),
    )
    hints: set = set()
    exact: set[tuple] | None = None
    for pending in group:
        pending.result = pending.prepared.copy()
        rows.day_numbers |= pending.days
        rows.receive_timed |= pending.receive_timed
        prepared = (pending.spans, pending.stages, pending.envelopes, pending.logs)
        tables = [
            (table, items, ours) for (table, ours), items in zip(taken, prepared, strict=True)
        ]
        if hints.isdisjoint(pending.hints):
            if exact is not None:
                exact.update(
                    _ident(t, i.row, i.key, i.time_ns) for t, mine, _ in tables for i in mine
                )
            for _, mine, ours in tables:
                ours += mine
        else:
            if exact is None:
                exact = {
                    _ident(table, item.row, item.key, item.time_ns)
                    for table, items in taken
                    for item in items
                }
            for table, mine, ours in tables:
                for item in mine:
                    ident = _ident(table, item.row, item.key, item.time_ns)
                    if ident in exact:
                        pending.result.duplicates += 1
                    else:
                        exact.add(ident)
                        ours.append(item)
        hints |= pending.hints
    return rows


class _Transaction:
    """Everything written for one group, inside one transaction."""

    def __init__(self, lane: _Lane, cur, rows: _Rows):
        self.lane = lane
        self.holding = False  # the project's write lock
        self.cur = cur
        self.rows = rows
        self.rollups = rollups.Rollups()
        self.failures = rollups.FailureRollups()
        self.areas: dict[int, set[str]] = collections.defaultdict(set)

    async def run(self) -> None:
        rows = self.rows
        # Every lookup below is a point lookup by key, so an index scan in a
        # nested loop is always the right plan. A day partition created minutes
        # ago has no statistics yet, and the planner would otherwise scan it
        # whole (or its BRIN time range, once per key in LATERAL-less joins),
        # getting slower as the day fills up.
        await self.cur.execute(
            "SELECT set_config('enable_seqscan', 'off', true), "
            "set_config('enable_hashjoin', 'off', true), "
            "set_config('enable_mergejoin', 'off', true)"
        )
        # CloudEvents keep one envelope per event, and rows stamped on receipt
        # are known by key alone: whether such a row is stored already must be
        # asked, and the answer acted on, under the lock.
        timeless = [item for item in rows.logs if not item.row.time_from_record]
        lock_first = bool(rows.envelopes or rows.receive_timed or timeless)
        if lock_first:
            await self._lock()
            if rows.envelopes or rows.receive_timed:
                await self._drop_stored_events()
            if timeless:
                await self._drop_stored_logs(timeless)
        e2e, unsettled = await self._e2e_for_consumers()

        new_spans = await self._insert(SPANS, rows.spans)
        for item in rows.stages:
            # Set from this transaction's join (a failed earlier attempt may have set another).
            latency = e2e.get(id(item.row))
            values = item.values
            if latency != values[_E2E_AT]:
                item.values = (*values[:_E2E_AT], latency, *values[_E2E_AT + 1 :])
        new_stages = await self._insert(STAGES, rows.stages)
        await self._insert(ENVELOPES, rows.envelopes)
        await self._insert(LOGS, rows.logs)

        # Counted before the lock is taken: what follows holds it.
        for item in new_stages:
            stage = item.row
            self.rollups.add_stage(stage)
            self.areas[stage.project_id].add(notify.STAGES)
            if stage.stage in rollups.ERRORS:
                self.failures.add_stage(stage)
                self.areas[stage.project_id].add(notify.FAILURES)
        self._count_e2e([item.row for item in new_stages], e2e)
        if not lock_first:
            await self._lock()
            if unsettled:
                # A publish committed by another lane or process since the
                # lookup above, while this transaction loaded its rows.
                keys = {id(item.row): item.key for item in new_stages}
                unsettled = [s for s in unsettled if id(s) in keys]
                self._count_e2e(unsettled, await self._published_meanwhile(unsettled, keys))
        await self._late_producers([i.row for i in new_stages if i.row.role == PRODUCER])
        await self._calls(new_spans)

        for project_id in self.rollups.projects():
            self.areas[project_id].add(notify.FLOW)
        await rollups.upsert(self.cur, self.rollups)
        await rollups.upsert_failures(self.cur, self.failures)
        # notify.send's query, for every hint at once; delivered at commit.
        await self.cur.execute(
            "SELECT pg_notify(%s, hint) FROM unnest(%s::text[]) AS hint",
            (
                notify.CHANNEL,
                [
                    notify.payload(project_id, area)
                    for project_id in sorted(self.areas)
                    for area in sorted(self.areas[project_id])
                ],
            ),
        )

    def _count_e2e(self, stages: list, e2e: dict[int, float]) -> None:
        for stage in stages:
            latency = e2e.get(id(stage))
            if latency is not None and stage.stage in rollups.OUTCOMES:
                edge = self.rollups.edge_of(stage, CONSUMER)
                if edge is not None:
                    self.rollups.add_e2e(edge, stage.time_ns, latency)

    async def _lock(self) -> None:
        """Take the write lock of the group's projects, held until commit.

        Writers of one project (lanes, collector processes, collectors) load
        their rows at the same time but take turns from their joins to their
        commit, in one order (no deadlock). A transaction that takes the lock
        sees every row committed before, and none of the rows of the ones
        still waiting for it: of a producer and its consumer (or a CLIENT and
        its SERVER) stored by two writers at the same instant, the one that
        takes the lock second finds the other, and the pair is joined exactly
        once.
        """
        await self.cur.execute(
            "SELECT pg_advisory_xact_lock(%s, p) FROM unnest(%s::int[]) AS p ORDER BY p",
            (WRITE_LOCK_CLASS, sorted(self.rows.projects())),
        )
        # Every other writer of the project waits from now until this commits.
        self.lane.writer.hold_the_road()
        self.holding = True

    def release(self) -> None:
        if self.holding:
            self.holding = False
            self.lane.writer.clear_the_road()

    # -- inserting -------------------------------------------------------------------

    async def _insert(self, table: _Table, items: list[_Item]) -> list[_Item]:
        """Store `items`; returns the ones that were not stored before."""
        if not items:
            return []
        try:
            # Fast path: nothing is a retry, so COPY straight into the table.
            async with self.cur.connection.transaction():
                await self._copy(table.name, table, items)
            new = items
        except pg_errors.UniqueViolation:
            new = await self._insert_new_only(table, items)
        if new is items:
            # Counted per request rather than per row: most of a group's rows
            # belong to a handful of requests.
            counts = collections.Counter(map(_pending_of, items))
            for pending, count in counts.items():
                pending.result.stored += count
            return new
        new_ids = {id(item) for item in new}
        for item in items:
            if id(item) in new_ids:
                item.pending.result.stored += 1
            else:
                item.pending.result.duplicates += 1
        return new

    async def _copy(self, target: str, table: _Table, items: list[_Item]) -> None:
        async with self.cur.copy(
            f"COPY {target} ({table.column_list}) FROM STDIN (FORMAT BINARY)"
        ) as copy:
            copy.set_types(table.copy_types)
            # The formatter fills a buffer and hands it over when full; calling
            # it directly spares an awaited coroutine per row.
            formatter = copy.formatter
            for item in items:
                if data := formatter.write_row(item.values):
                    await copy.write(data)

    async def _insert_new_only(self, table: _Table, items: list[_Item]) -> list[_Item]:
        staging = await self.lane.staging_table(self.cur, table)
        await self._copy(staging, table, items)
        key = ", ".join(table.key)
        await self.cur.execute(
            f"INSERT INTO {table.name} ({table.column_list}) "
            f"SELECT {table.column_list} FROM {staging} "
            f"ON CONFLICT DO NOTHING RETURNING {key}"
        )
        inserted = {tuple(_comparable(v) for v in row) for row in await self.cur.fetchall()}
        await self.cur.execute(f"TRUNCATE {staging}")
        # A key is its table's leading identity columns and the row's time
        # (encoded in the row, so taken from the item), to the microsecond.
        positions = [table.columns.index(column) for column in table.key[:-1]]
        return [
            item
            for item in items
            if (*(item.values[p] for p in positions), item.time_ns // 1000) in inserted
        ]

    # -- CloudEvents: one envelope per event ---------------------------------------------

    async def _drop_stored_events(self) -> None:
        """Drop envelopes of events already stored within a day, and stages of
        CloudEvents stamped on receipt that were stored already.

        An event reported at several stages (published, received, processed...)
        carries its envelope each time; the first one stored is the event's.
        A retried CloudEvent without a `time` has a new receive time, so its
        stage is matched by key within the window instead of by primary key.
        """
        rows = self.rows
        envs = rows.envelopes
        stages = [
            i
            for i in rows.stages
            if i.row.origin == ORIGIN_CLOUDEVENT
            and (i.row.project_id, i.row.event_source, i.row.event_id, i.row.time_ns)
            in rows.receive_timed
        ]
        lo, hi = _bounds([i.time_ns for i in envs + stages], RECEIVE_TIME_WINDOW_NS)
        if envs:
            await self.cur.execute(
                "SELECT k.p, k.s, k.i FROM unnest(%b::int[], %b::text[], %b::text[]) AS k(p, s, i) "
                "WHERE EXISTS (SELECT FROM collector_envelope e WHERE e.project_id = k.p "
                "AND e.source = k.s AND e.event_id = k.i AND e.time BETWEEN %s AND %s)",
                (
                    [i.row.project_id for i in envs],
                    [i.row.source for i in envs],
                    [i.row.event_id for i in envs],
                    lo,
                    hi,
                ),
            )
            stored = {tuple(r) for r in await self.cur.fetchall()}
            keep = []
            for item in envs:
                env = item.row
                if (env.project_id, env.source, env.event_id) in stored:
                    item.pending.result.duplicates += 1
                else:
                    keep.append(item)
            rows.envelopes = keep
        if stages:
            rows.stages = await self._without_stored_keys(STAGES, rows.stages, stages)

    async def _drop_stored_logs(self, timeless: list[_Item]) -> None:
        """Drop log records stamped on receipt whose key is stored within a day
        (a retry of a record that has no time of its own)."""
        self.rows.logs = await self._without_stored_keys(LOGS, self.rows.logs, timeless)

    async def _without_stored_keys(self, table: _Table, items: list[_Item], candidates):
        """`items` less the `candidates` whose (project, dedupe key) `table`
        holds within RECEIVE_TIME_WINDOW_NS of their time; those count as duplicates."""
        lo, hi = _bounds([i.time_ns for i in candidates], RECEIVE_TIME_WINDOW_NS)
        await self.cur.execute(
            "SELECT k.p, k.d FROM unnest(%b::int[], %b::bytea[]) AS k(p, d) "
            f"WHERE EXISTS (SELECT FROM {table.name} t WHERE t.project_id = k.p "
            f"AND t.dedupe_key = k.d AND t.{table.columns[1]} BETWEEN %s AND %s)",
            ([i.row.project_id for i in candidates], [i.key for i in candidates], lo, hi),
        )
        stored = {(p, bytes(d)) for p, d in await self.cur.fetchall()}
        ids = {id(i) for i in candidates}
        keep = []
        for item in items:
            if id(item) in ids and (item.row.project_id, item.key) in stored:
                item.pending.result.duplicates += 1
            else:
                keep.append(item)
        return keep

    # -- end-to-end latency -------------------------------------------------------------------

    async def _e2e_for_consumers(self) -> tuple[dict[int, float], list]:
        """e2e_ms per consume stage (by id) whose publish is in this group or
        committed, and the consume stages whose publish is not known yet."""
        by_context: dict[tuple, int] = {}
        by_event: dict[tuple, int] = {}
        consumers = []
        for item in self.rows.stages:
            s = item.row
            if s.role == PRODUCER and s.stage == "published":
                _index_publish(by_context, by_event, s)
            elif s.role == CONSUMER and (
                s.linked or (s.origin == ORIGIN_CLOUDEVENT and s.event_id)
            ):
                consumers.append(s)
        if not consumers:
            return {}, []

        # Consumers whose publish is in this group, or was committed by this
        # writer lately, are settled without a query.
        out, missing = {}, []
        recent = self.lane.writer.recent
        for s in consumers:
            published = _publish_time(s, by_context, by_event)
            if published is None:
                published = recent.publish_time(s)
            if published is not None:
                out[id(s)] = max(0.0, (s.time_ns - published) / 1e6)
            else:
                missing.append(s)
        if missing:
            out.update(await self._stored_publishes(missing))
        return out, [s for s in missing if id(s) not in out]

    async def _stored_publishes(self, consumers: list) -> dict[int, float]:
        """e2e_ms per consume stage (by id) whose publish is committed."""
        by_context: dict[tuple, int] = {}
        by_event: dict[tuple, int] = {}
        contexts, events = set(), set()
        for s in consumers:
            for trace_id, span_id in s.linked:
                contexts.add((s.project_id, trace_id, span_id))
            if s.origin == ORIGIN_CLOUDEVENT and s.event_id:
                events.add((s.project_id, s.event_source, s.event_id))
        lo, hi = _bounds([s.time_ns for s in consumers], _E2E_WINDOW_NS)
        if contexts:
            keys = sorted(contexts)
            await self.cur.execute(
                "SELECT k.p, k.t, k.sp, x.time "
                "FROM unnest(%b::int[], %b::bytea[], %b::bytea[]) AS k(p, t, sp) "
                "CROSS JOIN LATERAL (SELECT min(s.time) AS time FROM collector_stage s "
                "WHERE s.project_id = k.p AND s.trace_id = k.t AND s.span_id = k.sp "
                "AND s.stage = 'published' AND s.role = 'producer' "
                "AND s.time BETWEEN %s AND %s) AS x WHERE x.time IS NOT NULL",
                ([k[0] for k in keys], [k[1] for k in keys], [k[2] for k in keys], lo, hi),
            )
            for project_id, trace_id, span_id, when in await self.cur.fetchall():
                _keep_earliest(by_context, (project_id, bytes(trace_id), bytes(span_id)), _ns(when))
        if events:
            keys = sorted(events, key=lambda k: (k[0], k[1] or "", k[2]))
            await self.cur.execute(
                "SELECT k.p, k.src, k.i, x.time "
                "FROM unnest(%b::int[], %b::text[], %b::text[]) AS k(p, src, i) "
                "CROSS JOIN LATERAL (SELECT min(s.time) AS time FROM collector_stage s "
                "WHERE s.project_id = k.p AND s.event_id = k.i AND s.event_source = k.src "
                "AND s.stage = 'published' AND s.role = 'producer' "
                "AND s.time BETWEEN %s AND %s) AS x WHERE x.time IS NOT NULL",
                ([k[0] for k in keys], [k[1] for k in keys], [k[2] for k in keys], lo, hi),
            )
            for project_id, source, event_id, when in await self.cur.fetchall():
                _keep_earliest(by_event, (project_id, source, event_id), _ns(when))
        out = {}
        for s in consumers:
            published = _publish_time(s, by_context, by_event)
            if published is not None:
                out[id(s)] = max(0.0, (s.time_ns - published) / 1e6)
        return out

    async def _published_meanwhile(self, consumers: list, keys: dict) -> dict[int, float]:
        """e2e_ms of this group's consume stages whose publish was committed after
        the first lookup; their rows (dedupe key by stage id in `keys`), loaded
        without it, get it too."""
        if not consumers:
            return {}
        found = await self._stored_publishes(consumers)
        if found:
            updates = {
                (s.project_id, keys[id(s)], to_datetime(s.time_ns)): found[id(s)]
                for s in consumers
                if id(s) in found
            }
            await self._set_e2e(updates)
        return found

    async def _late_producers(self, publishes) -> None:
        """Give stored consume stages their e2e latency when their publish arrives late.

        Candidates are the consume stages of the publishes' traces (a consumer
        that continues the message's context, as the OpenTelemetry messaging
        instrumentations do) and, for CloudEvents, of the same source and id.
        A batch receive that only links to a producer in another trace gets
        its latency only when the producer was stored first: probing the GIN
        index of links with thousands of keys costs seconds per transaction.
        Consumers are looked for within E2E_WINDOW of the publishes, as
        publishes are from the consumer side: the probe then reads two or three
        day partitions instead of every one kept (nine with a week's
        retention). `e2e_ms IS NULL` in the UPDATE makes each consume stage
        count once.
        """
        publishes = [p for p in publishes if p.stage == "published"]
        contexts = {}
        events = {}
        for p in publishes:
            _index_publish(contexts, events, p)
        if not contexts and not events:
            return
        lo, hi = _bounds([p.time_ns for p in publishes], _E2E_WINDOW_NS)
        candidates = []
        if contexts:
            traces = sorted({(key[0], key[1]) for key in contexts})
            await self.cur.execute(
                "SELECT c.project_id, c.dedupe_key, c.time, c.linked_trace_ids, "
                "c.linked_span_ids, c.event_source, c.event_id, c.origin "
                "FROM unnest(%b::int[], %b::bytea[]) AS k(p, t) CROSS JOIN LATERAL "
                "(SELECT * FROM collector_stage c WHERE c.project_id = k.p AND c.trace_id = k.t "
                "AND c.role = 'consumer' AND c.e2e_ms IS NULL AND c.time BETWEEN %s AND %s "
                "OFFSET 0) AS c",
                ([t[0] for t in traces], [t[1] for t in traces], lo, hi),
            )
            candidates += await self.cur.fetchall()
        if events:
            await self.cur.execute(
                "SELECT project_id, dedupe_key, time, linked_trace_ids, linked_span_ids, "
                "event_source, event_id, origin FROM collector_stage "
                "WHERE project_id = ANY(%b::int[]) AND event_id = ANY(%b::text[]) "
                "AND role = 'consumer' AND e2e_ms IS NULL AND time BETWEEN %s AND %s",
                (sorted({key[0] for key in events}), sorted({key[2] for key in events}), lo, hi),
            )
            candidates += await self.cur.fetchall()
        updates = {}
        for project_id, key, when, traces, spans, source, event_id, origin in candidates:
            times = [
                contexts.get((project_id, bytes(t), bytes(s)))
                for t, s in zip(traces or (), spans or (), strict=False)
            ]
            if origin == ORIGIN_CLOUDEVENT:
                times.append(events.get((project_id, source, event_id)))
            times = [t for t in times if t is not None]
            if times:
                consumed_ns = _ns(when)
                updates[(project_id, bytes(key), when)] = max(0.0, (consumed_ns - min(times)) / 1e6)
        if not updates:
            return
        for (
            project_id,
            when,
            stage,
            service,
            system,
            channel,
            group,
            e2e_ms,
        ) in await self._set_e2e(updates):
            if stage not in rollups.OUTCOMES:
                continue
            edge = rollups.stage_edge(project_id, CONSUMER, service, system, channel, group)
            if edge is not None:
                self.rollups.add_e2e(edge, _ns(when), e2e_ms)

    async def _set_e2e(self, updates: dict[tuple, float]) -> list[tuple]:
        """Set e2e_ms on the stages keyed (project, dedupe key, time) that have
        none yet; returns the rows it set."""
        keys = sorted(updates, key=lambda k: (k[0], k[1], k[2]))
        await self.cur.execute(
            "UPDATE collector_stage c SET e2e_ms = k.e2e "
            "FROM unnest(%b::int[], %b::bytea[], %b::timestamptz[], %b::float8[]) "
            "AS k(p, d, t, e2e) "
            "WHERE c.project_id = k.p AND c.dedupe_key = k.d AND c.time = k.t "
            "AND c.e2e_ms IS NULL "
            "RETURNING c.project_id, c.time, c.stage, c.service, c.system, c.channel, "
            "c.consumer_group, c.e2e_ms",
            (
                [k[0] for k in keys],
                [k[1] for k in keys],
                [k[2] for k in keys],
                [updates[k] for k in keys],
            ),
        )
        return await self.cur.fetchall()

    # -- call edges ------------------------------------------------------------------------

    async def _calls(self, new_spans: list[_Item]) -> None:
        """Count each CLIENT->SERVER pair between two services once, when its second span lands.

        A new SERVER span is paired with its CLIENT parent wherever that is:
        in this group, or stored before. A new CLIENT span is paired only with
        SERVER children stored before and not in this group, so a pair that
        arrives together is counted from the server side alone. Pairs found
        inside the group cost no query, which is the common case when the
        writer coalesces the exports of both services.
        """
        servers = [s.row for s in new_spans if s.row.kind == KIND_SERVER and s.row.parent_span_id]
        clients = [s.row for s in new_spans if s.row.kind == KIND_CLIENT]
        if not servers and not clients:
            return
        in_group = {
            (item.row.project_id, item.row.trace_id, item.row.span_id): item.row
            for item in self.rows.spans
            if item.row.kind == KIND_CLIENT
        }
        # Clients whose server child is new here are counted from the server side.
        children = {(s.project_id, s.trace_id, s.parent_span_id) for s in servers}

        lookup = []
        for server in servers:
            client = in_group.get((server.project_id, server.trace_id, server.parent_span_id))
            if client is None:
                lookup.append(server)
            else:
                self._add_call(client, server.service, server.status_code)
        clients = [c for c in clients if (c.project_id, c.trace_id, c.span_id) not in children]
        lo, hi = _bounds([s.start_time_ns for s in lookup + clients] or [0], _DAY_NS)
        if lookup:
            await self.cur.execute(
                "SELECT k.i, c.service, c.start_time, c.duration_ns, c.status_code "
                "FROM unnest(%b::int[], %b::bytea[], %b::bytea[]) WITH ORDINALITY AS k(p, t, sp, i) "
                "JOIN collector_span c ON c.project_id = k.p AND c.trace_id = k.t "
                "AND c.span_id = k.sp AND c.kind = %s WHERE c.start_time BETWEEN %s AND %s",
                (
                    [s.project_id for s in lookup],
                    [s.trace_id for s in lookup],
                    [s.parent_span_id for s in lookup],
                    KIND_CLIENT,
                    lo,
                    hi,
                ),
            )
            seen = set()
            for index, client, start, duration_ns, status in await self.cur.fetchall():
                if index in seen:
                    continue
                seen.add(index)
                server = lookup[index - 1]
                if client != server.service:
                    self.rollups.add_call(
                        server.project_id, client, server.service, _ns(start),
                        duration_ns / 1e6,
                        STATUS_ERROR in (status, server.status_code),
                    )  # fmt: skip
        if clients:
            new_keys = {(s.row.project_id, s.row.trace_id, s.row.span_id) for s in new_spans}
            await self.cur.execute(
                "SELECT k.i, s.trace_id, s.span_id, s.service, s.status_code "
                "FROM unnest(%b::int[], %b::bytea[], %b::bytea[]) WITH ORDINALITY AS k(p, t, sp, i) "
                "JOIN collector_span s ON s.project_id = k.p AND s.trace_id = k.t "
                "AND s.parent_span_id = k.sp AND s.kind = %s WHERE s.start_time BETWEEN %s AND %s",
                (
                    [s.project_id for s in clients],
                    [s.trace_id for s in clients],
                    [s.span_id for s in clients],
                    KIND_SERVER,
                    lo,
                    hi,
                ),
            )
            for index, trace_id, span_id, server, status in await self.cur.fetchall():
                client = clients[index - 1]
                if (client.project_id, bytes(trace_id), bytes(span_id)) in new_keys:
                    continue  # a new server span: counted above
                self._add_call(client, server, status)

    def _add_call(self, client, server_service: str, server_status: int) -> None:
        if client.service != server_service:
            self.rollups.add_call(
                client.project_id, client.service, server_service, client.start_time_ns,
                client.duration_ns / 1e6,
                STATUS_ERROR in (client.status_code, server_status),
            )  # fmt: skip


# ---- small pieces --------------------------------------------------------------------------


_pending_of = operator.attrgetter("pending")


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _keep_earliest(index: dict, key: tuple, time_ns: int) -> None:
    known = index.get(key)
    if known is None or time_ns < known:
        index[key] = time_ns


def _index_publish(by_context: dict, by_event: dict, stage) -> None:
    """Index a publish stage by its context and, for CloudEvents, by source
    and id, keeping the earliest time of each."""
    if stage.trace_id and stage.span_id:
        _keep_earliest(by_context, (stage.project_id, stage.trace_id, stage.span_id), stage.time_ns)
    if stage.origin == ORIGIN_CLOUDEVENT and stage.event_id:
        key = (stage.project_id, stage.event_source, stage.event_id)
        _keep_earliest(by_event, key, stage.time_ns)


def _publish_time(stage, by_context, by_event) -> int | None:
    """The earliest known publish time of the message(s) a consume stage handles."""
    best = None
    project_id = stage.project_id
    for trace_id, span_id in stage.linked:
        known = by_context.get((project_id, trace_id, span_id))
        if known is not None and (best is None or known < best):
            best = known
    if stage.origin == ORIGIN_CLOUDEVENT and stage.event_id:
        known = by_event.get((project_id, stage.event_source, stage.event_id))
        if known is not None and (best is None or known < best):
            best = known
    return best


def _ns(value: dt.datetime) -> int:
    delta = value - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 10**9 + delta.microseconds * 1000


def _bounds(times_ns, margin_ns) -> tuple[dt.datetime, dt.datetime]:
    """A time range around `times_ns`; it lets PostgreSQL skip the other daily partitions."""
    margin = int(margin_ns)
    return to_datetime(min(times_ns) - margin), to_datetime(max(times_ns) + margin)


def _comparable(value):
    # RETURNING gives datetimes and bytes for bytea; a time is compared in
    # microseconds, as stored (the items keep nanoseconds).
    if isinstance(value, dt.datetime):
        return _ns(value) // 1000
    return value
