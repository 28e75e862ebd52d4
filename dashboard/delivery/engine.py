"""The delivery pass: newly stored stages in, findings out (a worker loop).

Progress is keyed on what was committed, not on event times. Collector
processes commit rows in any time order (a retried export, a slow lane, a
span that started long ago), so a watermark on `time` would miss rows. Each
stage the writer stores also updates its minute's flow rollup in the same
transaction, so the rollup rows changed since the last pass's snapshot
(their `xmin` not visible in it) name the minutes that got new stages; those
minutes go into `delivery_dirtyminute` with that snapshot, and their stages
not visible in it are read. The last RECENT of minutes are looked at every
pass; all the minutes kept, against a snapshot of their own, every
FULL_EVERY (a commit for an old minute is rare, and found then). Every event they belong to is then judged again
from all its stored stages, so the pass is idempotent: reading a stage twice
changes nothing, and a resent span was never stored twice in the first place.

Publishes are also judged again once their deadline passes (`swept_until`),
which is when a missing event becomes one.
"""

import asyncio
import datetime as dt
import logging
from collections import defaultdict

from django.conf import settings
from django.db import connection, transaction

from collector import histogram, notify
from dashboard.delivery import judge, ordering
from dashboard.delivery.models import ChannelSetting, Expectation, Finding, PassState
from dashboard.flow.queries import window_rows

log = logging.getLogger(__name__)

INTERVAL_SECONDS = 10
LOCK_ID = 0x64656C76  # "delv": one pass at a time
MINUTES_PER_PASS = 240  # dirty minutes read per pass (a first run reads the rest later)
RECENT = dt.timedelta(hours=2)
FULL_EVERY = dt.timedelta(seconds=60)
EVENT_SPAN = dt.timedelta(days=1)  # an event's stages are looked for this far around
CHUNK = 2000
AREA = "delivery"

_STAGE_COLUMNS = (
    "s.project_id, s.time, s.stage, s.role, s.system, s.channel, s.service, "
    "s.consumer_group, s.trace_id, s.span_id, s.parent_span_id, s.linked_trace_ids, "
    "s.linked_span_ids, "
    "s.event_id, s.event_source, s.origin, s.dedupe_key"
)


def _stage(row) -> tuple[bytes, judge.Stage]:
    (project_id, time, stage, role, system, channel, service, group, trace_id, span_id,
     parent, traces, spans, event_id, source, origin, dedupe) = row  # fmt: skip
    linked = [(bytes(t), bytes(s)) for t, s in zip(traces or (), spans or (), strict=False)]
    return (bytes(dedupe), time), judge.Stage(
        project_id, time, stage, role, system, channel, service, group,
        bytes(trace_id) if trace_id else None, bytes(span_id) if span_id else None,
        bytes(parent) if parent else None, linked, event_id, source, origin,
    )  # fmt: skip


class _Xid:
    """Tests whether a row's xmin was committed after a snapshot (xid8 math)."""

    def __init__(self, xmax: int):
        self.base = (xmax >> 32) << 32
        self.low = xmax & 0xFFFFFFFF

    def new_since(self, alias: str = "") -> str:
        col = f"{alias}xmin"
        return (
            f"NOT pg_visible_in_snapshot(GREATEST(0, CASE WHEN {col}::text::bigint <= {self.low} "
            f"THEN {self.base} ELSE {self.base} - 4294967296 END + {col}::text::bigint)"
            "::text::xid8, %s::pg_snapshot)"
        )


def run_pass(max_minutes: int = MINUTES_PER_PASS) -> dict | None:
    """One pass in its own transaction; None when another pass holds the lock."""
    with transaction.atomic(), connection.cursor() as cur:
        cur.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        cur.execute("SELECT pg_try_advisory_xact_lock(%s)", [LOCK_ID])
        if not cur.fetchone()[0]:
            return None
        cur.execute(
            "SELECT pg_current_snapshot()::text, "
            "pg_snapshot_xmax(pg_current_snapshot())::text::bigint, now()"
        )
        snapshot, xmax, now = cur.fetchone()
        return _Pass(cur, snapshot, _Xid(xmax), now).run(max_minutes)


