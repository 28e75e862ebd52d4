"""From readings to stored lag: samples, time lag, status, group state, hint.

Every source (OTLP metrics, Prometheus scrapes, direct pollers) turns what
the broker says into `Reading`s and calls `store()` (or `store_async()`),
which in one transaction:
1. reads the recent history of the partitions it was given,
2. fills in lag, time lag (exact, interpolated or drain estimate) and the
   consume rate, and evaluates each partition's status over the window,
3. appends the samples, upserts each group's present state,
4. and sends the "lag" live hint, delivered only if all of it commits.
"""

import asyncio
import datetime as dt
import json
import re
from dataclasses import dataclass, field

from django.conf import settings

from collector import notify
from collector.brokers import lag as lagmath
from collector.brokers.models import DRAIN_ESTIMATE, EXACT, INTERPOLATED

# Two status windows are read sample by sample (the second one places the
# last offset move exactly, so "stopped" is said on time), up to
# WINDOW_POINTS per partition; past that the rest is thinned to as many
# slices. Older history is read only when it matters (a backlog older than
# that, an offset that has not moved in it), thinned to one sample per slice
# of OLDER_SLICES back to HISTORY_HORIZON. A poll costs about two windows of
# samples per partition whatever the retention and the poll rate.
WINDOW_POINTS = 1000
OLDER_SLICES = 72
HISTORY_HORIZON = dt.timedelta(hours=6)


@dataclass(slots=True)
class Reading:
    """What a broker says about one partition of one consumer group, now.

    Offsets may be absent (RabbitMQ has none of its own); `oldest_at` is the
    write time of the oldest message still waiting, when the broker gives it
    (then the time lag is exact); `depth_based` asks for a drain estimate
    rather than interpolation; `active_at` is when the consumer last acted;
    `namespace` is the space the channel name lives in (a RabbitMQ vhost, a
    NATS account; '' where there is none). Times are Unix seconds.
    """

    system: str
    channel: str
    group: str
    partition: str = ""
    end_offset: int | None = None
    committed_offset: int | None = None
    lag: int | None = None
    oldest_at: float | None = None
    active_at: float | None = None
    time: float | None = None
    depth_based: bool = False
    # The committed offset is a statistics counter (RabbitMQ acks) that
    # restarts with the broker: going down means a reset, not a rewind.
    counter: bool = False
    namespace: str = ""
    # Not reported by the broker this time but held at its last committed
    # offset against the partition's current end (see `store`).
    carried: bool = False

    @property
    def key(self) -> tuple[str, str, str, str, str]:
        """(system, namespace, channel, group, partition); a group is key[:4]."""
        return (self.system, self.namespace, self.channel, self.group, self.partition)


@dataclass(slots=True)
class Report:
    """What one poll of a broker said: its readings, and the end offsets it gave
    for partitions by (system, namespace, channel, partition), grouped or not."""

    readings: list[Reading]
    ends: dict[tuple[str, str, str, str], int] = field(default_factory=dict)


def _partition_sort(value: str):
    return (0, int(value), "") if re.fullmatch(r"\d+", value) else (1, 0, value)


