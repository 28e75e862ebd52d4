"""Narrowing a journey to one event where a batch shares its traces: joined stages, own spans."""

from collector import semconv
from dashboard.journeys.queries.rows import (
    MAX_LINKED_TRACES,
    MAX_STAGES,
    STAGE_COLUMNS,
    _hex,
    _linked,
    _rows,
)


def _joined_stages(project_id: int, own: list[dict]) -> list[dict]:
    """Stages without an event id joined to the event's own
    stages span to span: linked to one of them, or one of them linked to it.

    A whole trace is not the event's: a batch consumer's trace holds the
    processing of every message of the batch, joined to the receive, not to
    this event's publish."""
    contexts = {
        (bytes(r["trace_id"]), bytes(r["span_id"]))
        for r in own
        if r["trace_id"] is not None and r["span_id"] is not None
    }
    links = {pair for r in own for pair in _linked(r)}
    if not contexts and not links:
        return []
    traces = sorted({t for t, _ in contexts})[:MAX_LINKED_TRACES]
    link_traces = sorted({t for t, _ in links})[:MAX_LINKED_TRACES]
    link_spans = sorted({s for _, s in links})
    rows = _rows(
        f"""
        SELECT {STAGE_COLUMNS} FROM collector_stage
        WHERE project_id = %s AND event_id IS NULL AND linked_trace_ids && %s::bytea[]
        UNION
        SELECT {STAGE_COLUMNS} FROM collector_stage
        WHERE project_id = %s AND event_id IS NULL
          AND trace_id = ANY(%s) AND span_id = ANY(%s)
        ORDER BY time LIMIT %s
        """,
        [project_id, traces, project_id, link_traces, link_spans, MAX_STAGES],
    )
    return [
        r
        for r in rows
        if contexts.intersection(_linked(r))
        or (
            r["trace_id"] is not None
            and r["span_id"] is not None
            and (bytes(r["trace_id"]), bytes(r["span_id"])) in links
        )
    ]


MESSAGE_ID_ATTRIBUTES = semconv.ATTRIBUTES["message_id"]


def _own_spans(spans: list[dict], event_id: str, stage_rows: list[dict]) -> list[dict]:
    """The spans of the event's traces, less other messages' in a shared trace.

    In a trace where spans handle other messages (a batch consumer's), only
    the event's own stage spans with what runs under them, the batch receive,
    and the spans above them are the event's."""
    shared = {
        span["trace_id"]
        for span in spans
        if any(
            span["attributes"].get(name) not in (None, "", event_id)
            for name in MESSAGE_ID_ATTRIBUTES
        )
    }
    if not shared:
        return spans
    by_id = {(s["trace_id"], s["span_id"]): s for s in spans}
    children: dict = {}
    for span in spans:
        children.setdefault((span["trace_id"], span["parent_span_id"]), []).append(span)
    keep: set = set()
    for row in stage_rows:
        if row["trace_id"] is None or row["span_id"] is None:
            continue
        key = (_hex(row["trace_id"]), _hex(row["span_id"]))
        if key[0] not in shared:
            continue
        # The spans above the stage's span.
        node = by_id.get(key)
        while node is not None and (node["trace_id"], node["span_id"]) not in keep:
            keep.add((node["trace_id"], node["span_id"]))
            node = by_id.get((node["trace_id"], node["parent_span_id"]))
        if row["event_id"] is None:
            continue  # a batch receive: the spans under it handle the whole batch
        # The event's own handling and what it did.
        stack = [key]
        while stack:
            for child in children.get(stack.pop(), ()):
                child_key = (child["trace_id"], child["span_id"])
                if child_key not in keep:
                    keep.add(child_key)
                    stack.append(child_key)
    return [
        s for s in spans if s["trace_id"] not in shared or (s["trace_id"], s["span_id"]) in keep
    ]
