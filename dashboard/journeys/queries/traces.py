"""A trace's journey: reads shared with an event's, bounds, the waterfall."""

import datetime as dt

from dashboard.journeys.queries.rows import (
    MAX_LINKED_TRACES,
    MAX_LOGS,
    MAX_SPANS,
    MAX_STAGES,
    STAGE_COLUMNS,
    NotFound,
    _envelope,
    _log,
    _rows,
    _span,
    _stage,
)


def _stages_of_traces(project_id: int, trace_ids: list[bytes]) -> list[dict]:
    """Stages in these traces, and consumers elsewhere that link to them."""
    return _rows(
        f"""
        SELECT {STAGE_COLUMNS} FROM collector_stage
        WHERE project_id = %s AND trace_id = ANY(%s)
        UNION
        SELECT {STAGE_COLUMNS} FROM collector_stage
        WHERE project_id = %s AND linked_trace_ids && %s::bytea[]
        ORDER BY time LIMIT %s
        """,
        [project_id, trace_ids, project_id, trace_ids, MAX_STAGES],
    )


def _spans_of_traces(project_id: int, trace_ids: list[bytes]) -> list[dict]:
    return _rows(
        """
        SELECT trace_id, span_id, parent_span_id, start_time, duration_ns, service, name,
               kind, status_code, status_message, attributes, events, links
        FROM collector_span WHERE project_id = %s AND trace_id = ANY(%s)
        ORDER BY start_time, span_id LIMIT %s
        """,
        [project_id, trace_ids, MAX_SPANS + 1],
    )


def _logs_of_traces(project_id: int, trace_ids: list[bytes]) -> list[dict]:
    return _rows(
        """
        SELECT time, service, severity_number, severity_text, body, trace_id, span_id, attributes
        FROM collector_log WHERE project_id = %s AND trace_id = ANY(%s)
        ORDER BY time LIMIT %s
        """,
        [project_id, trace_ids, MAX_LOGS],
    )


def _envelopes(project_id: int, keys: set[tuple[str, str]]) -> list[dict]:
    """Envelopes of these (source, id) keys; a key without a source (a span's
    message id) matches that id from any source. Matched in SQL, so other
    sources' envelopes of a common id never crowd out the ones asked for (the
    plain `event_id = ANY` keeps the (project_id, event_id) index in use)."""
    if not keys:
        return []
    any_source = sorted({event_id for source, event_id in keys if not source})
    pairs = sorted((source, event_id) for source, event_id in keys if source)
    return _rows(
        """
        SELECT time, source, event_id, type, subject, datacontenttype, dataschema, extensions,
               data, data_text, data_base64, data_size, truncated, trace_id
        FROM collector_envelope
        WHERE project_id = %s AND event_id = ANY(%s)
          AND (event_id = ANY(%s)
               OR (source, event_id) IN (SELECT * FROM unnest(%s::text[], %s::text[])))
        ORDER BY time LIMIT 200
        """,
        [
            project_id,
            sorted({event_id for _, event_id in keys}),
            any_source,
            [p[0] for p in pairs],
            [p[1] for p in pairs],
        ],
    )


def _journey(project_id: int, trace_ids: list[bytes], stage_rows: list[dict]) -> dict:
    """Spans, stages, envelopes and logs of the traces, plus linked consumer traces."""
    linked = {bytes(r["trace_id"]) for r in stage_rows if r["trace_id"] is not None}
    all_traces = list(dict.fromkeys([*trace_ids, *sorted(linked)]))[: MAX_LINKED_TRACES + 1]
    spans = _spans_of_traces(project_id, all_traces) if all_traces else []
    truncated = len(spans) > MAX_SPANS
    spans = spans[:MAX_SPANS]
    keys = {
        (r["event_source"] or "", r["event_id"]) for r in stage_rows if r["event_id"] is not None
    }
    stages = [_stage(r) for r in stage_rows]
    journey = {
        "spans": [_span(r) for r in spans],
        "stages": stages,
        "envelopes": [_envelope(r) for r in _envelopes(project_id, keys)],
        "logs": [_log(r) for r in (_logs_of_traces(project_id, all_traces) if all_traces else [])],
        "traces": [t.hex() for t in all_traces],
        "truncated": truncated,
    }
    journey.update(limits_summary(journey))
    return journey


