"""The flow graph of one project over a time window, read from the per-minute rollups.

Nodes are services and channels; edges are publishes (service → channel),
consumes (channel → service, one per consumer group, with the group's
present lag) and calls (service → service). One indexed range scan over collector_flowrollup sums every edge:
counts with sum(), histograms bucket by bucket (`sum(duration_hist[i])` for
each fixed bucket, a single pass with no unnest), and the percentiles come
from the summed histograms.
"""

import datetime as dt

from django.db import connection

from collector import histogram
from collector.brokers import topology
from dashboard.delivery import badges as delivery_badges
from dashboard.flow import hours as flowhours
from dashboard.lag.edges import lag_for_edges

KINDS = ("publish", "consume", "call", "dead_letter")
DEFAULT_EDGES = 500
MAX_EDGES = 2000


def _bucket_sums(column: str) -> str:
    # SQL arrays are 1-based; the bucket count is fixed (collector.histogram).
    return ", ".join(f"sum({column}[{i}])" for i in range(1, histogram.SIZE + 1))


# Per edge: the sums, and the first and last row with data of each table
# (plain aggregates: sorting every edge's rows to find them costs more than
# the sums).
_SUMS = f"""sum(count), sum(received), sum(errors), sum(deadlettered), sum(retries),
       min(t) FILTER (WHERE NOT hourly), max(t) FILTER (WHERE NOT hourly),
       min(t) FILTER (WHERE hourly), max(t) FILTER (WHERE hourly),
       {_bucket_sums("duration_hist")},
       {_bucket_sums("e2e_hist")}"""

# The count an edge is shown with (and ranked by): a consume edge counts
# receipts too, so a consumer that only reports receives still shows its traffic.
_SHOWN = "CASE WHEN kind = 'consume' THEN greatest(sum(count), sum(received)) ELSE sum(count) END"
_BUSIEST = f"ORDER BY {_SHOWN} DESC, source, target, kind, consumer_group LIMIT %s"

_COLUMNS = """source, target, kind, consumer_group, count, received, errors, deadlettered,
           retries, duration_hist, e2e_hist"""

# Rows of one window: minute rows only, or whole hours from the hourly table
# and the ragged ends from the minute rows. `t` is the row's minute or hour,
# `hourly` says which. {where} narrows both (an edge, a node).
MINUTE_ROWS = """
    SELECT minute AS t, false AS hourly, {columns}
    FROM collector_flowrollup
    WHERE project_id = %s AND minute >= %s AND minute < %s {where}
"""
MIXED_ROWS = """
    SELECT hour AS t, true AS hourly, {columns}
    FROM dashboard_flowhour WHERE project_id = %s AND hour >= %s AND hour < %s {where}
    UNION ALL
    SELECT minute AS t, false AS hourly, {columns}
    FROM collector_flowrollup
    WHERE project_id = %s AND ((minute >= %s AND minute < %s) OR (minute >= %s AND minute < %s))
      {where}
"""

GRAPH_SQL = f"""
SELECT source, target, kind, consumer_group, {_SUMS}
FROM ({{rows}}) AS r
GROUP BY source, target, kind, consumer_group
{_BUSIEST}
"""

# Below this, minute rows are cheap enough and the hourly table is not consulted.
HOURS_FROM = dt.timedelta(hours=3)
# rate_now_per_s: the count over this long before now, divided by its seconds.
NOW_SPAN = dt.timedelta(minutes=5)


def parse_node(node_id: str) -> dict:
    """{"id", "kind", "name", "system", "label"} of a node id (service:<name>,
    channel:<system>:<name>). `label` is the name a person reads: a channel
    named by URL or ARN (SQS queue URLs, SNS topic ARNs) is labelled with its
    last part."""
    kind, _, rest = node_id.partition(":")
    if kind == "channel":
        system, _, name = rest.partition(":")
        return {"id": node_id, "kind": "channel", "name": name, "system": system,
                "label": channel_label(name)}  # fmt: skip
    return {"id": node_id, "kind": "service", "name": rest, "system": "", "label": rest}


