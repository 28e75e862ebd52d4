"""Reads of the delivery findings: the grouped list (GET /api/findings), the
page's table per channel and consumer group, and the badges other pages show.

Findings are rows per affected event, so counts are plain `count(*)`s over a
window of event times (index on project and event time); how many events a
group handled comes from the flow rollups (hourly rows for long windows).
"""

import datetime as dt
import json
from collections import defaultdict

from django.db import connection

from dashboard.delivery.counts import TREND_BUCKETS, _ranges_sql, _split, _totals
from dashboard.flow.queries import window_rows
from dashboard.query_params import BadParameter, text_param

KINDS = ("duplicate", "missing", "late", "out_of_order", "poison")
EXAMPLES = 3


class Filters:
    def __init__(self, kind="", system="", channel="", group=""):
        self.kind, self.system, self.channel, self.group = kind, system, channel, group

    @classmethod
    def from_params(cls, params) -> "Filters":
        kind = text_param(params, "kind")
        if kind and kind not in KINDS:
            raise BadParameter(f"kind={kind!r}: expected one of {', '.join(KINDS)}")
        return cls(
            kind, text_param(params, "system"), text_param(params, "channel"),
            text_param(params, "group"),
        )  # fmt: skip

    def sql(self) -> tuple[str, list]:
        parts, params = [], []
        for column, value in (
            ("kind", self.kind), ("system", self.system), ("channel", self.channel),
            ("consumer_group", self.group),
        ):  # fmt: skip
            if value:
                parts.append(f" AND {column} = %s")
                params.append(value)
        return "".join(parts), params

    def query(self) -> dict:
        return {
            k: v
            for k, v in (
                ("kind", self.kind),
                ("system", self.system),
                ("channel", self.channel),
                ("group", self.group),
            )  # fmt: skip
            if v
        }


def _rfc3339(moment):
    return moment.astimezone(dt.UTC).isoformat().replace("+00:00", "Z") if moment else None


def _example(row: dict) -> dict:
    out = {
        "event_id": row.get("event_id"),
        "source": row.get("event_source"),
        "trace_id": row.get("trace_id"),
        "time": row.get("event_time"),
        "spans": row.get("examples") or [],
    }
    kind = row.get("kind")
    if kind == "duplicate":
        out["successes"] = row.get("successes")
    elif kind == "poison":
        out.update(
            attempts=row.get("failures"),
            retry_ms=row.get("retry_ms"),
            deadlettered=row.get("deadlettered"),
        )
    elif kind == "late":
        out["delay_ms"] = row.get("delay_ms")
    elif kind == "out_of_order":
        out["ordering_key"] = row.get("ordering_key")
        spans = out["spans"]
        out["spans"], out["overtook"] = spans[:1], spans[1:]
    return out


_EXAMPLE_JSON = """jsonb_build_object(
    'kind', f.kind, 'event_id', f.event_id, 'event_source', f.event_source,
    'trace_id', f.trace_id, 'event_time', f.event_time, 'examples', f.examples,
    'successes', f.successes, 'failures', f.failures, 'retry_ms', f.retry_ms,
    'deadlettered', f.deadlettered, 'delay_ms', f.delay_ms, 'ordering_key', f.ordering_key)"""

# The newest findings (at most %s) of each listed (kind, system, channel,
# group), an index probe each; the lists are four arrays, then the project
# and the window.
_NEWEST_EXAMPLES = """FROM unnest(%s::text[], %s::text[], %s::text[], %s::text[]) WITH ORDINALITY
     AS k(kind, system, channel, grp, i)
CROSS JOIN LATERAL (
    SELECT * FROM delivery_finding f
    WHERE f.project_id = %s AND f.kind = k.kind AND f.system = k.system
      AND f.channel = k.channel AND f.consumer_group = k.grp
      AND f.event_time >= %s AND f.event_time < %s
    ORDER BY f.event_time DESC LIMIT %s) AS f"""

