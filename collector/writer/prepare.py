"""Preparing rows: checking and encoding a batch's rows when it is submitted, and
dropping the rows a group of batches carries twice."""

import asyncio
import datetime as dt
import time
from dataclasses import dataclass, field

from django.conf import settings

from collector.batch import Batch
from collector.writer.items import (
    Item,
    envelope_item,
    log_item,
    span_bounds,
    span_item,
    span_items,
    stage_bounds,
    stage_item,
    stage_items,
    stage_keys,
)
from collector.writer.rows import (
    _DAY_NS,
    _EPOCH,
    ENVELOPES,
    LOGS,
    SPANS,
    STAGES,
    _Table,
    to_datetime,
)


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
        self.spans: list[Item] = []
        self.stages: list[Item] = []
        self.envelopes: list[Item] = []
        self.logs: list[Item] = []
        self.hints: set = set()  # span ids and dedupe keys (see _collect)
        # (project, source, event_id, time_ns) of envelopes stamped on receipt
        self.receive_timed: set[tuple] = set()
        self.days: set[int] = set()  # days (since the epoch) the rows fall on

    def clear(self) -> None:
        """Let go of the prepared rows once answered: they refer back to this
        object, and only a full garbage collection (rare here) would free them."""
        self.spans = self.stages = self.envelopes = self.logs = []
        self.hints = set()


class _Rows:
    """The group's rows, each once."""

    def __init__(self, group: list[_Pending]):
        self.pendings = group
        self.spans: list[Item] = []
        self.stages: list[Item] = []
        self.envelopes: list[Item] = []
        self.logs: list[Item] = []
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

    def all_fit(first: int, last: int, unique: set, count: int) -> bool:
        # The common case: nothing to refuse and nothing repeated, so the rows
        # are not checked one by one.
        nonlocal hints
        if len(unique) != count or first < oldest_ns or last > newest_ns:
            return False
        days.update(range(first // _DAY_NS, last // _DAY_NS + 1))
        if hints:
            hints.update(unique)
        else:  # `unique` is new: taken rather than copied
            hints = pending.hints = unique
        return True

    resources: dict[int, bytes] = {}
    if spans := batch.spans:
        if all_fit(*span_bounds(spans), len(spans)):
            pending.spans = span_items(spans, pending, resources)
        else:
            for span in spans:
                start = span.start_time_ns
                if accept("span", start, _ident(SPANS, span, None, start)):
                    pending.spans.append(span_item(span, pending, resources))
                    hints.add(span.span_id)
    for env in batch.envelopes:
        if accept("event", env.time_ns, _ident(ENVELOPES, env, None, env.time_ns)):
            pending.envelopes.append(envelope_item(env, pending))
            hints.add((env.source, env.event_id))
            if not env.time_from_event:
                pending.receive_timed.add((env.project_id, env.source, env.event_id, env.time_ns))
    if stages := batch.stages:
        keys = stage_keys(stages)
        if all_fit(*stage_bounds(stages, keys), len(stages)):
            pending.stages = stage_items(stages, keys, pending)
        else:
            for stage, key in zip(stages, keys, strict=True):
                time_ns = stage.time_ns
                if not oldest_ns <= time_ns <= newest_ns:
                    continue  # its span or envelope was refused (and counted) already
                if accept("stage", time_ns, _ident(STAGES, stage, key, time_ns)):
                    pending.stages.append(stage_item(stage, key, pending))
                    hints.add(key)
    for record in batch.logs:
        key = record.dedupe_key()
        if accept("log record", record.time_ns, _ident(LOGS, record, key, record.time_ns)):
            pending.logs.append(log_item(record, pending, key))
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
        if pending is not group[-1]:  # no batch after the last to compare with
            hints |= pending.hints
    return rows