def channel_label(name: str) -> str:
    if name.startswith(("http://", "https://", "arn:")):
        tail = name.rstrip("/").replace(":", "/").rsplit("/", 1)[-1]
        return tail or name
    return name


def window_rows(
    cursor,
    project_id: int,
    since: dt.datetime,
    until: dt.datetime,
    where: str = "",
    where_params: tuple = (),
    hours_from: dt.timedelta = HOURS_FROM,
    columns: str = _COLUMNS,
) -> tuple[str, list]:
    """SQL (and its parameters) of the rollup rows of a window: minute rows
    only, or whole compacted hours in the middle and minutes at the ends.
    Each row has `t` (its minute or hour), `hourly`, the edge and its sums
    (`columns`: a reader that needs fewer names only those);
    `where` ("AND …") narrows both tables alike."""
    where_params = list(where_params)
    if until - since >= hours_from:
        through = flowhours.compacted_through(cursor)
        if through is not None:
            first_hour = flowhours.floor_hour(since)
            if first_hour < since:
                first_hour += dt.timedelta(hours=1)
            last_hour = min(flowhours.floor_hour(until), through)
            if last_hour > first_hour:
                return MIXED_ROWS.format(where=where, columns=columns), [
                    project_id, first_hour, last_hour, *where_params,
                    project_id, since, first_hour, last_hour, until, *where_params,
                ]  # fmt: skip
    return MINUTE_ROWS.format(where=where, columns=columns), [
        project_id, since, until, *where_params,
    ]  # fmt: skip


def _add_lag(project_id: int, edges: list[dict], nodes: dict[str, dict]) -> None:
    """Give consume edges the present lag of their consumer group, as the
    broker pollers and metrics last reported it (null where unknown)."""
    keys = {}
    for edge in edges:
        edge.update(lag=None, lag_seconds=None, lag_status=None)
        if edge["kind"] == "consume":
            channel = nodes[edge["source"]]
            keys[id(edge)] = (channel["system"], channel["name"], edge["group"])
    found = lag_for_edges(project_id, keys.values())
    for edge in edges:
        lag = found.get(keys.get(id(edge)))
        if lag is not None:
            edge.update(lag)


def _add_declared(edges: list[dict], nodes: dict[str, dict], declared: list[dict]) -> None:
    """Routes the systems declare (SNS subscriptions, EventBridge targets,
    Lambda mappings, dead-letter queues: collector.brokers.topology) join the
    graph: an edge that spans also show gets the route's details under
    `declared`; one no span has shown yet is added with no traffic."""
    by_key = {(e["source"], e["target"], e["kind"], e["group"]): e for e in edges}
    for route in declared:
        key = (route["source"], route["target"], route["kind"], route["group"])
        edge = by_key.get(key)
        if edge is None:
            edge = by_key[key] = {
                "source": route["source"], "target": route["target"], "kind": route["kind"],
                "group": route["group"], "count": 0, "rate_per_s": 0.0, "rate_now_per_s": 0.0,
                "first_seen": None, "last_seen": None, "errors": 0, "deadlettered": 0,
                "retries": 0, "p50_ms": None, "p95_ms": None, "e2e_p95_ms": None,
            }  # fmt: skip
            edges.append(edge)
            for node_id in key[:2]:
                if node_id not in nodes:
                    nodes[node_id] = parse_node(node_id)
        edge["declared"] = route["details"]


def _round(value):
    return None if value is None else round(value, 3)


def _rfc3339(moment: dt.datetime | None) -> str | None:
    return None if moment is None else moment.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")


