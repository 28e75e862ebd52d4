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
from dashboard.flow import hours as flowhours
from dashboard.lag.edges import lag_for_edges

KINDS = ("publish", "consume", "call")
DEFAULT_EDGES = 500
MAX_EDGES = 2000


def _bucket_sums(column: str) -> str:
    # SQL arrays are 1-based; the bucket count is fixed (collector.histogram).
    return ", ".join(f"sum({column}[{i}])" for i in range(1, histogram.SIZE + 1))


_SUMS = f"""sum(count), sum(received), sum(errors), sum(deadlettered), sum(retries),
       {_bucket_sums("duration_hist")},
       {_bucket_sums("e2e_hist")}"""

# The count an edge is shown with (and ranked by): a consume edge counts
# receipts too, so a consumer that only reports receives still shows its traffic.
_SHOWN = "CASE WHEN kind = 'consume' THEN greatest(sum(count), sum(received)) ELSE sum(count) END"
_BUSIEST = f"ORDER BY {_SHOWN} DESC, source, target, kind, consumer_group LIMIT %s"

MINUTES_SQL = f"""
SELECT source, target, kind, consumer_group, {_SUMS}
FROM collector_flowrollup
WHERE project_id = %s AND minute >= %s AND minute < %s
GROUP BY source, target, kind, consumer_group
{_BUSIEST}
"""

# Whole hours from the hourly table, the ragged ends from the minute rows.
MIXED_SQL = f"""
SELECT source, target, kind, consumer_group, {_SUMS}
FROM (
    SELECT source, target, kind, consumer_group, count, received, errors, deadlettered,
           retries, duration_hist, e2e_hist
    FROM dashboard_flowhour WHERE project_id = %s AND hour >= %s AND hour < %s
    UNION ALL
    SELECT source, target, kind, consumer_group, count, received, errors, deadlettered,
           retries, duration_hist, e2e_hist
    FROM collector_flowrollup
    WHERE project_id = %s AND ((minute >= %s AND minute < %s) OR (minute >= %s AND minute < %s))
) AS r
GROUP BY source, target, kind, consumer_group
{_BUSIEST}
"""

# Below this, minute rows are cheap enough and the hourly table is not consulted.
HOURS_FROM = dt.timedelta(hours=3)


def parse_node(node_id: str) -> dict:
    """{"id", "kind", "name", "system"} of a node id (service:<name>, channel:<system>:<name>)."""
    kind, _, rest = node_id.partition(":")
    if kind == "channel":
        system, _, name = rest.partition(":")
        return {"id": node_id, "kind": "channel", "name": name, "system": system}
    return {"id": node_id, "kind": "service", "name": rest, "system": ""}


def _query(cursor, project_id: int, since: dt.datetime, until: dt.datetime) -> tuple[str, list]:
    """The SQL for the window: minute rows only, or hours in the middle and minutes at the ends."""
    if until - since >= HOURS_FROM:
        through = flowhours.compacted_through(cursor)
        if through is not None:
            first_hour = flowhours.floor_hour(since)
            if first_hour < since:
                first_hour += dt.timedelta(hours=1)
            last_hour = min(flowhours.floor_hour(until), through)
            if last_hour > first_hour:
                return MIXED_SQL, [
                    project_id, first_hour, last_hour,
                    project_id, since, first_hour, last_hour, until,
                ]  # fmt: skip
    return MINUTES_SQL, [project_id, since, until]


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


def _round(value):
    return None if value is None else round(value, 3)


def flow_graph(
    project_id: int, since: dt.datetime, until: dt.datetime, limit: int = DEFAULT_EDGES
) -> dict:
    """The graph as /api/flow returns it: {"nodes", "edges", "truncated"}.

    The window is aligned to whole minutes (rollups are per minute), so
    `since` is rounded down; the rate divides by the window's length. Only
    the `limit` busiest edges are kept, and the nodes they touch.
    """
    since_minute = since.replace(second=0, microsecond=0)
    seconds = max((until - since).total_seconds(), 1.0)
    with connection.cursor() as cursor:
        sql, params = _query(cursor, project_id, since_minute, until)
        cursor.execute(sql, [*params, limit + 1])
        rows = cursor.fetchall()
    truncated = len(rows) > limit
    rows = rows[:limit]
    size = histogram.SIZE
    nodes: dict[str, dict] = {}
    edges = []
    for row in rows:
        source, target, kind, group = row[:4]
        count, received, errors, dead, retries = (int(v or 0) for v in row[4:9])
        durations = [int(v or 0) for v in row[9 : 9 + size]]
        e2e = [int(v or 0) for v in row[9 + size : 9 + 2 * size]]
        shown = max(count, received) if kind == "consume" else count
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
                "rate_per_s": round(shown / seconds, 6),
                "errors": errors,
                "deadlettered": dead,
                "retries": retries,
                "p50_ms": _round(histogram.percentile(durations, 0.5)),
                "p95_ms": _round(histogram.percentile(durations, 0.95)),
                "e2e_p95_ms": _round(histogram.percentile(e2e, 0.95)),
            }
        )
    edges.sort(
        key=lambda e: (
            KINDS.index(e["kind"]) if e["kind"] in KINDS else 9,
            e["source"],
            e["target"],
            e["group"],
        )
    )
    _add_lag(project_id, edges, nodes)
    ordered_nodes = sorted(nodes.values(), key=lambda n: (n["kind"], n["system"], n["name"]))
    return {
        "since": since_minute,
        "until": until,
        "nodes": ordered_nodes,
        "edges": edges,
        "truncated": truncated,
    }