# Groups first (counts only: whole hours from the hourly counts, the ragged
# ends from the findings), then each listed group's newest examples and its
# first event through the (project, kind, system, channel, group,
# event_time) index.
_GROUP_PROBES = f"""
SELECT 'example', k.i, f.event_time, {_EXAMPLE_JSON}
{_NEWEST_EXAMPLES}
UNION ALL
SELECT 'first', k.i, f.event_time, NULL
FROM unnest(%s::text[], %s::text[], %s::text[], %s::text[]) WITH ORDINALITY
     AS k(kind, system, channel, grp, i)
CROSS JOIN LATERAL (
    SELECT f.event_time FROM delivery_finding f
    WHERE f.project_id = %s AND f.kind = k.kind AND f.system = k.system
      AND f.channel = k.channel AND f.consumer_group = k.grp
      AND f.event_time >= %s AND f.event_time < %s
    ORDER BY f.event_time LIMIT 1) AS f
"""


def grouped(project_id, since, until, filters: Filters, limit=50, offset=0):
    """Items of GET /api/findings and the next offset (None at the end)."""
    with connection.cursor() as cur:
        totals = _totals(cur, project_id, since, until, filters)
        ordered = sorted(totals, key=lambda k: (-totals[k], k))[offset : offset + limit + 1]
        listed = ordered[:limit]
        probes = []
        if listed:
            keys = [list(c) for c in zip(*listed, strict=True)]
            cur.execute(
                _GROUP_PROBES,
                [
                    *keys, project_id, since, until, EXAMPLES,
                    *keys, project_id, since, until,
                ],
            )  # fmt: skip
            probes = cur.fetchall()
    examples: dict = defaultdict(list)
    first: dict = {}
    for what, i, when, found in probes:
        if what == "example":
            examples[i - 1].append((when, _json(found)))
        else:
            first[i - 1] = when
    items = []
    for i, (kind, system, channel, group) in enumerate(listed):
        found = sorted(examples[i], key=lambda e: e[0], reverse=True)
        items.append(
            {
                "kind": kind,
                "system": system,
                "channel": channel,
                "group": group,
                "count": totals[(kind, system, channel, group)],
                "first_seen": _rfc3339(first.get(i)),
                "last_seen": _rfc3339(found[0][0] if found else None),
                "examples": [_example(e) for _, e in found],
            }
        )
    return items, (offset + limit if len(ordered) > limit else None)


def _consumed(cur, project_id, since, until) -> dict:
    """{(system, channel, group): {"service", "handled", "successes", "failures"}}
    from the consume edges of the window (their counts only, not the
    histograms)."""
    rows_sql, params = window_rows(
        cur, project_id, since, until, "AND kind = 'consume'",
        columns="source, target, consumer_group, count, errors",
    )  # fmt: skip
    cur.execute(
        f"SELECT source, target, consumer_group, sum(count), sum(errors) FROM ({rows_sql}) r "
        "GROUP BY source, target, consumer_group",
        params,
    )
    out = {}
    for source, target, group, count, errors in cur.fetchall():
        _, _, rest = source.partition(":")
        system, _, channel = rest.partition(":")
        service = target.partition(":")[2]
        key = (system, channel, group or service)
        row = out.setdefault(key, {"service": service, "handled": 0, "successes": 0, "failures": 0})
        row["handled"] += int(count or 0)
        row["successes"] += int(count or 0) - int(errors or 0)
        row["failures"] += int(errors or 0)
    return out


