"""Traces and event journeys: every span, stage, payload and log of one event's way
through the system, for one project.

A journey crosses traces: a batch consumer starts its own trace and points
back at its producers with span links, so the stages whose
`linked_trace_ids` contain this trace (GIN index) belong to it, and so do
the spans of those consumers. Each read is one indexed query per table on
(project_id, trace_id) or (project_id, event_id).

An event's journey holds that event's stages only: the stages reporting its
id, and the stages without an id joined to one of them span to span (a
consumer linked to its publish, the publish its consumer links to, a batch
receive that links it among others). A batch receive's trace holds the
other messages of the batch too; they are not this event's, and a receive
that took several messages shows as one, with its batch size.
"""

import datetime as dt
import json

from django.db import connection

from collector import attribute_limits, semconv
from dashboard.query_params import BadParameter, clean_text

MAX_SPANS = 20_000  # a trace larger than this is cut, and says so
MAX_STAGES = 5_000
MAX_LOGS = 1_000
MAX_LINKED_TRACES = 50

SPAN_KINDS = {
    0: "unspecified",
    1: "internal",
    2: "server",
    3: "client",
    4: "producer",
    5: "consumer",
}
STATUS = {0: "unset", 1: "ok", 2: "error"}


class NotFound(LookupError):
    """Nothing with that id in this project."""


def parse_trace_id(text: str) -> bytes:
    """A 32-hex-digit trace id as bytes; ValueError with a message otherwise."""
    value = (text or "").strip().lower()
    if len(value) != 32:
        raise ValueError(f"trace id {text!r} must be 32 hexadecimal digits")
    try:
        return bytes.fromhex(value)
    except ValueError:
        raise ValueError(f"trace id {text!r} must be 32 hexadecimal digits") from None


def _json(value):
    # Django's psycopg setup hands jsonb over as text and decodes it in model
    # fields; raw queries decode it here.
    return json.loads(value) if isinstance(value, str) else value


def _hex(value) -> str | None:
    return bytes(value).hex() if value is not None else None


def iso(moment: dt.datetime | None) -> str | None:
    """RFC 3339 UTC with a Z, as the API writes times."""
    if moment is None:
        return None
    return moment.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")


def _rows(sql: str, params) -> list[dict]:
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        names = [c.name for c in cursor.description]
        return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]


STAGE_COLUMNS = """time, stage, role, system, channel, service, consumer_group, trace_id, span_id,
    parent_span_id, linked_trace_ids, linked_span_ids, event_id, event_source, event_type, error,
    duration_ms, e2e_ms, origin"""


def _linked(row: dict) -> list[tuple[bytes, bytes]]:
    """The (trace id, span id) contexts a stage is linked to."""
    return [
        (bytes(t), bytes(s))
        for t, s in zip(row["linked_trace_ids"] or (), row["linked_span_ids"] or (), strict=False)
    ]


def batch_size(row: dict) -> int | None:
    """How many messages a consumer stage without a message of its own took
    at once (its links, not counting its parent), when more than one."""
    if row["role"] != "consumer" or row["event_id"] is not None:
        return None
    parent = (
        (bytes(row["trace_id"]), bytes(row["parent_span_id"]))
        if row["trace_id"] is not None and row["parent_span_id"] is not None
        else None
    )
    messages = {pair for pair in _linked(row) if pair != parent}
    return len(messages) if len(messages) > 1 else None


def _stage(row: dict) -> dict:
    return {
        "time": iso(row["time"]),
        "stage": row["stage"],
        "role": row["role"],
        "service": row["service"],
        "system": row["system"],
        "channel": row["channel"],
        "group": row["consumer_group"],
        "trace_id": _hex(row["trace_id"]),
        "span_id": _hex(row["span_id"]),
        "parent_span_id": _hex(row["parent_span_id"]),
        "linked_trace_ids": [_hex(t) for t in row["linked_trace_ids"] or ()],
        "event_id": row["event_id"],
        "event_source": row["event_source"],
        "event_type": row["event_type"],
        "error": row["error"],
        "duration_ms": row["duration_ms"],
        "e2e_ms": row["e2e_ms"],
        "origin": "span" if row["origin"] == 1 else "cloudevent",
        "batch_size": batch_size(row),
    }


