"""Failed and dead-lettered events of one project: the newest first, or grouped by
(service, channel, error) with a trend.

The list reads the partial index collector_stage_failures (project_id, time
DESC) WHERE stage IN ('failed', 'deadlettered'), so it costs the failures
shown, not the traffic; the groups read the writer's per-minute failure
rollups.
"""

import datetime as dt
from dataclasses import dataclass

from django.db import connection

from dashboard.journeys.queries import iso
from dashboard.query_params import BadParameter, decode_cursor, text_param

FAILURE_STAGES = ("failed", "deadlettered")
TREND_BUCKETS = 24


@dataclass
class Filters:
    """What the failures list is narrowed to; every field is optional."""

    since: dt.datetime
    until: dt.datetime
    service: str = ""
    channel: str = ""
    system: str = ""
    group: str = ""
    error: str = ""

    @classmethod
    def from_params(cls, params, since, until) -> "Filters":
        return cls(
            since=since,
            until=until,
            service=text_param(params, "service"),
            channel=text_param(params, "channel"),
            system=text_param(params, "system"),
            group=text_param(params, "group"),
            error=text_param(params, "error"),
        )

    def where(self, project_id: int) -> tuple[str, list]:
        clauses = [
            "project_id = %s",
            "stage IN ('failed', 'deadlettered')",
            "time >= %s",
            "time < %s",
        ]
        params: list = [project_id, self.since, self.until]
        for column, value in self._named():
            if value:
                clauses.append(f"{column} = %s")
                params.append(value)
        return " AND ".join(clauses), params

    def rollup_where(self, project_id: int) -> tuple[str, list]:
        """`where` for collector_failurerollup: whole minutes, from the one holding `since`."""
        clauses = ["project_id = %s", "minute >= %s", "minute < %s"]
        params: list = [project_id, self.since.replace(second=0, microsecond=0), self.until]
        for column, value in self._named():
            if value:
                clauses.append(f"{column} = %s")
                params.append(value)
        return " AND ".join(clauses), params

    def _named(self):
        return (
            ("service", self.service),
            ("channel", self.channel),
            ("system", self.system),
            ("consumer_group", self.group),
            ("error", self.error),
        )

    def query(self) -> dict:
        """The non-empty filters, for links and the page's live connection."""
        return {
            k: v
            for k, v in (
                ("service", self.service),
                ("channel", self.channel),
                ("system", self.system),
                ("group", self.group),
                ("error", self.error),
            )
            if v
        }


def list_cursor(params) -> list | None:
    """The `cursor` of a page of the newest-first list, checked; None for the first page."""
    cursor = decode_cursor(params)
    if cursor is not None and not (
        isinstance(cursor, list) and len(cursor) == 2 and all(isinstance(c, str) for c in cursor)
    ):
        raise BadParameter("cursor is not one this API returned")
    return cursor


def failures(
    project_id: int, filters: Filters, limit: int, after=None
) -> tuple[list[dict], list | None]:
    """Newest-first failures, and the cursor for the next page (None at the end).

    `after` is the (time, dedupe_key hex) of the last row of the previous
    page; keyset pagination stays fast on deep pages and stable while new
    failures arrive.
    """
    where, params = filters.where(project_id)
    if after is not None:
        where += " AND (time, dedupe_key) < (%s, %s)"
        params += [dt.datetime.fromisoformat(after[0]), bytes.fromhex(after[1])]
    with connection.cursor() as cursor:
        cursor.execute(
            f"""
            SELECT time, dedupe_key, event_id, event_source, trace_id, span_id, service, channel,
                   system, consumer_group, stage, error
            FROM collector_stage WHERE {where}
            ORDER BY time DESC, dedupe_key DESC LIMIT %s
            """,
            [*params, limit + 1],
        )
        rows = cursor.fetchall()
    items = [
        {
            "event_id": r[2],
            "source": r[3],
            "trace_id": bytes(r[4]).hex() if r[4] is not None else None,
            "span_id": bytes(r[5]).hex() if r[5] is not None else None,
            "service": r[6],
            "channel": r[7],
            "system": r[8],
            "group": r[9],
            "stage": r[10],
            "error": r[11],
            "time": iso(r[0]),
            "_key": (r[0].isoformat(), bytes(r[1]).hex()),
        }
        for r in rows[:limit]
    ]
    cursor_key = list(items[-1]["_key"]) if len(rows) > limit else None
    for item in items:
        del item["_key"]
    return items, cursor_key


def groups(
    project_id: int, filters: Filters, limit: int, offset: int = 0
) -> tuple[list[dict], int | None]:
    """Counts per (service, channel, system, error) with a per-bucket trend, most first.

    Read from the per-minute failure rollups the writer keeps, so a week
    costs a row per group and minute rather than a heap row per failure
    (each on its own page). The window starts at the minute holding
    `since`, as the flow graph's does. Groups are ranked and the page is
    cut in SQL: error messages that carry ids make thousands of groups.
    """
    where, params = filters.rollup_where(project_id)
    span = (filters.until - filters.since).total_seconds()
    width = max(span / TREND_BUCKETS, 1.0)
    with connection.cursor() as cursor:
        cursor.execute(
            f"""
            WITH buckets AS (
                SELECT service, channel, system, error,
                       least(greatest(floor(extract(epoch FROM minute - %s) / %s)::int, 0), %s)
                           AS bucket,
                       sum(count) AS n, sum(deadlettered) AS dead,
                       min(first_time) AS first, max(last_time) AS last
                FROM collector_failurerollup WHERE {where}
                GROUP BY 1, 2, 3, 4, 5
            )
            SELECT service, channel, system, error, sum(n) AS n, sum(dead), min(first),
                   max(last) AS last, array_agg(bucket), array_agg(n)
            FROM buckets
            GROUP BY 1, 2, 3, 4
            ORDER BY n DESC, last DESC, service, channel, system, error
            LIMIT %s OFFSET %s
            """,
            [filters.since, width, TREND_BUCKETS - 1, *params, limit + 1, offset],
        )
        rows = cursor.fetchall()
    page = []
    for service, channel, system, error, n, dead, first, last, buckets, counts in rows[:limit]:
        trend = [0] * TREND_BUCKETS
        for bucket, count in zip(buckets, counts, strict=True):
            trend[bucket] += int(count)
        page.append(
            {
                "service": service,
                "channel": channel,
                "system": system,
                "error": error,
                "count": int(n),
                "deadlettered": int(dead),
                "first": iso(first),
                "last": iso(last),
                "trend": trend,
            }
        )
    return page, (offset + limit if len(rows) > limit else None)