# Findings of the window per group, kind and trend bucket, with no
# timestamps handed back (the oldest missing event and the examples are read
# afterwards, through the group index, for the groups shown). Hours that lie
# whole inside one trend bucket come from the hourly counts the database keeps
# (migration 0002_finding_hours); the rest of the window from the findings.
_BUCKET = "least(floor(date_part('epoch', {column} - %s) / %s)::int, %s)"
_COUNTS = f"""
SELECT system, channel, consumer_group, kind, b, sum(n)::bigint, sum(extra)::bigint FROM (
    SELECT system, channel, consumer_group, kind, {_BUCKET.format(column="hour")} AS b,
           count AS n, extra
    FROM delivery_findinghour
    WHERE project_id = %s AND hour = ANY(%s::timestamptz[]) {{where}}
    UNION ALL
    SELECT system, channel, consumer_group, kind, {_BUCKET.format(column="event_time")},
           1, greatest(successes - 1, 0)
    FROM delivery_finding WHERE project_id = %s AND ({{ranges}}) {{where}}
) AS r
GROUP BY 1, 2, 3, 4, 5
"""


def _counts(cur, project_id, since, until, filters: "Filters") -> list:
    """(system, channel, group, kind, bucket, count, extra duplicate successes) rows."""
    where, params = filters.sql()
    span = (until - since).total_seconds() / TREND_BUCKETS
    whole, ranges = _split(since, until)
    bucket = [since, span, TREND_BUCKETS - 1]
    cur.execute(
        _COUNTS.format(
            where=where,
            ranges=_ranges_sql(ranges),
        ),
        [
            *bucket, project_id, whole, *params,
            *bucket, project_id, *(t for r in ranges for t in r), *params,
        ],
    )  # fmt: skip
    return cur.fetchall()


# The newest examples of the listed (kind, system, channel, group)s and the
# oldest missing event of the listed groups: an index probe each.
_PROBES = f"""
SELECT 'example', k.i, {_EXAMPLE_JSON}
{_NEWEST_EXAMPLES}
UNION ALL
SELECT 'oldest', k.i, {_EXAMPLE_JSON}
FROM unnest(%s::text[], %s::text[], %s::text[]) WITH ORDINALITY AS k(system, channel, grp, i)
CROSS JOIN LATERAL (
    SELECT * FROM delivery_finding f
    WHERE f.project_id = %s AND f.kind = 'missing' AND f.system = k.system
      AND f.channel = k.channel AND f.consumer_group = k.grp
      AND f.event_time >= %s AND f.event_time < %s
    ORDER BY f.event_time LIMIT 1) AS f
"""


def _json(value):
    return json.loads(value) if isinstance(value, str) else value  # jsonb through Django


def overview(project_id, since, until, filters: Filters | None = None, limit=30):
    """What the Delivery page shows: (rows, groups).

    rows: one per (system, channel, group) consumed or with findings in the
    window: events handled, delivered once, each kind's count and share of
    the events, a trend per kind, and the oldest missing event (`oldest`).
    groups: the `limit` largest (kind, system, channel, group)s as
    GET /api/findings lists them first, with their newest examples.
    """
    filters = filters or Filters()
    with connection.cursor() as cur:
        consumed = _consumed(cur, project_id, since, until) if not filters.kind else {}
        counted = _counts(cur, project_id, since, until, filters)
        cur.execute(
            "SELECT id, system, channel, consumer_group FROM delivery_expectation "
            "WHERE project_id = %s AND retired_at IS NULL",
            [project_id],
        )
        expected = {(r[1], r[2], r[3]): r[0] for r in cur.fetchall()}
        rows = _rows(consumed, counted, expected, filters)
        totals: dict = {}
        for system, channel, group, kind, _, count, _ in counted:
            key = (kind, system, channel, group)
            totals[key] = totals.get(key, 0) + count
        listed = sorted(totals, key=lambda k: (-totals[k], k))[:limit]
        missing = [(r["system"], r["channel"], r["group"]) for r in rows if r["counts"]["missing"]]
        probes = []
        if listed or missing:
            cur.execute(
                _PROBES,
                [
                    *([list(c) for c in zip(*listed, strict=True)] if listed else [[]] * 4),
                    project_id, since, until, EXAMPLES,
                    *([list(c) for c in zip(*missing, strict=True)] if missing else [[]] * 3),
                    project_id, since, until,
                ],
            )  # fmt: skip
            probes = cur.fetchall()
    examples: dict = defaultdict(list)
    oldest = {}
    for what, i, found in probes:
        found = _json(found)
        if what == "example":
            examples[i - 1].append(found)
        else:
            oldest[missing[i - 1]] = found
    for row in rows:
        found = oldest.get((row["system"], row["channel"], row["group"]))
        row["oldest"] = (
            {"event_id": found["event_id"], "source": found["event_source"],
             "trace_id": found["trace_id"], "time": found["event_time"]}
            if found else None
        )  # fmt: skip
    groups = []
    for i, (kind, system, channel, group) in enumerate(listed):
        found = sorted(examples[i], key=lambda e: e["event_time"], reverse=True)
        groups.append(
            {
                "kind": kind, "system": system, "channel": channel, "group": group,
                "count": totals[(kind, system, channel, group)],
                "examples": [_example(e) for e in found],
            }
        )  # fmt: skip
    return rows, groups


