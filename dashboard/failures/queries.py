"""Failed and dead-lettered events of one project: the newest first, or grouped by
(service, channel, system, consumer group, error fingerprint) with a trend.

The list reads the partial index collector_stage_failures (project_id, time
DESC) WHERE stage IN ('failed', 'deadlettered'), so it costs the failures
shown, not the traffic; the groups read the writer's per-minute failure
rollups. A failure's fingerprint is its error type and the template of its
message (collector/fingerprint.py); the type stays on the stage's span.
"""

import datetime as dt
import json
import re
from dataclasses import dataclass

from django.conf import settings
from django.db import connection

from collector import fingerprint as fingerprints
from dashboard.journeys.queries import iso
from dashboard.query_params import BadParameter, decode_cursor, text_param

FAILURE_STAGES = ("failed", "deadlettered")
TREND_BUCKETS = 30
EXAMPLES = 5
_FINGERPRINT = re.compile(r"[0-9a-f]{16}")


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
    fingerprint: str = ""

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
            fingerprint=fingerprint_param(params),
        )

    def where(self, project_id: int, alias: str = "") -> tuple[str, list]:
        """The clauses on collector_stage (called `alias` in the query, if given)."""
        a = f"{alias}." if alias else ""
        clauses = [
            f"{a}project_id = %s",
            f"{a}stage IN ('failed', 'deadlettered')",
            f"{a}time >= %s",
            f"{a}time < %s",
        ]
        params: list = [project_id, self.since, self.until]
        for column, value in self._named():
            if value:
                clauses.append(f"{a}{column} = %s")
                params.append(value)
        return " AND ".join(clauses), params

    def rollup_where(self, project_id: int) -> tuple[str, list]:
        """`where` for collector_failurerollup: whole minutes, from the one holding `since`."""
        clauses = ["project_id = %s", "minute >= %s", "minute < %s"]
        params: list = [project_id, self.since.replace(second=0, microsecond=0), self.until]
        for column, value in self._named():
            if value and column == "error":
                # Rollups hold templates; a template is its own template.
                value = fingerprints.template(value)
            if value:
                clauses.append(f"{column} = %s")
                params.append(value)
        if self.fingerprint:
            clauses.append("fingerprint = %s")
            params.append(self.fingerprint)
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
                ("fingerprint", self.fingerprint),
            )
            if v
        }


def fingerprint_param(params) -> str:
    """`fingerprint`: 16 hex characters, as the grouped API gives them ('' when absent)."""
    value = (params.get("fingerprint") or "").strip().lower()
    if value and not _FINGERPRINT.fullmatch(value):
        raise BadParameter(
            f"fingerprint={value[:40]!r} is not a failure group's fingerprint (16 hex characters)"
        )
    return value


def list_cursor(params) -> list | None:
    """The `cursor` of a page of the newest-first list, checked; None for the first page."""
    cursor = decode_cursor(params)
    if cursor is not None and not (
        isinstance(cursor, list) and len(cursor) == 2 and all(isinstance(c, str) for c in cursor)
    ):
        raise BadParameter("cursor is not one this API returned")
    return cursor


# The stage's columns, and what the fingerprint needs from its span: the error
# type (error.type, else the first exception event's type) as JSON text.
_LIST_SELECT = """
SELECT s.time, s.dedupe_key, s.event_id, s.event_source, s.trace_id, s.span_id, s.service,
       s.channel, s.system, s.consumer_group, s.stage, s.error,
       (sp.attributes -> 'error.type')::text,
       (SELECT jsonb_agg(e -> 'attributes' -> 'exception.type' ORDER BY o)
        FROM jsonb_array_elements(sp.events) WITH ORDINALITY AS x(e, o)
        WHERE e ->> 'name' = 'exception')::text
FROM collector_stage s
LEFT JOIN collector_span sp
       ON s.origin = 1 AND sp.project_id = s.project_id AND sp.trace_id = s.trace_id
      AND sp.span_id = s.span_id AND sp.start_time = s.time
"""
_SCAN = 200  # candidate rows read at a time when filtering by fingerprint