def _limited(item: dict, raw_attributes, name: str = "attributes") -> dict:
    """`item` with `name` set to the stored map, and what the attribute limits
    cut in it as `dropped_attributes_count` and `truncated_attributes`."""
    attributes, dropped, truncated = attribute_limits.lift(_json(raw_attributes) or {})
    item[name] = attributes
    item["dropped_attributes_count"] = dropped
    item["truncated_attributes"] = truncated
    return item


def _parts(values) -> list[dict]:
    """Span events or links with their attributes lifted like a span's."""
    return [
        _limited(dict(value), value.get("attributes")) if isinstance(value, dict) else value
        for value in _json(values) or []
    ]


def _span(row: dict) -> dict:
    span = {
        "trace_id": _hex(row["trace_id"]),
        "span_id": _hex(row["span_id"]),
        "parent_span_id": _hex(row["parent_span_id"]),
        "service": row["service"],
        "name": row["name"],
        "kind": SPAN_KINDS.get(row["kind"], str(row["kind"])),
        "start": iso(row["start_time"]),
        "start_ns": int(row["start_time"].timestamp() * 1e6) * 1000,
        "duration_ms": row["duration_ns"] / 1e6,
        "status": STATUS.get(row["status_code"], str(row["status_code"])),
        "status_message": row["status_message"],
        "events": _parts(row["events"]),
        "links": _parts(row["links"]),
    }
    return _limited(span, row["attributes"])


def _envelope(row: dict) -> dict:
    envelope = {
        "source": row["source"],
        "id": row["event_id"],
        "type": row["type"],
        "time": iso(row["time"]),
        "subject": row["subject"],
        "datacontenttype": row["datacontenttype"],
        "dataschema": row["dataschema"],
        "data": _json(row["data"]),
        "data_text": row["data_text"],
        "data_base64": row["data_base64"],
        "data_size": row["data_size"],
        "truncated": row["truncated"],
        "trace_id": _hex(row["trace_id"]),
    }
    return _limited(envelope, row["extensions"], "extensions")


def _log(row: dict) -> dict:
    log = {
        "time": iso(row["time"]),
        "service": row["service"],
        "severity": row["severity_text"] or str(row["severity_number"]),
        "severity_number": row["severity_number"],
        "body": row["body"],
        "trace_id": _hex(row["trace_id"]),
        "span_id": _hex(row["span_id"]),
    }
    return _limited(log, row["attributes"])


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


def event(project_id: int, event_id: str, source: str | None = None) -> dict:
    """An event's envelope(s) and journey: its own stages (see the module's
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


def find(project_id: int, query: str, source: str | None = None) -> tuple[str, str] | None:
    """Where a search box entry leads: ("trace", id) or ("event", id), or None."""
    text = (query or "").strip()
    if not text:
        return None
    if source:
        return ("event", text)
    if len(text) == 32:
        try:
            trace_id = parse_trace_id(text)
        except ValueError:
            trace_id = None
        if trace_id is not None:
            with connection.cursor() as cursor:
                cursor.execute(
                    """SELECT 1 FROM collector_span WHERE project_id = %s AND trace_id = %s
                       UNION ALL
                       SELECT 1 FROM collector_stage WHERE project_id = %s AND trace_id = %s
                       LIMIT 1""",
                    [project_id, trace_id, project_id, trace_id],
                )
                if cursor.fetchone():
                    return ("trace", text.lower())
    with connection.cursor() as cursor:
        cursor.execute(
            """SELECT 1 FROM collector_stage WHERE project_id = %s AND event_id = %s
               UNION ALL
               SELECT 1 FROM collector_envelope WHERE project_id = %s AND event_id = %s
               LIMIT 1""",
            [project_id, text, project_id, text],
        )
        if cursor.fetchone():
            return ("event", text)
    return None


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
