"""An event's journey: its envelopes and its own stages, spans, logs."""

from dashboard.journeys.queries.narrowing import _joined_stages, _own_spans
from dashboard.journeys.queries.rows import (
    MAX_LINKED_TRACES,
    MAX_STAGES,
    STAGE_COLUMNS,
    NotFound,
    _envelope,
    _hex,
    _rows,
)
from dashboard.journeys.queries.traces import _bounds, _journey, limits_summary
from dashboard.query_params import BadParameter, clean_text


def event(project_id: int, event_id: str, source: str | None = None) -> dict:
    """An event's envelope(s) and journey: its own stages (see the package's
    docstring) and the spans, logs and envelopes of their traces.

    With `source`, the event must exist with that exact CloudEvents source
    (an envelope or a stage reporting it); span-derived stages of the same id,
    which carry no source, then join its journey.
    """
    try:
        clean_text("event id", event_id)
    except BadParameter:
        raise NotFound(f"no event {event_id!r} in this project") from None
    params = [project_id, event_id]
    where = "project_id = %s AND event_id = %s"
    if source:
        where += " AND (event_source = %s OR event_source IS NULL)"
        params.append(source)
    own = _rows(
        f"SELECT {STAGE_COLUMNS} FROM collector_stage WHERE {where} ORDER BY time LIMIT %s",
        [*params, MAX_STAGES],
    )
    # The source narrows in SQL: read first and filtered after, a popular id
    # would fill the LIMIT with other sources' envelopes.
    envelope_rows = _rows(
        f"""
        SELECT time, source, event_id, type, subject, datacontenttype, dataschema, extensions,
               data, data_text, data_base64, data_size, truncated, trace_id
        FROM collector_envelope WHERE project_id = %s AND event_id = %s
        {"AND source = %s" if source else ""}
        ORDER BY time LIMIT 50
        """,
        [project_id, event_id, *([source] if source else [])],
    )
    if source and not envelope_rows and not any(r["event_source"] == source for r in own):
        raise NotFound(f"no event {event_id!r} from source {source!r} in this project")
    if not own and not envelope_rows:
        raise NotFound(f"no event {event_id!r} in this project")
    trace_ids = list(
        dict.fromkeys(
            [bytes(r["trace_id"]) for r in own if r["trace_id"] is not None]
            + [bytes(r["trace_id"]) for r in envelope_rows if r["trace_id"] is not None]
        )
    )[:MAX_LINKED_TRACES]
    seen = {(r["time"], r["stage"], r["service"], _hex(r["span_id"])) for r in own}
    stage_rows = own + [
        r
        for r in _joined_stages(project_id, own)
        if (r["time"], r["stage"], r["service"], _hex(r["span_id"])) not in seen
    ]
    stage_rows.sort(key=lambda r: r["time"])
    journey = _journey(project_id, trace_ids, stage_rows)
    journey["spans"] = _own_spans(journey["spans"], event_id, stage_rows)
    journey["envelopes"] = [_envelope(r) for r in envelope_rows] or journey["envelopes"]
    journey.update(limits_summary(journey))
    journey["event_id"] = event_id
    journey["source"] = source or (envelope_rows[0]["source"] if envelope_rows else None)
    journey["envelope"] = journey["envelopes"][0] if journey["envelopes"] else None
    journey["errors"] = [s for s in journey["stages"] if s["error"]]
    journey.update(_bounds(journey))
    return journey