EXACT_MINUTE_SQL = """
SELECT k.source, k.target, k.kind, k.consumer_group, k.first, m.minute, m.count, m.received
FROM unnest(%s::text[], %s::text[], %s::text[], %s::text[], %s::timestamptz[], %s::interval[],
            %s::boolean[])
    AS k(source, target, kind, consumer_group, start, length, first)
JOIN LATERAL (
    SELECT minute, count, received FROM collector_flowrollup r
    WHERE r.project_id = %s AND r.minute >= k.start AND r.minute < k.start + k.length
      AND r.source = k.source AND r.target = k.target AND r.kind = k.kind
      AND r.consumer_group = k.consumer_group
    ORDER BY CASE WHEN k.first THEN r.minute END, r.minute DESC
    LIMIT 1
) AS m ON true
"""


def _edge_minutes(cursor, project_id: int, wanted: list[tuple]) -> dict[tuple, tuple]:
    """{(edge key, first?): (minute, count, received)} of the first or last
    minute with data in a range (a minute, or an hour the hourly table only
    knows as a whole). Only edges that began inside the window, or stopped
    inside a compacted hour, are looked up; each is one short index probe."""
    if not wanted:
        return {}
    columns = [list(c) for c in zip(*wanted, strict=True)]
    cursor.execute(EXACT_MINUTE_SQL, [*columns, project_id])
    return {(tuple(row[:4]), row[4]): row[5:] for row in cursor.fetchall()}


NOW_SQL = """
SELECT source, target, kind, consumer_group,
       sum(count * w), sum(received * w)
FROM (
    SELECT source, target, kind, consumer_group, count, received,
           -- the oldest minute straddles the span's start: count the part inside it
           least(1.0, extract(epoch FROM minute + interval '1 minute' - %s) / 60.0) AS w
    FROM collector_flowrollup
    WHERE project_id = %s AND minute > %s - interval '1 minute' AND minute <= %s
) AS r
GROUP BY source, target, kind, consumer_group
"""


def _counts_now(cursor, project_id: int, now: dt.datetime) -> dict[tuple, float]:
    """{edge key: messages in the NOW_SPAN before now} (a minute straddling its
    start counts in proportion)."""
    start = now - NOW_SPAN
    cursor.execute(NOW_SQL, [start, project_id, start, now])
    return {
        tuple(row[:4]): (
            max(float(row[4] or 0), float(row[5] or 0))
            if row[2] == "consume"
            else float(row[4] or 0)
        )
        for row in cursor.fetchall()
    }


MINUTE, HOUR = dt.timedelta(minutes=1), dt.timedelta(hours=1)


def _earliest(*moments):
    return min((m for m in moments if m is not None), default=None)


def _latest(*moments):
    return max((m for m in moments if m is not None), default=None)


def _rate(shown, first_shown, last_shown, first_seen, last_seen, since, end) -> float:
    """Messages per second from when the stream began in the window (or the
    window's start) to the window's end (or now).

    Rollups know the minute a stream began, not the second. When it began
    inside the window and has whole minutes between its first and last, the
    part of the first minute it ran is estimated from how full that minute
    is next to the minutes in between (a steady stream that began at :40
    filled a third of it); otherwise the count divides from the minute's start.
    """
    if first_seen is None or first_seen <= since:
        start = since
    else:
        start = first_seen
        between = (last_seen - first_seen) / dt.timedelta(minutes=1) - 1
        middle = shown - first_shown - last_shown
        if between >= 1 and middle > 0:
            occupied = min(1.0, first_shown / (middle / between))
            start = first_seen + dt.timedelta(minutes=1) * (1 - occupied)
    return shown / max((end - start).total_seconds(), 1.0)


