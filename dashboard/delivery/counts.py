"""Counts of the delivery findings of a window, per (kind, system, channel,
group): whole UTC hours from the hourly counts the database keeps
(`delivery_findinghour`, migration 0002_finding_hours), the rest of the window
from the findings themselves. Used by the Delivery page, GET /api/findings
and the flow graph's delivery marks (so it imports neither)."""

import datetime as dt

from django.db import connection

TREND_BUCKETS = 30
HOUR = dt.timedelta(hours=1)

_TOTALS = """
SELECT kind, system, channel, consumer_group, sum(n)::bigint FROM (
    SELECT kind, system, channel, consumer_group, count AS n FROM delivery_findinghour
    WHERE project_id = %s AND hour = ANY(%s::timestamptz[]) {where}
    UNION ALL
    SELECT kind, system, channel, consumer_group, 1 FROM delivery_finding
    WHERE project_id = %s AND ({ranges}) {where}
) AS r
GROUP BY 1, 2, 3, 4
"""


def _ranges_sql(ranges: list) -> str:
    return " OR ".join(["(event_time >= %s AND event_time < %s)"] * len(ranges)) or "false"


def _split(since: dt.datetime, until: dt.datetime, buckets: bool = True) -> tuple[list, list]:
    """(the whole hours of the window, inside one trend bucket each when
    `buckets`, and the [lo, hi) ranges of the rest): the first are read as
    hourly counts."""
    span = (until - since) / TREND_BUCKETS
    if buckets and span < HOUR:
        return [], [(since, until)]
    edges = [since + k * span for k in range(1, TREND_BUCKETS)] if buckets else []
    # Whole UTC hours, as the hourly counts are binned (an offset of half an
    # hour would otherwise name hours that have no row).
    hour = since.astimezone(dt.UTC).replace(minute=0, second=0, microsecond=0)
    if hour < since:
        hour += HOUR
    whole = []
    while hour + HOUR <= until:
        if not any(hour < e < hour + HOUR for e in edges):
            whole.append(hour)
        hour += HOUR
    ranges, start = [], since
    for hour in whole:
        if hour > start:
            ranges.append((start, hour))
        start = hour + HOUR
    if start < until:
        ranges.append((start, until))
    return whole, ranges


def _totals(cur, project_id, since, until, filters) -> dict:
    """{(kind, system, channel, group): findings of the window}."""
    where, params = filters.sql()
    whole, ranges = _split(since, until, buckets=False)
    cur.execute(
        _TOTALS.format(where=where, ranges=_ranges_sql(ranges)),
        [
            project_id, whole, *params,
            project_id, *(t for r in ranges for t in r), *params,
        ],
    )  # fmt: skip
    return {tuple(r[:4]): r[4] for r in cur.fetchall()}


def edge_counts(project_id, since, until) -> dict:
    """{(system, channel, group): {kind: count}} of the window: flow-edge badges."""

    class _All:
        @staticmethod
        def sql():
            return "", []

    with connection.cursor() as cur:
        totals = _totals(cur, project_id, since, until, _All())
    out: dict = {}
    for (kind, system, channel, group), count in totals.items():
        out.setdefault((system, channel, group), {})[kind] = count
    return out
