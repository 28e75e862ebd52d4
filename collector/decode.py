"""Request bodies to OTLP protobuf messages: pure functions, no I/O, no ORM.

Three steps, each with its own error so a receiver can answer precisely:
the content encoding (gzip/deflate, decompressed with a hard bound so a
compression bomb never inflates past the limit), the media type (protobuf or
OTLP JSON), and the message itself.
"""

import base64
import binascii
import json
import math
import sys
import zlib

from django.conf import settings
from google.protobuf import json_format
from google.protobuf.message import DecodeError as ProtobufDecodeError
from google.protobuf.message import Message
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from collector import stats

PROTOBUF, JSON = "protobuf", "json"
REQUESTS = {
    "traces": ExportTraceServiceRequest,
    "metrics": ExportMetricsServiceRequest,
    "logs": ExportLogsServiceRequest,
}
# OTLP JSON carries these ids as hex, everything else `bytes` as base64.
HEX_ID_KEYS = frozenset(
    ("traceId", "spanId", "parentSpanId", "trace_id", "span_id", "parent_span_id")
)
# A malformed hex id becomes this one-byte id: it fails the length check in
# `id_problem`, so only the item carrying it is rejected, not the request.
_MALFORMED_ID = base64.b64encode(b"\xff").decode()
_CHUNK = 64 * 1024
# Signals whose attributes are stored, and so held to the attribute limits.
LIMITED_SIGNALS = ("traces", "logs")
_DROPPED_NAMES = ("droppedAttributesCount", "dropped_attributes_count")
_COLLECTIONS = ("arrayValue", "kvlistValue", "array_value", "kvlist_value")
_MAX_UINT32 = 2**32 - 1


class DecodeError(ValueError):
    """The body cannot be decoded (HTTP 400, gRPC INVALID_ARGUMENT)."""

    status = 400


class BodyTooLarge(ValueError):
    """The body, compressed or not, is over the limit (HTTP 413)."""

    status = 413


class UnsupportedMediaType(ValueError):
    """Unknown Content-Type or Content-Encoding (HTTP 415)."""

    status = 415


def media_type(content_type: str | None) -> str:
    """PROTOBUF or JSON for an OTLP request's Content-Type; raises UnsupportedMediaType."""
    essence = (content_type or "").split(";", 1)[0].strip().lower()
    if essence in ("application/x-protobuf", "application/protobuf"):
        return PROTOBUF
    if essence == "application/json":
        return JSON
    raise UnsupportedMediaType(
        f"unsupported content type {essence or '(none)'!r}: "
        "send application/x-protobuf or application/json"
    )


def decompress(body: bytes, encoding: str | None, limit: int) -> bytes:
    """Undo `Content-Encoding` (identity, gzip, deflate), never producing more than `limit` bytes.

    Inflation is streamed with `max_length`, so a bomb costs at most `limit`
    bytes of memory before BodyTooLarge is raised.
    """
    codings = [c.strip().lower() for c in (encoding or "").split(",") if c.strip()]
    if len(body) > limit:
        raise BodyTooLarge(f"request body is {len(body)} bytes, over the {limit} byte limit")
    # Content-Encoding lists codings in the order applied: undo the last first.
    for coding in reversed(codings):
        if coding == "identity":
            continue
        if coding in ("gzip", "x-gzip"):
            body = _inflate(body, zlib.MAX_WBITS | 16, limit, coding)
        elif coding == "deflate":
            # HTTP says zlib-wrapped, but raw deflate is common in the wild.
            if _looks_like_zlib(body):
                try:
                    body = _inflate(body, zlib.MAX_WBITS, limit, coding)
                    continue
                except DecodeError:
                    pass  # raw deflate whose first bytes happen to look like a zlib header
            body = _inflate(body, -zlib.MAX_WBITS, limit, coding)
        else:
            raise UnsupportedMediaType(
                f"unsupported content encoding {coding!r}: send gzip, deflate or none"
            )
    return body


def _looks_like_zlib(data: bytes) -> bool:
    return len(data) >= 2 and data[0] & 0x0F == 8 and (data[0] << 8 | data[1]) % 31 == 0


