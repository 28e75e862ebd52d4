"""Binary row encoding for COPY: each table's columns and the tuples that fill them."""

import datetime as dt
import json
import struct
from dataclasses import dataclass

import orjson
import psycopg
from psycopg.types.string import BytesBinaryDumper

_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_DAY_NS = 86_400 * 10**9


def to_datetime(time_ns: int) -> dt.datetime:
    return _EPOCH + dt.timedelta(microseconds=time_ns // 1000)


_ENCODED_TYPES = frozenset(("jsonb", "timestamptz", "bytea[]"))


@dataclass
class _Table:
    name: str
    columns: tuple[str, ...]
    types: tuple[str, ...]
    key: tuple[str, ...]  # columns that identify a row (RETURNING on the staging path)

    @property
    def column_list(self) -> str:
        return ", ".join(self.columns)

    @property
    def copy_types(self) -> tuple[str, ...]:
        """Column types as COPY is told them: values encoded in the row tuple
        (see "row encoding") go through as bytes."""
        return tuple("bytea" if t in _ENCODED_TYPES else t for t in self.types)


SPANS = _Table(
    "collector_span",
    (
        "project_id", "trace_id", "span_id", "parent_span_id", "start_time", "duration_ns",
        "service", "name", "kind", "status_code", "status_message", "attributes", "resource",
        "events", "links", "scope",
    ),
    (
        "int4", "bytea", "bytea", "bytea", "timestamptz", "int8", "text", "text", "int2",
        "int2", "text", "jsonb", "jsonb", "jsonb", "jsonb", "text",
    ),
    ("project_id", "trace_id", "span_id", "start_time"),
)  # fmt: skip
STAGES = _Table(
    "collector_stage",
    (
        "project_id", "time", "dedupe_key", "stage", "role", "system", "channel", "service",
        "consumer_group", "trace_id", "span_id", "parent_span_id", "linked_trace_ids",
        "linked_span_ids", "event_id", "event_source", "event_type", "error", "duration_ms",
        # Set in the transaction, after the row is encoded: last, so that
        # setting it copies the row in one slice (_Transaction.run).
        "origin", "e2e_ms",
    ),
    (
        "int4", "timestamptz", "bytea", "text", "text", "text", "text", "text", "text",
        "bytea", "bytea", "bytea", "bytea[]", "bytea[]", "text", "text", "text", "text",
        "float8", "int2", "float8",
    ),
    ("project_id", "dedupe_key", "time"),
)  # fmt: skip
ENVELOPES = _Table(
    "collector_envelope",
    (
        "project_id", "time", "source", "event_id", "type", "subject", "datacontenttype",
        "dataschema", "extensions", "data", "data_text", "data_base64", "data_size",
        "truncated", "trace_id",
    ),
    (
        "int4", "timestamptz", "text", "text", "text", "text", "text", "text", "jsonb",
        "jsonb", "text", "bool", "int4", "bool", "bytea",
    ),
    ("project_id", "source", "event_id", "time"),
)  # fmt: skip
LOGS = _Table(
    "collector_log",
    (
        "project_id", "time", "dedupe_key", "service", "severity_number", "severity_text",
        "body", "trace_id", "span_id", "attributes",
    ),
    ("int4", "timestamptz", "bytea", "text", "int2", "text", "text", "bytea", "bytea", "jsonb"),
    ("project_id", "dedupe_key", "time"),
)  # fmt: skip


# ---- row encoding ------------------------------------------------------------------
# A row is a tuple in its table's column order. jsonb, timestamptz and
# bytea[] values are encoded here, once, into PostgreSQL's binary forms and
# travel as plain bytes (_Table.copy_types): psycopg's compiled formatter then
# writes whole rows without calling back into Python for a single value.
# These tuples are the writer's pure-Python path and the reference the
# compiled encoder (binrows.pyx) is tested against; with it built, spans and
# stages are encoded there, straight from their rows.

_PG_EPOCH_US = 946_684_800 * 10**6  # 2000-01-01 in Unix microseconds
_pack_int8 = struct.Struct("!q").pack
_pack_int4 = struct.Struct("!i").pack
_array_header = struct.Struct("!iiIii").pack
_BYTEA_OID = psycopg.postgres.types["bytea"].oid
_JSONB_VERSION = b"\x01"


def dump_json(value) -> bytes:
    """`value` as JSON text for a jsonb column.

    orjson is several times faster than the json module on the small dicts
    that every span carries; the json module takes what orjson refuses
    (integers beyond 64 bits in a CloudEvents payload).
    """
    try:
        return orjson.dumps(value)
    except TypeError:
        return json.dumps(value, ensure_ascii=False).encode()


def jsonb(value) -> bytes | None:
    """Binary jsonb (version 1 + JSON text); None stays NULL."""
    return None if value is None else _JSONB_VERSION + dump_json(value)


def timestamptz(time_ns: int) -> bytes:
    """Binary timestamptz (microseconds since 2000-01-01) from Unix nanoseconds."""
    return _pack_int8(time_ns // 1000 - _PG_EPOCH_US)


def bytea_array(values: list[bytes]) -> bytes | None:
    """Binary bytea[] of a flat list of bytes (linked trace and span ids); [] is NULL."""
    if not values:
        return None
    # ndim 1, no NULLs, element type bytea, length, lower bound 1
    parts = [_array_header(1, 0, _BYTEA_OID, len(values), 1)]
    for value in values:
        parts.append(_pack_int4(len(value)))
        parts.append(value)
    return b"".join(parts)


def configure_copy(conn) -> None:
    """Prepare `conn` for COPY of these rows: bytea by oid would otherwise be the
    DB-API Binary wrapper's dumper, in Python; registering the bytes dumper
    again gets the compiled one."""
    conn.adapters.register_dumper(None, BytesBinaryDumper)


_dumps = orjson.dumps
_ONE_BYTEA = _array_header(1, 0, _BYTEA_OID, 1, 1)


def span_values(s, resources: dict | None = None) -> tuple:
    """A span's COPY row. `resources` memoises the resource's encoding by object:
    every span of one resource shares the same dict."""
    resource = s.resource
    if not resource:
        resource = None
    elif resources is not None:
        encoded = resources.get(id(resource))
        if encoded is None:
            encoded = resources[id(resource)] = jsonb(resource)
        resource = encoded
    else:
        resource = jsonb(resource)
    attributes, events, links = s.attributes, s.events, s.links
    try:
        # jsonb() inline for the commonest case; it takes what orjson refuses.
        attributes = _JSONB_VERSION + _dumps(attributes) if attributes else None
    except TypeError:
        attributes = jsonb(attributes)
    return (
        s.project_id, s.trace_id, s.span_id, s.parent_span_id,
        _pack_int8(s.start_time_ns // 1000 - _PG_EPOCH_US), s.duration_ns, s.service, s.name,
        s.kind, s.status_code, s.status_message, attributes, resource,
        jsonb(events) if events else None, jsonb(links) if links else None, s.scope,
    )  # fmt: skip


def stage_values(s, key: bytes, e2e_ms) -> tuple:
    linked = s.linked
    if not linked:
        traces = spans = None
    elif len(linked) == 1:
        # One creation context (a consumer's parent or its one link): the array's
        # header is a constant.
        ((trace_id, span_id),) = linked
        traces = _ONE_BYTEA + _pack_int4(len(trace_id)) + trace_id
        spans = _ONE_BYTEA + _pack_int4(len(span_id)) + span_id
    else:
        traces = bytea_array([pair[0] for pair in linked])
        spans = bytea_array([pair[1] for pair in linked])
    return (
        s.project_id, _pack_int8(s.time_ns // 1000 - _PG_EPOCH_US), key, s.stage, s.role,
        s.system, s.channel, s.service, s.consumer_group, s.trace_id, s.span_id,
        s.parent_span_id, traces, spans, s.event_id, s.event_source, s.event_type, s.error,
        s.duration_ms, s.origin, e2e_ms,
    )  # fmt: skip


def envelope_values(e) -> tuple:
    return (
        e.project_id, timestamptz(e.time_ns), e.source, e.event_id, e.type, e.subject,
        e.datacontenttype, e.dataschema, jsonb(e.extensions or None), jsonb(e.data),
        e.data_text, e.data_base64, e.data_size, e.truncated, e.trace_id,
    )  # fmt: skip


def log_values(r, key: bytes) -> tuple:
    return (
        r.project_id, timestamptz(r.time_ns), key, r.service, r.severity_number,
        r.severity_text, r.body, r.trace_id, r.span_id, jsonb(r.attributes or None),
    )  # fmt: skip


def _ns(value: dt.datetime) -> int:
    delta = value - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 10**9 + delta.microseconds * 1000


def _bounds(times_ns, margin_ns) -> tuple[dt.datetime, dt.datetime]:
    """A time range around `times_ns`; it lets PostgreSQL skip the other daily partitions."""
    margin = int(margin_ns)
    return to_datetime(min(times_ns) - margin), to_datetime(max(times_ns) + margin)