def _rows(consumed: dict, counted: list, expected: dict, filters: Filters) -> list[dict]:
    rows: dict = {}

    def row_of(key):
        if key not in rows:
            rows[key] = {
                "system": key[0], "channel": key[1], "group": key[2], "service": "",
                "handled": 0, "successes": 0, "extra": 0,
                "expected": key in expected, "expectation_id": expected.get(key),
                "counts": dict.fromkeys(KINDS, 0),
                "trend": {k: [0] * TREND_BUCKETS for k in KINDS},
            }  # fmt: skip
        return rows[key]

    for key, sums in consumed.items():
        if filters.system and key[0] != filters.system:
            continue
        if filters.channel and key[1] != filters.channel:
            continue
        if filters.group and key[2] != filters.group:
            continue
        row = row_of(key)
        row.update(service=sums["service"], handled=sums["handled"])
        row["successes"] = sums["successes"]
    for system, channel, group, kind, bucket, count, extra in counted:
        row = row_of((system, channel, group))
        row["counts"][kind] += count
        row["trend"][kind][max(bucket, 0)] += count
        if kind == "duplicate":
            row["extra"] += int(extra or 0)
    out = []
    for row in rows.values():
        counts = row["counts"]
        distinct = max(row["successes"] - row["extra"], 0)
        row["delivered_once"] = max(distinct - counts["duplicate"], 0)
        events = distinct + counts["missing"]
        row["events"] = events
        row["rates"] = {k: (counts[k] / events if events else 0.0) for k in KINDS}
        out.append(row)
    out.sort(key=lambda r: (r["system"], r["channel"], r["group"]))
    return out


def for_traces(project_id, trace_ids: list[str]) -> list[dict]:
    """Findings of the events published in these traces (hex ids): journey badges."""
    if not trace_ids:
        return []
    with connection.cursor() as cur:
        cur.execute(
            "SELECT kind, system, channel, consumer_group, event_id, trace_id "
            "FROM delivery_finding WHERE project_id = %s AND trace_id = ANY(%s) "
            "ORDER BY kind, channel, consumer_group",
            [project_id, trace_ids],
        )
        cols = ("kind", "system", "channel", "group", "event_id", "trace_id")
        return [dict(zip(cols, r, strict=True)) for r in cur.fetchall()]


def for_events(project_id, event_ids: list[str]) -> list[dict]:
    """Findings of events by their ids: badges on an event's journey."""
    if not event_ids:
        return []
    with connection.cursor() as cur:
        cur.execute(
            "SELECT kind, system, channel, consumer_group, event_id, trace_id "
            "FROM delivery_finding WHERE project_id = %s AND event_id = ANY(%s) "
            "ORDER BY kind, channel, consumer_group",
            [project_id, event_ids],
        )
        cols = ("kind", "system", "channel", "group", "event_id", "trace_id")
        return [dict(zip(cols, r, strict=True)) for r in cur.fetchall()]