def _ts(seconds: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(seconds, dt.UTC)


_SAMPLE_COLUMNS = """extract(epoch FROM s.time)::float8 AS t, s.end_offset, s.committed_offset,
                   s.lag, extract(epoch FROM s.active_at)::float8 AS active"""
_SAME_PARTITION = """s.project_id = %s AND s.system = k.system AND s.channel = k.channel
              AND s.consumer_group = k.consumer_group AND s.namespace = k.namespace
              AND s.partition = k.partition"""
_KEY_COLUMNS = "k.system, k.namespace, k.channel, k.consumer_group, k.partition"


def _columns(keys) -> list[list[str]]:
    return [[k[i] for k in keys] for i in range(5)]


def _history(cursor, project_id, readings, now, window) -> dict[tuple, list[lagmath.Point]]:
    """Recent samples per partition: the whole window, and thinned older history where needed."""
    keys = sorted({r.key for r in readings})
    span = 2 * window
    exact_start = now - dt.timedelta(seconds=span)
    # One index range scan per partition, newest first, bounded in count.
    cursor.execute(
        f"""
        SELECT {_KEY_COLUMNS}, recent.*
        FROM unnest(%s::text[], %s::text[], %s::text[], %s::text[], %s::text[])
             AS k(system, namespace, channel, consumer_group, partition)
        CROSS JOIN LATERAL (
            SELECT {_SAMPLE_COLUMNS}
            FROM brokers_lagsample s
            WHERE {_SAME_PARTITION} AND s.time > %s AND s.time <= %s
            ORDER BY s.time DESC
            LIMIT %s
        ) recent
        """,
        [*_columns(keys), project_id, exact_start, now, WINDOW_POINTS],
    )
    history: dict[tuple, dict[float, lagmath.Point]] = {}
    for *key, t, end, committed, lag, active in cursor.fetchall():
        history.setdefault(tuple(key), {})[t] = lagmath.Point(t, end, committed, lag, active)
    # Older history, one index probe per slice, for the partitions that need it.
    by_key = {r.key: r for r in readings}
    thin_step = span / WINDOW_POINTS
    older_step = max(HISTORY_HORIZON.total_seconds() - span, 0.0) / OLDER_SLICES
    probes = []
    for key in keys:
        recent = history.get(key, {})
        full = len(recent) >= WINDOW_POINTS
        if not (full or _needs_older(by_key[key], recent.values())):
            continue
        # A full read is thinned from its oldest sample back to the span's start.
        until = min(recent) - 1e-6 if full else exact_start.timestamp()
        inner = int((until - exact_start.timestamp()) // thin_step) + 1 if full else 0
        probes.append((key, _ts(until), inner))
    if probes:
        cursor.execute(
            f"""
            SELECT {_KEY_COLUMNS}, probe.*
            FROM unnest(%s::text[], %s::text[], %s::text[], %s::text[], %s::text[],
                        %s::timestamptz[], %s::int[])
                 AS k(system, namespace, channel, consumer_group, partition, thin_until,
                      thin_slices)
            CROSS JOIN LATERAL (
                SELECT k.thin_until - n * make_interval(secs => %s) AS hi,
                       make_interval(secs => %s) AS width
                FROM generate_series(0, k.thin_slices - 1) AS n
                UNION ALL
                SELECT %s::timestamptz - n * make_interval(secs => %s), make_interval(secs => %s)
                FROM generate_series(0, %s - 1) AS n
            ) slice
            CROSS JOIN LATERAL (
                SELECT {_SAMPLE_COLUMNS}
                FROM brokers_lagsample s
                WHERE {_SAME_PARTITION}
                  AND s.time <= slice.hi AND s.time > slice.hi - slice.width AND s.time > %s
                ORDER BY s.time DESC
                LIMIT 1
            ) probe
            """,
            [
                *_columns([p[0] for p in probes]),
                [p[1] for p in probes],
                [p[2] for p in probes],
                thin_step,
                thin_step,
                exact_start,
                older_step,
                older_step,
                OLDER_SLICES if older_step > 0 else 0,
                project_id,
                now - HISTORY_HORIZON,
            ],
        )
        for *key, t, end, committed, lag, active in cursor.fetchall():
            history.setdefault(tuple(key), {})[t] = lagmath.Point(t, end, committed, lag, active)
    return {key: [points[t] for t in sorted(points)] for key, points in history.items()}


def _needs_older(reading: Reading, recent) -> bool:
    """Whether the exactly read span alone cannot place this reading in time."""
    recent = list(recent)
    if not recent or reading.committed_offset is None:
        return not recent
    committed = reading.committed_offset
    ends = [p.end_offset for p in recent if p.end_offset is not None]
    # The waiting messages were written before the span began...
    if ends and min(ends) > committed:
        return True
    # ...or the offset has not moved in it, and "since when" lies further back.
    return all(p.committed_offset == committed for p in recent)


def _time_lag(reading: Reading, lag, points, rate, t):
    """(seconds, method, estimated) for one reading."""
    if lag == 0:
        return 0.0, EXACT, False
    if lag is None:
        return None, "", False
    if reading.oldest_at is not None:
        return max(0.0, t - reading.oldest_at), EXACT, False
    if reading.depth_based:
        seconds = lagmath.drain_seconds(lag, rate)
        if seconds is not None:
            return seconds, DRAIN_ESTIMATE, True
    if reading.committed_offset is not None:
        history = [(p.time, p.end_offset) for p in points]
        seconds, extrapolated = lagmath.interpolate_time_lag(history, reading.committed_offset, t)
        if seconds is not None:
            return seconds, INTERPOLATED, extrapolated
    seconds = lagmath.drain_seconds(lag, rate)
    if seconds is not None:
        return seconds, DRAIN_ESTIMATE, True
    return None, "", False


def store(
    cursor,
    project_id: int,
    readings: list[Reading],
    source: str,
    now: dt.datetime | None = None,
    window: float | None = None,
    complete: bool = False,
    ends: dict | None = None,
) -> list[dict]:
    """Evaluate and store readings in the cursor's transaction; the groups' new states.

    Readings older than a group's stored state (a late or retried export)
    are kept as history only: the state stays, and is not among those returned.

    `complete` says the readings are everything `source` reports. A group it
    reported before and not now is removed (a deleted queue, stream or
    consumer), unless `ends` (end offsets of the partitions the source
    reported, as in `Report.ends`) still has its partitions: then it is a
    group the exporter stopped listing because it has no members, and it is
    held at its last committed offsets against the current ends, so its lag
    grows and it turns `stopped`. That lasts for the retention period after
    the broker last reported the group itself.
    """
    now = now or dt.datetime.now(dt.UTC)
    window = float(window or settings.LAG_WINDOW_SECONDS)
    now_s = now.timestamp()
    if complete and ends:
        readings = readings + _carried(cursor, project_id, source, readings, ends, now)
    history = _history(cursor, project_id, readings, now, window) if readings else {}
    samples, by_group, observed = [], {}, {}
    for reading in readings:
        t = min(reading.time or now_s, now_s)
        end, committed, lag = reading.end_offset, reading.committed_offset, reading.lag
        if lag is None and end is not None and committed is not None:
            lag = max(0, end - committed)
        if end is None and lag is not None and committed is not None:
            end = committed + lag
        known = history.get(reading.key, [])
        points = [p for p in known if p.time < t]
        if reading.counter and committed is not None:
            restarted = [i for i, p in enumerate(points) if (p.committed_offset or 0) > committed]
            if restarted:
                points = points[restarted[-1] + 1 :]
        points.append(lagmath.Point(t, end, committed, lag, reading.active_at))
        # OTLP is delivered at least once: a retried export repeats a sample
        # time, which is stored once.
        repeated = any(abs(p.time - t) < 1e-5 for p in known)
        rate = lagmath.consume_rate(points)
        seconds, method, estimated = _time_lag(reading, lag, points, rate, t)
        status, reason = lagmath.partition_status(points, now_s, window)
        if not repeated:
            samples.append(
                (
                    project_id,
                    _ts(t),
                    *reading.key,
                    end,
                    committed,
                    lag,
                    seconds,
                    method,
                    estimated,
                    rate,
                    _ts(reading.active_at) if reading.active_at is not None else None,
                    source,
                )
            )
        group_key = reading.key[:4]
        observed[group_key] = max(observed.get(group_key, t), t)
        by_group.setdefault(group_key, []).append(
            {
                "partition": reading.partition,
                "lag": lag,
                "lag_seconds": seconds,
                "lag_seconds_method": method or None,
                "estimated": estimated,
                "end_offset": end,
                "committed_offset": committed,
                "consume_rate": rate,
                "status": status,
                "reason": reason,
            }
        )
    if samples:
        cursor.executemany(
            """
            INSERT INTO brokers_lagsample (project_id, time, system, namespace, channel,
                consumer_group, partition, end_offset, committed_offset, lag, lag_seconds,
                lag_seconds_method, estimated, consume_rate, active_at, source)
            VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
            """,
            samples,
        )
    carried = {r.key[:4] for r in readings if r.carried}
    states = []
    for (system, namespace, channel, group), partitions in sorted(by_group.items()):
        partitions.sort(key=lambda p: _partition_sort(p["partition"]))
        status, reason = lagmath.group_status(partitions)
        lags = [p["lag"] for p in partitions if p["lag"] is not None]
        timed = [p for p in partitions if p["lag_seconds"] is not None]
        rates = [p["consume_rate"] for p in partitions if p["consume_rate"] is not None]
        slowest = max(timed, key=lambda p: p["lag_seconds"]) if timed else None
        state = {
            "system": system,
            "namespace": namespace,
            "channel": channel,
            "group": group,
            "lag": sum(lags) if lags else None,
            "lag_seconds": slowest["lag_seconds"] if slowest else None,
            "lag_seconds_method": slowest["lag_seconds_method"] if slowest else None,
            "estimated": bool(slowest and slowest["estimated"]),
            "consume_rate": sum(rates) if rates else None,
            "status": status,
            "reason": reason,
            "partitions": partitions,
        }
        cursor.execute(
            """
            INSERT INTO brokers_groupstate (project_id, system, namespace, channel,
                consumer_group, lag, lag_seconds, lag_seconds_method, estimated, consume_rate,
                status, reason, partitions, updated_at, source, reported_at)
            VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s::jsonb, %s, %s, %s)
            ON CONFLICT (project_id, system, namespace, channel, consumer_group) DO UPDATE SET
                lag = EXCLUDED.lag, lag_seconds = EXCLUDED.lag_seconds,
                lag_seconds_method = EXCLUDED.lag_seconds_method,
                estimated = EXCLUDED.estimated, consume_rate = EXCLUDED.consume_rate,
                status = EXCLUDED.status,
                reason = EXCLUDED.reason, partitions = EXCLUDED.partitions,
                updated_at = EXCLUDED.updated_at, source = EXCLUDED.source,
                reported_at = COALESCE(EXCLUDED.reported_at, brokers_groupstate.reported_at)
            -- A late or retried export (OTLP is at least once, and out of
            -- order across collectors) adds to history but does not
            -- rewrite the present with older figures.
            WHERE brokers_groupstate.updated_at <= EXCLUDED.updated_at
            RETURNING 1
            """,
            [
                project_id,
                system,
                namespace,
                channel,
                group,
                state["lag"],
                state["lag_seconds"],
                state["lag_seconds_method"] or "",
                state["estimated"],
                state["consume_rate"],
                status,
                reason,
                json.dumps(partitions),
                _ts(observed[(system, namespace, channel, group)]),
                source,
                None if (system, namespace, channel, group) in carried else now,
            ],
        )
        if cursor.fetchone() is not None:
            states.append(state)
    if complete:
        keys = sorted(by_group)
        cursor.execute(
            """
            DELETE FROM brokers_groupstate
            WHERE project_id = %s AND source = %s
              AND (system, namespace, channel, consumer_group) NOT IN (
                  SELECT * FROM unnest(%s::text[], %s::text[], %s::text[], %s::text[]))
            """,
            [project_id, source, *([k[i] for k in keys] for i in range(4))],
        )
    if states or complete:
        notify.send(cursor, project_id, notify.LAG)
    return states


def _carried(cursor, project_id, source, readings, ends, now) -> list[Reading]:
    """Readings for groups `source` reported before and not now whose partitions remain."""
    reported = {r.key[:4] for r in readings}
    cursor.execute(
        """
        SELECT system, namespace, channel, consumer_group, partitions FROM brokers_groupstate
        WHERE project_id = %s AND source = %s AND coalesce(reported_at, updated_at) >= %s
        """,
        [project_id, source, now - dt.timedelta(days=settings.RETENTION_DAYS)],
    )
    carried = []
    for system, namespace, channel, group, partitions in cursor.fetchall():
        if (system, namespace, channel, group) in reported:
            continue
        if isinstance(partitions, str):
            partitions = json.loads(partitions)
        for partition in partitions:
            end = ends.get((system, namespace, channel, partition["partition"]))
            committed = partition.get("committed_offset")
            if end is None or committed is None:
                continue
            carried.append(
                Reading(
                    system,
                    channel,
                    group,
                    partition["partition"],
                    end_offset=end,
                    committed_offset=committed,
                    lag=max(0, end - committed),
                    time=now.timestamp(),
                    namespace=namespace,
                    carried=True,
                )
            )
    return carried


def broker_answered(cursor, project_id: int, source: str, system: str, now=None) -> None:
    """Record that a broker answered its poll (clears "unreachable")."""
    now = now or dt.datetime.now(dt.UTC)
    cursor.execute(
        """
        INSERT INTO brokers_brokerstate (project_id, source, system, error, error_since,
            last_ok_at, updated_at)
        VALUES (%s, %s, %s, '', NULL, %s, %s)
        ON CONFLICT (project_id, source) DO UPDATE SET
            error = '', error_since = NULL, last_ok_at = EXCLUDED.last_ok_at,
            updated_at = EXCLUDED.updated_at, system = EXCLUDED.system
        """,
        [project_id, source, system, now, now],
    )


def broker_failed(cursor, project_id: int, source: str, system: str, error: str, now=None):
    """Record that a broker did not answer; `error_since` keeps the first failure's time."""
    now = now or dt.datetime.now(dt.UTC)
    cursor.execute(
        """
        INSERT INTO brokers_brokerstate (project_id, source, system, error, error_since,
            last_ok_at, updated_at)
        VALUES (%s, %s, %s, %s, %s, NULL, %s)
        ON CONFLICT (project_id, source) DO UPDATE SET
            error = EXCLUDED.error,
            error_since = CASE WHEN brokers_brokerstate.error = ''
                               THEN EXCLUDED.error_since
                               ELSE brokers_brokerstate.error_since END,
            updated_at = EXCLUDED.updated_at
        """,
        [project_id, source, system, error[:500] or "no answer", now, now],
    )
    notify.send(cursor, project_id, notify.LAG)


def prune(cursor, older_than: dt.datetime, batch: int = 50_000) -> int:
    """Delete samples older than `older_than`, in bounded batches; rows deleted."""
    total = 0
    while True:
        cursor.execute(
            """
            DELETE FROM brokers_lagsample WHERE id IN (
                SELECT id FROM brokers_lagsample WHERE time < %s LIMIT %s)
            """,
            [older_than, batch],
        )
        total += cursor.rowcount
        if cursor.rowcount < batch:
            return total


def thin(cursor, since: dt.datetime, until: dt.datetime, every_seconds: int = 60) -> int:
    """Keep only the newest sample per partition per `every_seconds` in [since, until).

    Old history is read for charts over days and for interpolation across
    long backlogs, neither of which needs every poll; thinning keeps a week
    of samples about as large as a day of them. Rows deleted.
    """
    cursor.execute(
        """
        DELETE FROM brokers_lagsample s USING (
            SELECT id, row_number() OVER (
                PARTITION BY project_id, system, namespace, channel, consumer_group, partition,
                             date_bin(make_interval(secs => %s), time, TIMESTAMPTZ 'epoch')
                ORDER BY time DESC
            ) AS n
            FROM brokers_lagsample WHERE time >= %s AND time < %s
        ) extra
        WHERE s.id = extra.id AND extra.n > 1
        """,
        [every_seconds, since, until],
    )
    return cursor.rowcount


def store_sync(project_id: int, readings: list[Reading], source: str, **kwargs) -> list[dict]:
    """`store()` on its own connection, committed on return."""
    import psycopg

    from collector.db import conninfo

    with psycopg.connect(conninfo(), connect_timeout=10) as conn, conn.cursor() as cursor:
        return store(cursor, project_id, readings, source, **kwargs)


async def store_async(project_id: int, readings: list[Reading], source: str, **kwargs):
    """`store()` from async code, committed before it returns."""
    return await asyncio.to_thread(store_sync, project_id, readings, source, **kwargs)