def failures(
    project_id: int, filters: Filters, limit: int, after=None
) -> tuple[list[dict], list | None]:
    """Newest-first failures, and the cursor for the next page (None at the end).

    `after` is the (time, dedupe_key hex) of the last row of the previous
    page; keyset pagination stays fast on deep pages and stable while new
    failures arrive. With a fingerprint, only the minutes in which the
    rollups counted that group are read (each holds at least one of its
    failures) and the rows are matched here, with the writer's function.
    """
    where, params = filters.where(project_id, alias="s")
    if after is not None:
        after = (dt.datetime.fromisoformat(after[0]), bytes.fromhex(after[1]))
    if not filters.fingerprint:
        rows = _stage_rows(where, params, after, limit + 1)
    else:
        rows = []
        for first, last in _group_minutes(project_id, filters, after):
            span = f"{where} AND s.time >= %s AND s.time < %s"
            span_params = [*params, first, last]
            position = after
            while len(rows) <= limit:
                batch = _stage_rows(span, span_params, position, _SCAN)
                rows += [r for r in batch if r["fingerprint"] == filters.fingerprint]
                if len(batch) < _SCAN:
                    break
                position = batch[-1]["_key"]
            if len(rows) > limit:
                break
    items = rows[:limit]
    cursor_key = None
    if len(rows) > limit:
        moment, key = items[-1]["_key"]
        cursor_key = [moment.isoformat(), key.hex()]
    for item in items:
        del item["_key"]
    return items, cursor_key


def _stage_rows(where: str, params: list, after, limit: int) -> list[dict]:
    if after is not None:
        where += " AND (s.time, s.dedupe_key) < (%s, %s)"
        params = [*params, *after]
    with connection.cursor() as cursor:
        cursor.execute(
            f"{_LIST_SELECT} WHERE {where} ORDER BY s.time DESC, s.dedupe_key DESC LIMIT %s",
            [*params, limit],
        )
        rows = cursor.fetchall()
    out = []
    for r in rows:
        error_type = _error_type(r[12], r[13])
        template, fp = fingerprints.of(r[11], error_type)
        out.append(
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
                "error_type": error_type,
                "template": template,
                "fingerprint": fp,
                "time": iso(r[0]),
                "_key": (r[0], bytes(r[1])),
            }
        )
    return out


def _error_type(attribute_json, exception_types_json) -> str:
    attribute = json.loads(attribute_json) if attribute_json is not None else None
    exceptions = json.loads(exception_types_json) if exception_types_json is not None else []
    return fingerprints.error_type(attribute, exceptions)