class _Pass:
    def __init__(self, cur, snapshot: str, xid: _Xid, now: dt.datetime):
        self.cur = cur
        self.snapshot = snapshot
        self.xid = xid
        self.now = now
        self.settings: dict[tuple, ChannelSetting] = {}
        self.deadlines: dict[tuple, dt.timedelta] = {}
        self.changed: set[int] = set()

    def run(self, max_minutes: int) -> dict:
        cur = self.cur
        state, _ = PassState.objects.select_for_update().get_or_create(id=1)
        oldest = self.now.replace(hour=0, minute=0, second=0, microsecond=0) - dt.timedelta(
            days=settings.RETENTION_DAYS
        )
        recent = self.now - RECENT
        self._mark_dirty(state.snapshot, max(oldest, recent), None)
        full = state.full_at is None or self.now - state.full_at >= FULL_EVERY
        if full:
            self._mark_dirty(state.full_snapshot, oldest, recent)
        cur.execute(
            "DELETE FROM delivery_dirtyminute WHERE minute IN (SELECT minute FROM "
            "delivery_dirtyminute ORDER BY minute DESC LIMIT %s) RETURNING minute, since",
            [max_minutes],
        )
        dirty = sorted(cur.fetchall())
        touched = self._new_stages(dirty)
        swept_from = state.swept_until or self.now
        touched += self._due_publishes(swept_from, None)
        judged = self._judge(touched)
        if state.passed_at is None or state.passed_at.hour != self.now.hour:
            self._purge(oldest)
        state.snapshot = self.snapshot
        if full:
            state.full_snapshot, state.full_at = self.snapshot, self.now
        state.swept_until = self.now
        state.passed_at = self.now
        state.save()
        cur.execute("SELECT count(*) FROM delivery_dirtyminute")
        left = cur.fetchone()[0]
        for project_id in sorted(self.changed):
            notify.send(cur, project_id, AREA)
        return {"minutes": len(dirty), "stages": len(touched), "events": judged, "left": left}

    def _purge(self, oldest: dt.datetime) -> None:
        """Hourly: what is older than the raw data it was judged from goes
        (EVENTSCOPE_RETENTION_DAYS), with its day."""
        self.cur.execute("DELETE FROM delivery_finding WHERE event_time < %s", [oldest])
        self.cur.execute("DELETE FROM delivery_sequenced WHERE published_at < %s", [oldest])
        self.cur.execute("DELETE FROM delivery_dirtyminute WHERE minute < %s", [oldest])
        self.cur.execute(
            "DELETE FROM delivery_expectation WHERE last_seen < %s AND retired_at IS NULL",
            [oldest],
        )

    # -- what is new ---------------------------------------------------------------

    def _mark_dirty(self, previous: str | None, lo: dt.datetime, hi: dt.datetime | None) -> None:
        """Queue the minutes in [lo, hi) whose rollups changed since `previous`."""
        until, params = ("AND minute < %s ", [hi]) if hi is not None else ("", [])
        # By project: the rollups' key starts with it, so minutes are a range scan.
        self.cur.execute("SELECT array_agg(id) FROM collector_project")
        projects = self.cur.fetchone()[0] or []
        where = f"project_id = ANY(%s) AND minute >= %s {until}"
        if previous is None:
            self.cur.execute(
                "INSERT INTO delivery_dirtyminute (minute, since) SELECT DISTINCT minute, NULL "
                f"FROM collector_flowrollup WHERE {where}"
                "ON CONFLICT (minute) DO UPDATE SET since = NULL",
                [projects, lo, *params],
            )
            return
        self.cur.execute(
            "INSERT INTO delivery_dirtyminute (minute, since) SELECT DISTINCT minute, %s "
            f"FROM collector_flowrollup WHERE {where}AND {self.xid.new_since()} "
            "ON CONFLICT (minute) DO NOTHING",
            [previous, projects, lo, *params, previous],
        )

    def _new_stages(self, dirty: list) -> list:
        """Stages of the dirty minutes committed after each minute's snapshot."""
        by_since = defaultdict(list)
        for minute, since in dirty:
            by_since[since].append(minute)
        out = []
        for since, minutes in by_since.items():
            for lo, hi in _ranges(minutes):
                sql = (
                    f"SELECT {_STAGE_COLUMNS} FROM collector_stage s "
                    "WHERE s.time >= %s AND s.time < %s AND s.channel <> ''"
                )
                params = [lo, hi]
                if since is not None:
                    sql += f" AND {self.xid.new_since('s.')}"
                    params.append(since)
                self.cur.execute(sql, params)
                out += [_stage(r)[1] for r in self.cur.fetchall()]
        return out

    def _due_publishes(self, swept_from, only) -> list:
        """Publishes whose deadline for some expected group passed since
        `swept_from` (or, for `only` = {expectation: (since, until)}, those
        published in that span whose deadline has passed)."""
        rows = Expectation.objects.filter(retired_at__isnull=True)
        if only is not None:
            rows = [e for e in rows if e.pk in only]
        ranges = defaultdict(set)
        for exp in rows:
            deadline = self._deadline(exp.project_id, exp.system, exp.channel, exp.group)
            end = self.now - deadline
            if only is None:
                start = swept_from - deadline
            else:
                start, end = only[exp.pk][0], min(end, only[exp.pk][1])
            ranges[(exp.project_id, exp.system, exp.publish_channel)].add((start, end))
        out = []
        for (project_id, system, channel), spans in ranges.items():
            for lo, hi in spans:
                if hi <= lo:
                    continue
                self.cur.execute(
                    f"SELECT {_STAGE_COLUMNS} FROM collector_stage s WHERE s.project_id = %s "
                    "AND s.system = %s AND s.channel = %s AND s.role = 'producer' "
                    "AND s.stage = 'published' AND s.time > %s AND s.time <= %s",
                    [project_id, system, channel, lo, hi],
                )
                out += [_stage(r)[1] for r in self.cur.fetchall()]
        return out

    # -- deadlines and settings ----------------------------------------------------

    def _setting(self, project_id, system, channel) -> ChannelSetting | None:
        key = (project_id, system, channel)
        if key not in self.settings:
            self.settings[key] = ChannelSetting.objects.filter(
                project_id=project_id, system=system, channel=channel
            ).first()
        return self.settings[key]

    def _deadline(self, project_id, system, channel, group) -> dt.timedelta:
        if project_id not in self.deadlines:
            self.deadlines[project_id] = latencies(self.cur, project_id, self.now)
        return deadline(
            self._setting(project_id, system, channel),
            self.deadlines[project_id].get((system, channel, group)),
        )

    # -- judging -------------------------------------------------------------------

    def _judge(self, touched: list) -> int:
        by_project = defaultdict(list)
        for s in touched:
            by_project[s.project_id].append(s)
        judged = 0
        for project_id, stages in by_project.items():
            judged += self._judge_project(project_id, stages)
        return judged

    def _judge_project(self, project_id: int, touched: list) -> int:
        keys = {k for s in touched for k in judge.keys_of(s)}
        if not keys:
            return 0
        events = self._events(project_id, touched, keys)
        # Learn the expected groups first, so this pass's events count for them.
        resweep = self._learn(project_id, events)
        if resweep:
            more = self._due_publishes(None, resweep)
            more_keys = {k for s in more for k in judge.keys_of(s)} - keys
            if more_keys:
                events.update(self._events(project_id, more, more_keys))
        expected = self._expected(project_id)
        poison = settings.DELIVERY_POISON_ATTEMPTS
        found = []
        for event in events.values():
            publish = event.publish
            wants = []
            if publish is not None:
                horizon = dt.timedelta(hours=settings.DELIVERY_EXPECTED_HOURS)
                wants = [
                    judge.Expected(e.system, e.channel, e.group, e.service, d)
                    for e, d in expected.get((publish.system, publish.channel), ())
                    if e.first_seen <= publish.time <= e.last_seen + horizon
                ]
            found += judge.judge(event, wants, self.now, poison)
        self._write(project_id, [*events, *(a for e in events.values() for a in e.aliases)], found)
        self._sequence(project_id, events)
        self.changed.add(project_id)
        return len(events)

    def _events(self, project_id: int, touched: list, keys: set) -> dict:
        """Every stored stage of the events `keys`, grouped into events.

        A consume stage known only by its message id joins its publish
        (judge.by_message_id): the stages of that message id are read, and
        then the publish's trace, for the other groups' consume stages; a
        publish's message id is read for consumers that carry nothing else.
        """
        lo = min(s.time for s in touched) - EVENT_SPAN
        hi = max(s.time for s in touched) + EVENT_SPAN
        traces = set()
        ids = set()
        for s in touched:
            if s.origin == judge.ORIGIN_CLOUDEVENT or (s.role == "consumer" and not s.linked):
                if s.event_id:
                    ids.add(s.event_id)
            if s.role == "producer" and s.trace_id:
                traces.add(s.trace_id)
                if judge.is_span_publish(s) and s.event_id:
                    ids.add(s.event_id)
            traces.update(t for t, _ in s.linked)
        rows = {}
        base = f"SELECT {_STAGE_COLUMNS} FROM collector_stage s WHERE s.project_id = %s "
        window = " AND s.time BETWEEN %s AND %s"
        asked_traces, asked_ids = set(), set()
        joined: dict = {}
        wanted = set(keys)
        while traces - asked_traces or ids - asked_ids:
            new_traces, new_ids = sorted(traces - asked_traces), sorted(ids - asked_ids)
            asked_traces.update(new_traces)
            asked_ids.update(new_ids)
            for chunk in _chunks(new_traces):
                for where in ("s.trace_id = ANY(%s)", "s.linked_trace_ids && %s::bytea[]"):
                    self.cur.execute(base + "AND " + where + window, [project_id, chunk, lo, hi])
                    rows.update(_stage(r) for r in self.cur.fetchall())
            for chunk in _chunks(new_ids):
                self.cur.execute(
                    base + "AND s.event_id = ANY(%s)" + window, [project_id, chunk, lo, hi]
                )
                rows.update(_stage(r) for r in self.cur.fetchall())
            # Publishes that consume stages known by message id joined: their
            # trace (the other groups) and message id (more such consumers).
            joined = judge.by_message_id(rows.values())
            wanted = set(keys) | {joined[k] for k in keys if k in joined}
            for s in rows.values():
                if judge.is_span_publish(s) and judge.context_key(s.trace_id, s.span_id) in wanted:
                    traces.add(s.trace_id)
                    if s.event_id:
                        ids.add(s.event_id)
        grouped = defaultdict(list)
        for s in rows.values():
            for key in judge.keys_of(s):
                key = joined.get(key, key)
                if key in wanted:
                    grouped[key].append(s)
        events = {key: judge.Event(key, stages) for key, stages in grouped.items()}
        for alias, key in joined.items():
            if key in events:
                events[key].aliases.append(alias)
        return events

    def _learn(self, project_id: int, events: dict) -> dict:
        """Record the groups that consumed these events; returns {expectation
        id: (since, until)} for those new or seen earlier than before (their
        publishes in that span are judged again)."""
        seen = {}
        for event in events.values():
            for system, pub_channel, channel, group, service, when in judge.consumed(event):
                key = (system, pub_channel, channel, group)
                lo, hi, _ = seen.get(key, (when, when, service))
                seen[key] = (min(lo, when), max(hi, when), service)
        resweep = {}
        for (system, pub_channel, channel, group), (lo, hi, service) in seen.items():
            exp, created = Expectation.objects.get_or_create(
                project_id=project_id,
                system=system,
                publish_channel=pub_channel,
                channel=channel,
                group=group,
                defaults={"service": service, "first_seen": lo, "last_seen": hi},
            )
            before = lo - dt.timedelta(microseconds=1)
            if created:
                resweep[exp.pk] = (before, self.now)
                continue
            earlier = lo < exp.first_seen
            if earlier:
                # Only what lies before the group's first event known so far.
                resweep[exp.pk] = (before, exp.first_seen)
            if earlier or hi > exp.last_seen:
                exp.first_seen = min(lo, exp.first_seen)
                exp.last_seen = max(hi, exp.last_seen)
                exp.save(update_fields=["first_seen", "last_seen"])
        return resweep

    def _expected(self, project_id: int) -> dict:
        out = defaultdict(list)
        for e in Expectation.objects.filter(project_id=project_id, retired_at__isnull=True):
            d = self._deadline(project_id, e.system, e.channel, e.group)
            out[(e.system, e.publish_channel)].append((e, d))
        return out

    def _write(self, project_id: int, keys: list, found: list) -> None:
        for chunk in _chunks(keys):
            self.cur.execute(
                "DELETE FROM delivery_finding WHERE project_id = %s AND event_key = ANY(%s) "
                "AND kind <> 'out_of_order'",
                [project_id, chunk],
            )
        Finding.objects.bulk_create(
            [Finding(project_id=project_id, detected_at=self.now, **f) for f in found],
            batch_size=1000,
        )

    # -- out of order --------------------------------------------------------------

    def _sequence(self, project_id: int, events: dict) -> None:
        ordering.sequence(self, project_id, events)


