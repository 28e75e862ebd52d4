"""Failed and dead-lettered events of one project: the newest first, or grouped by
(service, channel, error) with a trend.

Both read the partial index collector_stage_failures (project_id, time DESC)
WHERE stage IN ('failed', 'deadlettered'), so they cost the failures in the
window, not the traffic.
"""

import datetime as dt
from dataclasses import dataclass

from django.db import connection

from dashboard.journeys import iso
from dashboard.query_params import text_param

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
        for column, value in (
            ("service", self.service),
            ("channel", self.channel),
            ("system", self.system),
            ("consumer_group", self.group),
            ("error", self.error),
        ):
            if value:
                clauses.append(f"{column} = %s")
                params.append(value)
        return " AND ".join(clauses), params

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

    Error messages that carry ids make thousands of distinct groups, so the
    ordering and the page are cut in SQL and only the page's groups are read
    again for their trend: the cost is one aggregate over the window's
    failures plus one pass over the page's, not every (group, bucket) row.
    """
    where, params = filters.where(project_id)
    with connection.cursor() as cursor:
        cursor.execute(
            f"""
            SELECT service, channel, system, coalesce(error, '') AS error, count(*) AS n,
                   count(*) FILTER (WHERE stage = 'deadlettered'), min(time), max(time) AS last
            FROM collector_stage WHERE {where}
            GROUP BY 1, 2, 3, 4
            ORDER BY n DESC, last DESC, service, channel, system, error
            LIMIT %s OFFSET %s
            """,
            [*params, limit + 1, offset],
        )
        rows = cursor.fetchall()
        page = [
            {
                "service": service,
                "channel": channel,
                "system": system,
                "error": error,
                "count": n,
                "deadlettered": dead,
                "first": iso(first),
                "last": iso(last),
                "trend": [0] * TREND_BUCKETS,
            }
            for service, channel, system, error, n, dead, first, last in rows[:limit]
        ]
        if page:
            _add_trends(cursor, page, filters, where, params)
    return page, (offset + limit if len(rows) > limit else None)


def _add_trends(cursor, page: list[dict], filters: Filters, where: str, params: list) -> None:
    """Fill each group's trend: failures per bucket of the window, for these groups only."""
    span = (filters.until - filters.since).total_seconds()
    width = max(span / TREND_BUCKETS, 1.0)
    keys = [[g[k] for g in page] for k in ("service", "channel", "system", "error")]
    cursor.execute(
        f"""
        SELECT service, channel, system, coalesce(error, ''),
               least(greatest(floor(extract(epoch FROM time - %s) / %s)::int, 0), %s), count(*)
        FROM collector_stage
        WHERE {where}
          AND (service, channel, system, coalesce(error, '')) IN (
              SELECT * FROM unnest(%s::text[], %s::text[], %s::text[], %s::text[]))
        GROUP BY 1, 2, 3, 4, 5
        """,
        [filters.since, width, TREND_BUCKETS - 1, *params, *keys],
    )
    by_key = {(g["service"], g["channel"], g["system"], g["error"]): g for g in page}
    for service, channel, system, error, bucket, n in cursor.fetchall():
        by_key[(service, channel, system, error)]["trend"][bucket] += n