def _group_minutes(project_id: int, filters: Filters, after) -> list[tuple]:
    """[(start, end)] of the runs of minutes in which the rollups counted the
    filtered group, newest first, from before `after`'s minute on, within the
    retention of stored failures (older minutes have counts but no rows)."""
    where, params = filters.rollup_where(project_id)
    oldest = dt.datetime.now(dt.UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    oldest -= dt.timedelta(days=settings.RETENTION_DAYS)
    where += " AND minute >= %s"
    params.append(oldest)
    if after is not None:
        where += " AND minute <= %s"
        params.append(after[0])
    # Runs of consecutive minutes (gaps and islands) are found in SQL: a week
    # of busy minutes is ten thousand rows to send, a handful of runs.
    with connection.cursor() as cursor:
        cursor.execute(
            f"""
            SELECT min(minute), max(minute) + interval '1 minute'
            FROM (
                SELECT minute, minute - row_number() OVER (ORDER BY minute) * interval '1 minute'
                       AS island
                FROM (SELECT DISTINCT minute FROM collector_failurerollup WHERE {where}) AS m
            ) AS x
            GROUP BY island
            ORDER BY 1 DESC
            """,
            params,
        )
        runs = cursor.fetchall()
    return [(max(first, filters.since), min(last, filters.until)) for first, last in runs]


def groups(
    project_id: int, filters: Filters, limit: int, offset: int = 0
) -> tuple[list[dict], int | None]:
    """Failure groups, most first: counts per (service, channel, system, consumer
    group, fingerprint) with a trend over the whole window and a few examples.

    Read from the per-minute failure rollups the writer keeps, so a week
    costs a row per group and minute rather than a heap row per failure
    (each on its own page). The window starts at the minute holding
    `since`, as the flow graph's does, and is cut into TREND_BUCKETS equal
    parts. Groups are ranked and the page is cut in SQL; trends and examples
    are read for the page's groups only.
    """
    where, params = filters.rollup_where(project_id)
    start = filters.since.replace(second=0, microsecond=0)
    span = (filters.until - start).total_seconds()
    width = max(span / TREND_BUCKETS, 1.0)
    with connection.cursor() as cursor:
        cursor.execute(
            f"""
            SELECT group_key, service, channel, system, consumer_group, fingerprint,
                   min(error), min(error_type), sum(count) AS n, sum(deadlettered),
                   min(minute), max(minute) AS last
            FROM collector_failurerollup WHERE {where}
            GROUP BY group_key, service, channel, system, consumer_group, fingerprint
            ORDER BY n DESC, last DESC, service, channel, system, consumer_group, fingerprint
            LIMIT %s OFFSET %s
            """,
            [*params, limit + 1, offset],
        )
        fetched = cursor.fetchall()
        rows = fetched[:limit]
        trends: dict[bytes, list[int]] = {}
        examples: dict[bytes, list[tuple]] = {}
        if rows:
            keys = [bytes(r[0]) for r in rows]
            # date_part gives a double; extract() a numeric, several times slower here.
            cursor.execute(
                f"""
                SELECT group_key,
                       least(greatest(floor(date_part('epoch', minute - %s) / %s)::int, 0), %s),
                       sum(count)
                FROM collector_failurerollup
                WHERE {where} AND group_key = ANY(%s)
                GROUP BY 1, 2
                """,
                [start, width, TREND_BUCKETS - 1, *params, keys],
            )
            for key, bucket, count in cursor.fetchall():
                trends.setdefault(bytes(key), [0] * TREND_BUCKETS)[bucket] += int(count)
            # Each group's newest minutes with an example, through the
            # (project_id, group_key, minute) index: a rare group costs no scan
            # of the window. More rows than examples, as minutes may repeat one.
            cursor.execute(
                f"""
                SELECT k, r.example_error, r.example_event_id, r.example_event_source,
                       r.example_trace_id
                FROM unnest(%s::bytea[]) AS k,
                LATERAL (
                    SELECT example_error, example_event_id, example_event_source, example_trace_id
                    FROM collector_failurerollup
                    WHERE {where} AND group_key = k
                      AND (example_error IS NOT NULL OR example_event_id IS NOT NULL
                           OR example_trace_id IS NOT NULL)
                    ORDER BY minute DESC
                    LIMIT %s
                ) AS r
                """,
                [keys, *params, 3 * EXAMPLES],
            )
            for key, *example in cursor.fetchall():
                examples.setdefault(bytes(key), []).append(example)
    page = []
    for (
        key,
        service,
        channel,
        system,
        group,
        fp,
        template,
        error_type,
        n,
        dead,
        first,
        last,
    ) in rows:
        trend = trends.get(bytes(key), [0] * TREND_BUCKETS)
        example_error, events, traces = None, [], []
        for message, event_id, source, trace_id in examples.get(bytes(key), ()):
            # Newest first: the first message is the latest one.
            example_error = example_error or message
            if event_id is not None:
                events.append({"event_id": event_id, "source": source})
            if trace_id is not None:
                traces.append(bytes(trace_id).hex())
        events = _distinct(events, "event_id")[:EXAMPLES]
        page.append(
            {
                "service": service,
                "channel": channel,
                "system": system,
                "group": group,
                "fingerprint": fp,
                "error": template,
                "error_type": error_type,
                "example_error": example_error if example_error is not None else template,
                "count": int(n),
                "deadlettered": int(dead),
                "first_seen": iso(first),
                "last_seen": iso(last),
                # Names of the first release, kept for one more.
                "first": iso(first),
                "last": iso(last),
                "trend": trend,
                "examples": [e["event_id"] for e in events],
                "example_events": events,
                "example_traces": list(dict.fromkeys(traces))[:EXAMPLES],
            }
        )
    return page, (offset + limit if len(fetched) > limit else None)


def _distinct(items: list[dict], key: str) -> list[dict]:
    seen, out = set(), []
    for item in items:
        if item[key] not in seen:
            seen.add(item[key])
            out.append(item)
    return out
