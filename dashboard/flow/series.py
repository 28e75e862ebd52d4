"""One edge's or node's figures over time (GET /api/flow/series, the detail
panel of the flow page): throughput, errors and latency percentiles per
bucket, and for consume edges the group's lag.

The bucket follows the window so a week stays cheap: a minute up to an
hour, 5 minutes up to 6 h, 15 minutes up to a day, an hour up to a week
(whole compacted hours come from the hourly rollups then, as for the graph).
Percentiles come from the summed fixed-bucket histograms of each bucket.
"""

import datetime as dt

from django.db import connection

from collector import histogram
from dashboard.flow.queries import KINDS, parse_node, window_rows
from dashboard.lag.edges import GROUPLESS
from dashboard.query_params import BadParameter, text_param

# (longest window, bucket seconds); past the last, hours enough for ~170 points.
STEPS = (
    (dt.timedelta(hours=1), 60),
    (dt.timedelta(hours=6), 300),
    (dt.timedelta(hours=24), 900),
    (dt.timedelta(days=7), 3600),
)
MAX_POINTS = 170


def step_seconds(since: dt.datetime, until: dt.datetime) -> int:
    span = until - since
    for longest, step in STEPS:
        if span <= longest:
            return step
    hours = -(-span.total_seconds() // (MAX_POINTS * 3600))
    return int(hours) * 3600


def _bucket_sums(column: str) -> str:
    return ", ".join(f"sum({column}[{i}])" for i in range(1, histogram.SIZE + 1))


SERIES_SQL = f"""
SELECT date_bin(make_interval(secs => %s), t, TIMESTAMPTZ 'epoch') AS b,
       sum(count), sum(received),
       sum(CASE WHEN kind = 'consume' THEN greatest(count, received) ELSE count END),
       sum(errors), {_bucket_sums("duration_hist")}, {_bucket_sums("e2e_hist")}
FROM ({{rows}}) AS r
GROUP BY b ORDER BY b
"""

LAG_SQL = """
SELECT b, sum(lag)::bigint, max(lag_seconds)
FROM (
    SELECT date_bin(make_interval(secs => %s), time, TIMESTAMPTZ 'epoch') AS b,
           namespace, consumer_group, partition, max(lag) AS lag, max(lag_seconds) AS lag_seconds
    FROM brokers_lagsample
    WHERE project_id = %s AND system = %s AND channel = %s
      AND (consumer_group = %s OR (consumer_group = '' AND %s))
      AND time >= %s AND time < %s
    GROUP BY 1, 2, 3, 4
) AS per_partition
GROUP BY b
"""


def _rfc3339(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")


def _round(value):
    return None if value is None else round(value, 3)


def _lag(cursor, project_id, edge, step, since, until) -> dict:
    """{bucket start: (messages, seconds)} of a consume edge's group."""
    channel = parse_node(edge[0])
    cursor.execute(
        LAG_SQL,
        [
            step, project_id, channel["system"], channel["name"], edge[3],
            channel["system"] in GROUPLESS, since, until,
        ],
    )  # fmt: skip
    return {b: (lag, seconds) for b, lag, seconds in cursor.fetchall()}


def flow_series(
    project_id: int,
    since: dt.datetime,
    until: dt.datetime,
    *,
    edge: tuple[str, str, str, str] | None = None,
    node: str | None = None,
) -> dict:
    """{"step_s", "points", "histogram"} of one edge (source, target, kind,
    group) or one node.

    A node's figures are those of the edges into it (what it consumes, the
    calls it serves, what is published to a channel); a node nothing flows
    into (a service that only publishes) takes the edges out of it. Every
    bucket of the window is a point (zero where nothing happened), so the
    points' counts add up to the edge's count in GET /api/flow for the same
    window. Consume edges add `lag`/`lag_seconds` per point where the
    broker pollers or metrics knew it.
    """
    step = step_seconds(since, until)
    since_minute = since.replace(second=0, microsecond=0)
    # Hour-sized buckets can take whole hours from the hourly rollups.
    hours_from = dt.timedelta(0) if step % 3600 == 0 else dt.timedelta.max
    if edge is not None:
        filters = [("AND source = %s AND target = %s AND kind = %s AND consumer_group = %s", edge)]
    else:
        filters = [("AND target = %s", (node,)), ("AND source = %s", (node,))]
    rows, lag = [], {}
    with connection.cursor() as cursor:
        for where, params in filters:
            rows_sql, rows_params = window_rows(
                cursor, project_id, since_minute, until, where, params, hours_from
            )
            cursor.execute(SERIES_SQL.format(rows=rows_sql), [step, *rows_params])
            rows = cursor.fetchall()
            if rows:
                break
        consume = edge is not None and edge[2] == "consume"
        if consume:
            lag = _lag(cursor, project_id, edge, step, since_minute, until)
    size = histogram.SIZE
    # A consume edge is shown with its outcomes or its receipts, whichever is
    # larger over the window (as GET /api/flow); a node sums each edge's.
    column = 3
    if edge is not None:
        column = 2 if consume and sum(r[2] or 0 for r in rows) > sum(r[1] or 0 for r in rows) else 1
    by_bucket = {row[0]: row for row in rows}
    durations_total, e2e_total = histogram.empty(), histogram.empty()
    points = []
    step_delta = dt.timedelta(seconds=step)
    epoch = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
    bucket = epoch + (since_minute - epoch) // step_delta * step_delta
    while bucket < until:
        row = by_bucket.get(bucket)
        durations = [int(v or 0) for v in row[5 : 5 + size]] if row else []
        e2e = [int(v or 0) for v in row[5 + size : 5 + 2 * size]] if row else []
        histogram.add(durations_total, durations)
        histogram.add(e2e_total, e2e)
        point = {
            "t": _rfc3339(bucket),
            "count": int(row[column] or 0) if row else 0,
            "errors": int(row[4] or 0) if row else 0,
            "p50_ms": _round(histogram.percentile(durations, 0.5)),
            "p95_ms": _round(histogram.percentile(durations, 0.95)),
            "e2e_p95_ms": _round(histogram.percentile(e2e, 0.95)),
        }
        if consume:
            messages, seconds = lag.get(bucket, (None, None))
            point["lag"] = None if messages is None else int(messages)
            point["lag_seconds"] = _round(seconds)
        points.append(point)
        bucket += step_delta
    return {
        "since": since_minute,
        "until": until,
        "step_s": step,
        "points": points,
        "histogram": {
            "bounds_ms": list(histogram.BOUNDS_MS),
            "duration": durations_total,
            "e2e": e2e_total,
        },
    }


def parse_subject(params) -> dict:
    """{"edge": (source, target, kind, group)} or {"node": id} from the query
    string; BadParameter says what is missing or wrong."""
    node = text_param(params, "node", 2000)
    source, target = text_param(params, "source", 2000), text_param(params, "target", 2000)
    kind, group = text_param(params, "kind"), text_param(params, "group", 2000)
    if node:
        if source or target or kind or group:
            raise BadParameter("give either node or source/target/kind/group, not both")
        return {"node": node}
    if not (source and target and kind):
        raise BadParameter("give node=<id>, or source, target and kind (and group) of an edge")
    if kind not in KINDS:
        raise BadParameter(f"kind={kind!r}: expected one of {', '.join(KINDS)}")
    return {"edge": (source, target, kind, group)}