def latencies(cur, project_id: int, now: dt.datetime) -> dict:
    """{(system, channel, group): p95 produce->consume ms} of the consume
    edges over the last day (hourly rollups where compacted)."""
    rows_sql, params = window_rows(
        cur, project_id, now - dt.timedelta(days=1), now, "AND kind = 'consume'"
    )
    sums = ", ".join(f"sum(e2e_hist[{i}])" for i in range(1, histogram.SIZE + 1))
    cur.execute(
        f"SELECT source, target, consumer_group, {sums} FROM ({rows_sql}) r "
        "GROUP BY source, target, consumer_group",
        params,
    )
    out = {}
    for source, target, group, *hist in cur.fetchall():
        system, _, channel = source.partition(":")[2].partition(":")
        p95 = histogram.percentile([int(v or 0) for v in hist], 0.95)
        if p95 is not None:
            out[(system, channel, group or target.partition(":")[2])] = p95
    return out


def deadline(setting: ChannelSetting | None, p95_ms: float | None) -> dt.timedelta:
    """A group's deadline on a channel: the channel's setting, else 3x the
    group's p95 produce->consume latency over the last day (the p95, so the
    late events themselves do not push it out), at least
    EVENTSCOPE_DELIVERY_DEADLINE_SECONDS."""
    if setting is not None and setting.deadline_seconds:
        return dt.timedelta(seconds=setting.deadline_seconds)
    floor = float(settings.DELIVERY_DEADLINE_SECONDS)
    seconds = max(floor, 3 * p95_ms / 1000) if p95_ms is not None else floor
    return dt.timedelta(seconds=seconds)


def _ranges(minutes: list) -> list[tuple]:
    """Contiguous runs of minutes as [start, end) time ranges."""
    out = []
    step = dt.timedelta(minutes=1)
    for m in sorted(minutes):
        if out and out[-1][1] == m:
            out[-1][1] = m + step
        else:
            out.append([m, m + step])
    return [tuple(r) for r in out]


def _chunks(items: list, size: int = CHUNK):
    for i in range(0, len(items), size):
        yield items[i : i + size]


def _pass_in_thread():
    try:
        return run_pass()
    finally:
        connection.close()


async def run(stop: asyncio.Event) -> None:
    """Worker loop: a pass every INTERVAL_SECONDS (sooner while a backlog remains)."""
    from asgiref.sync import sync_to_async

    while not stop.is_set():
        wait = INTERVAL_SECONDS
        try:
            done = await sync_to_async(_pass_in_thread, thread_sensitive=False)()
            if done:
                log.debug("delivery pass: %s", done)
                if done["left"]:
                    wait = 1
        except Exception:
            log.exception("delivery pass failed; retrying in %ss", INTERVAL_SECONDS)
        try:
            await asyncio.wait_for(stop.wait(), wait)
        except TimeoutError:
            pass