def limits_summary(journey: dict) -> dict:
    """What the attribute limits cut in the journey's spans (with their events
    and links), logs and envelopes, in all: attributes dropped and values cut short."""
    dropped = truncated = 0
    items = [*journey["spans"], *journey["logs"], *journey["envelopes"]]
    for span in journey["spans"]:
        items += [part for part in (*span["events"], *span["links"]) if isinstance(part, dict)]
    for item in items:
        dropped += item.get("dropped_attributes_count", 0)
        truncated += len(item.get("truncated_attributes", ()))
    return {"dropped_attributes_count": dropped, "truncated_attributes_count": truncated}


def trace(project_id: int, trace_id: bytes) -> dict:
    """The trace with its spans and stages in time order (NotFound if it has neither)."""
    stage_rows = _stages_of_traces(project_id, [trace_id])
    journey = _journey(project_id, [trace_id], stage_rows)
    if not journey["spans"] and not journey["stages"]:
        raise NotFound(f"no trace {trace_id.hex()} in this project")
    journey["trace_id"] = trace_id.hex()
    journey.update(_bounds(journey))
    return journey


def _bounds(journey: dict) -> dict:
    """Start, end and length of the journey, for laying out the waterfall."""
    starts = [s["start_ns"] for s in journey["spans"]]
    ends = [s["start_ns"] + int(s["duration_ms"] * 1e6) for s in journey["spans"]]
    for stage in journey["stages"]:
        moment = dt.datetime.fromisoformat(stage["time"].replace("Z", "+00:00"))
        ns = int(moment.timestamp() * 1e6) * 1000
        stage["time_ns"] = ns
        starts.append(ns)
        ends.append(ns + int((stage["duration_ms"] or 0) * 1e6))
    if not starts:
        return {"start_ns": 0, "duration_ms": 0.0}
    start = min(starts)
    return {"start_ns": start, "duration_ms": (max(ends) - start) / 1e6}


def waterfall(journey: dict) -> list[dict]:
    """Rows for the waterfall: spans depth-first under their parents, and stages
    that have no span of their own (CloudEvents) as markers, all offset from
    the journey's start."""
    start = journey["start_ns"]
    spans = journey["spans"]
    by_id = {(s["trace_id"], s["span_id"]): s for s in spans}
    children: dict = {}
    roots = []
    for span in spans:
        parent = (span["trace_id"], span["parent_span_id"])
        if span["parent_span_id"] and parent in by_id:
            children.setdefault(parent, []).append(span)
        else:
            roots.append(span)
    items = [(s["start_ns"], 0, s) for s in roots]
    items += [
        (s["time_ns"], 1, s)
        for s in journey["stages"]
        if s["origin"] != "span" or s["span_id"] is None
    ]
    items.sort(key=lambda item: (item[0], item[1]))
    rows: list[dict] = []
    # An explicit stack: a 10k-span chain would overflow Python's recursion limit.
    stack = [(item, 0) for item in reversed(items)]
    while stack:
        (_, is_stage, node), depth = stack.pop()
        if is_stage:
            rows.append(
                {
                    "depth": depth,
                    "service": node["service"],
                    "name": f"{node['stage']} {node['channel']}".strip(),
                    "kind": "stage",
                    "offset_ms": (node["time_ns"] - start) / 1e6,
                    "duration_ms": node["duration_ms"] or 0,
                    "status": "error" if node["error"] else "ok",
                    "error": node["error"],
                    "id": node["event_id"] or "",
                }
            )
            continue
        rows.append(
            {
                "depth": depth,
                "service": node["service"],
                "name": node["name"],
                "kind": node["kind"],
                "offset_ms": (node["start_ns"] - start) / 1e6,
                "duration_ms": node["duration_ms"],
                "status": node["status"],
                "error": node["status_message"],
                "id": node["span_id"],
                "trace_id": node["trace_id"],
                "attributes": node["attributes"],
                "dropped_attributes_count": node["dropped_attributes_count"],
                "truncated_attributes": node["truncated_attributes"],
            }
        )
        kids = sorted(
            children.get((node["trace_id"], node["span_id"]), ()), key=lambda s: s["start_ns"]
        )
        stack.extend(((k["start_ns"], 0, k), depth + 1) for k in reversed(kids))
    return rows
