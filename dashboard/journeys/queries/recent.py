"""Recent traces, newest first (what the search page lists when its box is empty).

A trace is listed at the time of its newest row that passes the filters.
The rows are root spans (a span without a parent starts a trace) and
messaging stages, never all spans: only root spans are indexed by time (a
partial BRIN, so storing the other spans costs nothing more):

- no filter: root spans, and the stages reported as CloudEvents (so
  journeys without spans are listed too);
- `service`: root spans of that service and its stages;
- `channel` (with `system` optional): stages on that channel;
- `status=error`: root spans with error status and failed or dead-lettered
  stages (and the other filters on each).

So a trace whose only error is an inner span that is no messaging stage is
not among `status=error`, and a service that only has inner spans (no root,
no messaging) is not among `service=`; search by id finds them.

Rows are read newest first in growing slices of time (5 minutes, then as
much wider as the slice before fell short of a page, at most 12 times, up to
the whole window) through the BRIN indexes on the start times of root spans
and the times of stages, so the first page of a busy project reads minutes
of rows, not the window. A trace with several matching rows appears once, at
its newest. Its figures (spans, errors, duration, services) count its rows
within a day of that time, so a page reads two or three day partitions.
"""

import dataclasses
import datetime as dt

from dashboard.journeys.queries.rows import _rows, iso
from dashboard.query_params import BadParameter, text_param

FIRST_SLICE = dt.timedelta(minutes=5)
GROW_EMPTY = 12  # how much wider the next slice is after an empty one (at most)
DAY = dt.timedelta(days=1)
STATUSES = ("", "error")


@dataclasses.dataclass(frozen=True)
class Filters:
    service: str = ""
    channel: str = ""
    system: str = ""
    status: str = ""

    @classmethod
    def from_params(cls, params) -> "Filters":
        status = text_param(params, "status", 20)
        if status not in STATUSES:
            raise BadParameter(f"status={status!r}: the only status filter is 'error'")
        system = text_param(params, "system", 200)
        channel = text_param(params, "channel", 1000)
        if system and not channel:
            raise BadParameter("system filters a channel: give channel= too")
        return cls(text_param(params, "service", 1000), channel, system, status)

    @property
    def active(self) -> bool:
        return bool(self.service or self.channel or self.status)


def _sources(filters: Filters) -> list[tuple[str, str, str]]:
    """(table, time column, conditions on its rows) of each kind of row that
    places a trace, for the filters."""
    span = ["parent_span_id IS NULL"]  # the partial BRIN's predicate
    stage = ["trace_id IS NOT NULL"]
    if filters.service:
        span.append("service = %(service)s")
        stage.append("service = %(service)s")
    if filters.channel:
        stage.append("channel = %(channel)s")
        if filters.system:
            stage.append("system = %(system)s")
    if filters.status == "error":
        span.append("status_code = 2")
        stage.append("stage IN ('failed', 'deadlettered')")
    if not filters.active:
        stage.append("origin <> 1")  # CloudEvents: a span-derived stage has its root span
    sources = [("collector_stage", "time", " AND ".join(stage))]
    if not filters.channel:
        sources.insert(0, ("collector_span", "start_time", " AND ".join(span)))
    return sources


def _candidates(project_id, filters, since, high, until, cursor, limit) -> list[dict]:
    """Traces with matching rows in [since, high), at their newest, newest first.

    Rows are grouped by trace within the slice; on later pages a trace whose
    newest matching row lies at or after `high` was listed before, which one
    probe of the trace's index per listed trace finds (the first page has
    nothing after it)."""
    sources = _sources(filters)
    rows = " UNION ALL ".join(
        f"""SELECT r.trace_id, r.{column} AS time FROM {table} r
            WHERE r.project_id = %(p)s AND r.{column} >= %(since)s AND r.{column} < %(high)s
              AND {conditions}"""
        for table, column, conditions in sources
    )
    # Unqualified columns in the conditions name the innermost table: x here.
    later = "".join(
        f"""
          AND NOT EXISTS (
              SELECT 1 FROM {table} x
              WHERE x.project_id = %(p)s AND x.trace_id = g.trace_id
                AND x.{column} >= %(high)s AND x.{column} < %(until)s
                AND {conditions})"""
        for table, column, conditions in (sources if cursor else ())
    )
    sql = f"""
        SELECT g.trace_id, g.time FROM (
            SELECT trace_id, max(time) AS time FROM ({rows}) AS r GROUP BY trace_id
        ) AS g
        WHERE (%(ct)s::timestamptz IS NULL OR (g.time, g.trace_id) < (%(ct)s, %(cid)s::bytea)){later}
        ORDER BY g.time DESC, g.trace_id DESC
        LIMIT %(n)s
    """
    params = {
        "p": project_id,
        "since": since,
        "high": high,
        "until": until,
        "service": filters.service,
        "channel": filters.channel,
        "system": filters.system,
        "ct": cursor[0] if cursor else None,
        "cid": cursor[1] if cursor else None,
        "n": limit,
    }
    return _rows(sql, params)


