"""From readings to stored lag: samples, time lag, status, group state, hint.

Every source (OTLP metrics, Prometheus scrapes, direct pollers) turns what
the broker says into `Reading`s and calls `store()` (or `store_async()`),
which in one transaction:
1. reads the recent history of the partitions it was given,
2. fills in lag, time lag (exact, interpolated or drain estimate) and the
   consume rate, and evaluates each partition's status over the window,
3. appends the samples, upserts each group's present state,
4. and sends the "lag" live hint, delivered only if all of it commits.

`readings` holds what sources hand in, `history` reads the stored history
and derives time lag from it, `upkeep` prunes and thins the samples.
"""

import asyncio
import datetime as dt
import json

from django.conf import settings

from collector import notify
from collector.brokers import lag as lagmath
from collector.brokers.samples.history import (
    HISTORY_HORIZON,
    OLDER_SLICES,
    WINDOW_POINTS,
    _history,
    _partition_sort,
    _time_lag,
    _ts,
)
from collector.brokers.samples.readings import Reading, Report
from collector.brokers.samples.upkeep import prune, thin

# What `collector.brokers.samples` offers, wherever in the package it lives.
__all__ = [
    "HISTORY_HORIZON", "OLDER_SLICES", "WINDOW_POINTS", "Reading", "Report", "broker_answered",
    "broker_failed", "prune", "store", "store_async", "store_sync", "thin",
]  # fmt: skip


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
                **(reading.details or {}),
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


def store_sync(project_id: int, readings: list[Reading], source: str, **kwargs) -> list[dict]:
    """`store()` on its own connection, committed on return."""
    import psycopg

    from collector.db import conninfo

    with psycopg.connect(conninfo(), connect_timeout=10) as conn, conn.cursor() as cursor:
        return store(cursor, project_id, readings, source, **kwargs)


async def store_async(project_id: int, readings: list[Reading], source: str, **kwargs):
    """`store()` from async code, committed before it returns."""
    return await asyncio.to_thread(store_sync, project_id, readings, source, **kwargs)