def _inflate(data: bytes, wbits: int, limit: int, coding: str) -> bytes:
    """Inflate `data`, every gzip member of it, into at most `limit` bytes.

    Linear in time and memory whatever the member count: input is fed in
    slices of at most _CHUNK bytes (so neither `unconsumed_tail` nor
    `unused_data` ever copies the rest of the body), output is asked for with
    `max_length`, and `flush()` is never called, because it inflates whatever
    input is still pending with no bound at all.
    """
    out = bytearray()
    source = memoryview(data)
    position = 0
    while True:
        inflater = zlib.decompressobj(wbits)
        tail: bytes | memoryview = b""
        try:
            while not inflater.eof:
                if not tail:
                    if position >= len(source):
                        raise DecodeError(f"truncated {coding} body")
                    tail = source[position : position + _CHUNK]
                    position += len(tail)
                # len(out) <= limit here, so max_length is at least 1 (0 would mean unbounded).
                out += inflater.decompress(tail, limit + 1 - len(out))
                if len(out) > limit:
                    raise BodyTooLarge(
                        f"request body inflates past the {limit} byte limit ({coding})"
                    )
                tail = inflater.unconsumed_tail
        except zlib.error as exc:
            raise DecodeError(f"corrupt {coding} body: {exc}") from None
        # What the member's end left of the last slice goes back to the source.
        position -= len(inflater.unused_data) + len(tail)
        # gzip allows several members back to back; zlib streams do not.
        if not wbits & 16 or position >= len(source):
            return bytes(out)


def decode_request(signal: str, body: bytes, fmt: str) -> Message:
    """Parse an Export<signal>ServiceRequest from a decompressed body.

    `signal` is traces, metrics or logs; `fmt` is PROTOBUF or JSON. Raises
    DecodeError with a message saying what is wrong.
    """
    message = REQUESTS[signal]()
    if fmt == PROTOBUF:
        try:
            message.ParseFromString(body)
        except (ProtobufDecodeError, RecursionError) as exc:
            raise DecodeError(f"invalid protobuf {message.DESCRIPTOR.name}: {exc}") from None
        return message
    document = parse_json(body)
    if not isinstance(document, dict):
        raise DecodeError(f"invalid OTLP JSON: expected an object, got {type(document).__name__}")
    limit = settings.MAX_ATTRIBUTES if signal in LIMITED_SIGNALS else None
    try:
        dropped = _prepare_json(document, limit)
        if dropped:
            stats.count_cut(signal, dropped, 0)
        json_format.ParseDict(document, message, ignore_unknown_fields=True)
    except (json_format.ParseError, RecursionError, TypeError, ValueError) as exc:
        raise DecodeError(f"invalid OTLP JSON {message.DESCRIPTOR.name}: {exc}") from None
    except SystemError as exc:
        # upb's field lookup fails this way on a name JSON can spell but
        # UTF-8 cannot (an unpaired surrogate such as "\ud800").
        if not isinstance(exc.__cause__, UnicodeError):
            raise
        raise DecodeError(
            f"invalid OTLP JSON {message.DESCRIPTOR.name}: a field name is not valid Unicode"
        ) from None
    return message


class UnusableNumber:
    """Stands in for a number that Python's json module reads but nothing can store.

    json.loads accepts NaN, Infinity and -Infinity (not JSON at all), turns
    1e400 into infinity, and cannot convert an integer past Python's digit
    limit; PostgreSQL's jsonb refuses the first two. `problem` says which.
    """

    __slots__ = ("problem",)

    def __init__(self, problem: str):
        self.problem = problem

    def __repr__(self) -> str:
        return f"UnusableNumber({self.problem!r})"


def parse_json(body: bytes, *, unusable: list | None = None):
    """A JSON document from a UTF-8 body (RFC 8259), or DecodeError saying where it breaks.

    A number that cannot be stored (see UnusableNumber) fails the whole
    document, unless `unusable` is a list: then the number is replaced by an
    UnusableNumber, which is also appended there, so that a CloudEvents
    batch can reject only the events that hold one.
    """
    try:
        text = body.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DecodeError(f"invalid JSON: body is not UTF-8 ({exc.reason})") from None

    def refuse(problem: str):
        if unusable is None:
            raise DecodeError(f"invalid JSON: {problem}")
        marker = UnusableNumber(problem)
        unusable.append(marker)
        return marker

    def constant(name: str):
        return refuse(f"{name} is not a JSON number (JSON has no NaN or Infinity)")

    def real(digits: str):
        value = float(digits)
        if math.isinf(value):
            return refuse(f"{_excerpt(digits)} is beyond the range of a 64-bit float")
        return value

    def integer(digits: str):
        try:
            return int(digits)
        except ValueError:  # over sys.get_int_max_str_digits()
            return refuse(
                f"an integer of {len(digits.lstrip('-'))} digits is over the "
                f"{sys.get_int_max_str_digits()}-digit limit"
            )

    try:
        return json.loads(text, parse_constant=constant, parse_float=real, parse_int=integer)
    except json.JSONDecodeError as exc:
        raise DecodeError(
            f"invalid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
        ) from None
    except RecursionError:
        raise DecodeError("invalid JSON: nested too deeply") from None


