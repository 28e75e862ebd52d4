"""Stored rows as the API shows them: ids, times, stages, spans, envelopes, logs."""

import datetime as dt
import json

from django.db import connection

from collector import attribute_limits

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