def parse_cursor(cursor) -> tuple[dt.datetime, bytes] | None:
    if cursor is None:
        return None
    try:
        moment, trace_hex = cursor
        return dt.datetime.fromisoformat(moment.replace("Z", "+00:00")), bytes.fromhex(trace_hex)
    except (TypeError, ValueError, AttributeError):
        raise BadParameter("cursor is not one this API returned") from None


def recent(project_id, filters: Filters, since, until, limit: int, cursor=None):
    """(traces newest first with their figures, the cursor of the next page or None)."""
    high = min(until, cursor[0] + dt.timedelta(microseconds=1)) if cursor else until
    rows: list[dict] = []
    width = FIRST_SLICE
    while True:
        low = max(since, high - width)
        rows = _candidates(project_id, filters, low, high, until, cursor, limit + 1)
        if len(rows) > limit or low == since:
            break
        # Widen by what the slice held: enough for a page, with a margin.
        grow = GROW_EMPTY if not rows else (limit + 1) / len(rows) * 1.5
        width *= min(max(grow, 2), GROW_EMPTY)
    page = rows[:limit]
    following = (
        [iso(page[-1]["time"]), bytes(page[-1]["trace_id"]).hex()] if len(rows) > limit else None
    )
    return _summaries(project_id, page), following


def _summaries(project_id: int, page: list[dict]) -> list[dict]:
    """Each listed trace as a search result shows it: root, duration, spans,
    errors, services and channels."""
    if not page:
        return []
    ids = [bytes(r["trace_id"]) for r in page]
    bounds = (min(r["time"] for r in page) - DAY, max(r["time"] for r in page) + DAY)
    spans = {
        bytes(r["trace_id"]): r
        for r in _rows(
            """
            SELECT trace_id, count(*) AS spans, count(*) FILTER (WHERE status_code = 2) AS errors,
                   min(start_time) AS start,
                   max(start_time + duration_ns / 1000 * interval '1 microsecond') AS end_time,
                   array_agg(DISTINCT service ORDER BY service) AS services,
                   (array_agg(service ORDER BY parent_span_id IS NOT NULL, start_time))[1]
                       AS root_service,
                   (array_agg(name ORDER BY parent_span_id IS NOT NULL, start_time))[1] AS root_name
            FROM collector_span WHERE project_id = %s AND trace_id = ANY(%s)
              AND start_time >= %s AND start_time < %s
            GROUP BY trace_id
            """,
            [project_id, ids, *bounds],
        )
    }
    stages = {
        bytes(r["trace_id"]): r
        for r in _rows(
            """
            SELECT trace_id, count(*) AS stages,
                   count(*) FILTER (WHERE stage IN ('failed', 'deadlettered')) AS failed,
                   min(time) AS start, max(time) AS end_time,
                   array_agg(DISTINCT service ORDER BY service) AS services,
                   array_agg(DISTINCT channel ORDER BY channel) FILTER (WHERE channel <> '')
                       AS channels
            FROM collector_stage WHERE project_id = %s AND trace_id = ANY(%s)
              AND time >= %s AND time < %s
            GROUP BY trace_id
            """,
            [project_id, ids, *bounds],
        )
    }
    items = []
    for row in page:
        key = bytes(row["trace_id"])
        span, stage = spans.get(key), stages.get(key)
        starts = [x["start"] for x in (span, stage) if x]
        ends = [x["end_time"] for x in (span, stage) if x]
        start, end = (min(starts), max(ends)) if starts else (row["time"], row["time"])
        items.append(
            {
                "trace_id": key.hex(),
                "time": iso(row["time"]),
                "start": iso(start),
                "duration_ms": (end - start).total_seconds() * 1000,
                "root_service": span["root_service"] if span else None,
                "root_name": span["root_name"] if span else None,
                "spans": span["spans"] if span else 0,
                "errors": span["errors"] if span else 0,
                "stages": stage["stages"] if stage else 0,
                "failed_stages": stage["failed"] if stage else 0,
                "services": sorted(
                    {*(span or {}).get("services", ()), *(stage or {}).get("services", ())}
                ),  # fmt: skip
                "channels": (stage or {}).get("channels") or [],
            }
        )
    return items
