"""The stored history of the partitions being read, and time lag from it."""

import datetime as dt
import re

from collector.brokers import lag as lagmath
from collector.brokers.models import DRAIN_ESTIMATE, EXACT, INTERPOLATED
from collector.brokers.samples.readings import Reading

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
    # Some systems give the age of the oldest waiting message without a count
    # (an iterator age): the time lag is known even when the lag is not.
    if reading.oldest_at is not None:
        return max(0.0, t - reading.oldest_at), EXACT, False
    if lag is None:
        return None, "", False
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