def _excerpt(text: str, keep: int = 24) -> str:
    return text if len(text) <= keep else f"{text[:keep]}… ({len(text)} characters)"


def _prepare_json(node, limit: int | None = None) -> int:
    """Rewrite an OTLP JSON document in place for json_format; returns the attributes dropped.

    Hex ids become the base64 that json_format expects (hex text is also
    valid base64 and would silently decode to wrong bytes). Attribute maps
    are lists of {"key", "value"}, so user data never shows up here as a
    dict key named like an id.

    With `limit`, attribute lists are cut to `limit` entries before
    json_format converts them, which is what a million attributes cost, and
    the cut is added to their owner's droppedAttributesCount (the normaliser
    stores it). Arrays and maps inside values are cut to `limit + 1`
    elements: one more than the normaliser keeps, so it sees and marks the cut.
    """
    dropped = 0
    stack = [node]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            if limit is not None:
                dropped += _cut_attributes(item, limit)
            for key, value in item.items():
                if key in HEX_ID_KEYS and isinstance(value, str):
                    item[key] = _hex_to_base64(value)
                elif isinstance(value, dict | list):
                    stack.append(value)
        elif isinstance(item, list):
            stack.extend(v for v in item if isinstance(v, dict | list))
    return dropped


def _cut_attributes(item: dict, limit: int) -> int:
    attributes = item.get("attributes")
    cut = 0
    if isinstance(attributes, list) and len(attributes) > limit:
        cut = len(attributes) - limit
        del attributes[limit:]
        name = next((n for n in _DROPPED_NAMES if n in item), _DROPPED_NAMES[0])
        already = item.get(name)
        if isinstance(already, str) and already.isdigit():  # proto3 JSON allows "5" too
            already = int(already)
        already = already if isinstance(already, int) and not isinstance(already, bool) else 0
        item[name] = min(_MAX_UINT32, max(0, already) + cut)
    for name in _COLLECTIONS:
        collection = item.get(name)
        if isinstance(collection, dict):
            values = collection.get("values")
            if isinstance(values, list) and len(values) > limit + 1:
                del values[limit + 1 :]
    return cut


def _hex_to_base64(value: str) -> str:
    if not value:
        return value
    try:
        return base64.b64encode(bytes.fromhex(value)).decode()
    except ValueError:
        return _MALFORMED_ID


def id_problem(trace_id: bytes, span_id: bytes, parent_span_id: bytes = b"") -> str | None:
    """Why a span's ids are invalid per OTLP (16-byte trace, 8-byte span, not all zero), or None."""
    if len(trace_id) != 16:
        return f"trace id must be 16 bytes, got {len(trace_id)}"
    if not any(trace_id):
        return "trace id is all zeros"
    if len(span_id) != 8:
        return f"span id must be 8 bytes, got {len(span_id)}"
    if not any(span_id):
        return "span id is all zeros"
    if parent_span_id and len(parent_span_id) != 8:
        return f"parent span id must be 8 bytes or empty, got {len(parent_span_id)}"
    return None


def optional_id_problem(trace_id: bytes, span_id: bytes) -> str | None:
    """Like `id_problem` for records where the context is optional (log records, links)."""
    if not trace_id and not span_id:
        return None
    if trace_id and len(trace_id) != 16:
        return f"trace id must be 16 bytes or empty, got {len(trace_id)}"
    if span_id and len(span_id) != 8:
        return f"span id must be 8 bytes or empty, got {len(span_id)}"
    return None


def encode_response(message: Message, fmt: str) -> bytes:
    """Serialise a response (or google.rpc.Status) in the request's encoding."""
    if fmt == JSON:
        return json_format.MessageToJson(message, indent=None).encode()
    return message.SerializeToString()


def hex_id(raw: bytes | None) -> str:
    """Lowercase hex of an id, as stored in JSON and shown to users."""
    return binascii.hexlify(raw).decode() if raw else ""