def flow_graph(
    project_id: int,
    since: dt.datetime,
    until: dt.datetime,
    limit: int = DEFAULT_EDGES,
    now: dt.datetime | None = None,
) -> dict:
    """The graph as /api/flow returns it: {"nodes", "edges", "truncated"}.

    The window is aligned to whole minutes (rollups are per minute), so
    `since` is rounded down. Only the `limit` busiest edges are kept, and
    the nodes they touch. Each edge's rate divides by the time it ran in the
    window (see _rate); `rate_now_per_s` is its rate over the last five
    minutes, 0 for a stream that stopped.
    """
    now = now or dt.datetime.now(dt.UTC)
    since_minute = since.replace(second=0, microsecond=0)
    end = min(until, now)
    with connection.cursor() as cursor:
        rows_sql, params = window_rows(cursor, project_id, since_minute, until)
        cursor.execute(GRAPH_SQL.format(rows=rows_sql), [*params, limit + 1])
        rows = cursor.fetchall()
        truncated = len(rows) > limit
        rows = rows[:limit]
        wanted = []
        for row in rows:
            first_minute, last_minute, first_hour, last_hour = row[9:13]
            first = _earliest(first_minute, first_hour)
            last = _latest(last_minute, last_hour)
            if first is not None and first > since_minute:
                # Began inside the window: its first and last minute's counts
                # say how much of the first minute it ran (see _rate).
                wanted.append((*row[:4], first, MINUTE if first == first_minute else HOUR, True))
                wanted.append((*row[:4], last, MINUTE if last == last_minute else HOUR, False))
            elif last is not None and last != last_minute:
                wanted.append((*row[:4], last, HOUR, False))
        exact = _edge_minutes(cursor, project_id, wanted)
        counts_now = _counts_now(cursor, project_id, now)
        declared = topology.declared(project_id, cursor)
    size = histogram.SIZE
    nodes: dict[str, dict] = {}
    edges = []
    for row in rows:
        key = tuple(row[:4])
        source, target, kind, group = key
        count, received, errors, dead, retries = (int(v or 0) for v in row[4:9])
        first_seen, last_seen = _earliest(row[9], row[11]), _latest(row[10], row[12])
        first_count = first_received = last_count = last_received = 0
        if (key, True) in exact:
            first_seen, first_count, first_received = exact[(key, True)]
        if (key, False) in exact:
            last_seen, last_count, last_received = exact[(key, False)]
        durations = [int(v or 0) for v in row[13 : 13 + size]]
        e2e = [int(v or 0) for v in row[13 + size : 13 + 2 * size]]
        consume = kind == "consume"
        shown = max(count, received) if consume else count
        first_shown = max(first_count, first_received) if consume else first_count
        last_shown = max(last_count, last_received) if consume else last_count
        rate = _rate(shown, first_shown, last_shown, first_seen, last_seen, since_minute, end)
        for node_id in (source, target):
            if node_id not in nodes:
                nodes[node_id] = parse_node(node_id)
        edges.append(
            {
                "source": source,
                "target": target,
                "kind": kind,
                "group": group,
                "count": shown,
                "rate_per_s": round(rate, 6),
                "rate_now_per_s": round(counts_now.get(key, 0.0) / NOW_SPAN.total_seconds(), 6),
                "first_seen": _rfc3339(first_seen),
                "last_seen": _rfc3339(last_seen),
                "errors": errors,
                "deadlettered": dead,
                "retries": retries,
                "p50_ms": _round(histogram.percentile(durations, 0.5)),
                "p95_ms": _round(histogram.percentile(durations, 0.95)),
                "e2e_p95_ms": _round(histogram.percentile(e2e, 0.95)),
                "declared": None,
            }
        )
    _add_declared(edges, nodes, declared)
    edges.sort(
        key=lambda e: (
            KINDS.index(e["kind"]) if e["kind"] in KINDS else 9,
            e["source"],
            e["target"],
            e["group"],
        )
    )
    _add_lag(project_id, edges, nodes)
    delivery_badges.add_to_edges(project_id, since, until, edges)
    ordered_nodes = sorted(nodes.values(), key=lambda n: (n["kind"], n["system"], n["name"]))
    return {
        "since": since_minute,
        "until": until,
        "nodes": ordered_nodes,
        "edges": edges,
        "truncated": truncated,
    }
