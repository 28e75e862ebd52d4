"""The three CloudEvents HTTP modes: an HTTP request to the events it carries."""

import urllib.parse

from collector.decode import DecodeError, UnsupportedMediaType, UnusableNumber, parse_json

STRUCTURED, BATCH, BINARY = "structured", "batch", "binary"
# The key under which a binary-mode event keeps its HTTP body: not a string,
# so no JSON member can collide with it.
_BODY = object()


class InvalidEvent(ValueError):
    """One event is invalid; the message says why."""


def mode_of(content_type: str | None) -> str:
    """STRUCTURED, BATCH or BINARY for a request's Content-Type (prefix match)."""
    essence = (content_type or "").split(";", 1)[0].strip().lower()
    if essence.startswith("application/cloudevents-batch"):
        if essence != "application/cloudevents-batch+json":
            raise UnsupportedMediaType(f"unsupported CloudEvents batch format {essence!r}")
        return BATCH
    if essence.startswith("application/cloudevents"):
        if essence not in ("application/cloudevents+json", "application/cloudevents"):
            raise UnsupportedMediaType(f"unsupported CloudEvents format {essence!r}")
        return STRUCTURED
    return BINARY


def _header_value(raw: str) -> str:
    """A binary-mode attribute value: percent-decoded UTF-8, surrounding quotes removed."""
    value = raw.strip()
    if len(value) >= 2 and value[0] == value[-1] == '"':
        value = value[1:-1]
    try:
        # The receiver decodes header bytes as latin-1; undo that, so a sender
        # that puts raw UTF-8 in a header (instead of percent-encoding it)
        # still gets its text back, not mojibake.
        octets = value.encode("latin-1")
    except UnicodeEncodeError:
        octets = value.encode("utf-8")  # a str from a caller, not from the wire
    try:
        return urllib.parse.unquote_to_bytes(octets).decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidEvent("a ce- header is not valid percent-encoded UTF-8") from None


def events_from_request(
    headers: dict[str, str], body: bytes
) -> tuple[str, list[dict | InvalidEvent]]:
    """The request's events as JSON-format dicts (or the error of each invalid one).

    `headers` maps lowercased names to values. Request-level problems (bad
    JSON, a batch that is not an array, a binary request without CloudEvents
    headers) raise DecodeError; unknown formats raise UnsupportedMediaType.
    """
    content_type = headers.get("content-type")
    mode = mode_of(content_type)
    if mode == BINARY:
        return mode, [_binary_event(headers, body, content_type)]
    # Numbers that cannot be stored are marked rather than failing the whole
    # body, so that only the events holding one are rejected, by name.
    unusable: list[UnusableNumber] = []
    document = parse_json(body, unusable=unusable)
    if mode == BATCH:
        if not isinstance(document, list):
            raise DecodeError(
                f"a CloudEvents batch must be a JSON array, got {_json_type(document)}"
            )
        events = [
            event
            if isinstance(event, dict)
            else InvalidEvent(f"an event must be a JSON object, got {_json_type(event)}")
            for event in document
        ]
    else:
        if not isinstance(document, dict):
            raise DecodeError(f"a CloudEvent must be a JSON object, got {_json_type(document)}")
        events = [document]
    if unusable:
        events = [_without_unusable_numbers(event) for event in events]
    return mode, events


def _without_unusable_numbers(event: dict | InvalidEvent) -> dict | InvalidEvent:
    """The event, or an InvalidEvent naming the attribute that holds an UnusableNumber."""
    if isinstance(event, InvalidEvent):
        return event
    stack = [(value, name, name) for name, value in event.items()]
    while stack:
        value, name, path = stack.pop()
        if isinstance(value, UnusableNumber):
            where = f"attribute {name!r}" + (f" at {path}" if path != name else "")
            return InvalidEvent(f"{where}: {value.problem}")
        if isinstance(value, dict):
            stack.extend((v, name, f"{path}.{k}") for k, v in value.items())
        elif isinstance(value, list):
            stack.extend((v, name, f"{path}[{i}]") for i, v in enumerate(value))
    return event


def _binary_event(headers, body: bytes, content_type) -> dict | InvalidEvent:
    ce = {name[3:]: value for name, value in headers.items() if name.startswith("ce-") and name[3:]}
    if not ce:
        raise UnsupportedMediaType(
            f"unsupported content type {content_type or '(none)'!r}: send "
            "application/cloudevents+json, application/cloudevents-batch+json, "
            "or a binary-mode event with ce-id, ce-source, ce-specversion and ce-type headers"
        )
    event: dict = {}
    try:
        for name, raw in ce.items():
            if name in ("data", "data_base64", "datacontenttype"):
                raise InvalidEvent(f"ce-{name} is not allowed in binary mode")
            event[name] = _header_value(raw)
    except InvalidEvent as exc:
        return exc
    if content_type:
        event["datacontenttype"] = content_type.strip()
    if body:
        event[_BODY] = body
    return event


def _json_type(value) -> str:
    return {dict: "object", list: "array", str: "string", bool: "boolean"}.get(
        type(value), "null" if value is None else "number"
    )
