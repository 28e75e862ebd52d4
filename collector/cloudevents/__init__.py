"""CloudEvents 1.0 over HTTP (`POST /v1/events`) to envelopes and stages.

The three HTTP modes are told apart by Content-Type: structured
(`application/cloudevents+json`, one event), batch
(`application/cloudevents-batch+json`, an array) and binary (anything else:
attributes in `ce-*` headers, the body is the payload). Each event is
validated on its own, so one bad event in a batch does not cost the others.

Eventscope's extension attributes say which stage of the event's journey is
reported (`esstage`, `esservice`, `eschannel`, `essystem`, `esgroup`,
`eserror`, `esduration`); the same `source`+`id` at several stages is one
journey.

The HTTP modes are in `modes`, an event's payload (redacted, capped) in
`payload`; one event's attributes, extensions and rows are here.
"""

import datetime as dt
import re
from dataclasses import dataclass, field

from django.conf import settings

from collector.attribute_limits import Limits, mark
from collector.batch import (
    CONSUMER,
    MAX_ID_CHARS,
    ORIGIN_CLOUDEVENT,
    PRODUCER,
    STAGES,
    Batch,
    EnvelopeRow,
    StageRow,
    clip,
)
from collector.cloudevents.modes import (
    _BODY,
    BATCH,
    BINARY,
    STRUCTURED,
    InvalidEvent,
    events_from_request,
    mode_of,
)
from collector.cloudevents.payload import _payload, is_json_type
from collector.normalize import clean_text
from collector.redact import redact
from collector.traceparent import parse_traceparent, valid_tracestate

# What `collector.cloudevents` offers, wherever in the package it lives.
__all__ = [
    "BATCH", "BINARY", "CORE", "ES_ATTRIBUTES", "KEPT_EXTENSIONS", "REQUIRED", "STRUCTURED",
    "EventsResult", "InvalidEvent", "event_rows", "events_from_request", "is_json_type",
    "mode_of", "normalize_events", "parse_time",
]  # fmt: skip
REQUIRED = ("id", "source", "specversion", "type")
CORE = frozenset(
    (*REQUIRED, "datacontenttype", "dataschema", "subject", "time", "data", "data_base64")
)
ES_ATTRIBUTES = (
    "esstage",
    "esservice",
    "eschannel",
    "essystem",
    "esgroup",
    "eserror",
    "esduration",
)
# Read whatever the attribute limit: they say what the event is and where it belongs.
KEPT_EXTENSIONS = (*ES_ATTRIBUTES, "traceparent", "tracestate")
_ATTRIBUTE_NAME = re.compile(r"[a-z0-9]{1,64}")
# RFC 3339 `date-time`: any number of fraction digits, `T` or `t`, `Z`/`z` or an offset.
_RFC3339 = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[Tt](\d{2}):(\d{2}):(\d{2})(\.\d+)?([Zz]|[+-]\d{2}:\d{2})"
)


@dataclass
class EventsResult:
    """Rows for the writer plus the per-event verdicts for the 202 body."""

    batch: Batch
    accepted: int = 0
    rejected: list[dict] = field(default_factory=list)
    mode: str = STRUCTURED


# ---- one event -------------------------------------------------------------------


def parse_time(value: str) -> int | None:
    """Nanoseconds since the epoch of an RFC 3339 timestamp, or None if it is not one."""
    match = _RFC3339.fullmatch(value.strip()) if isinstance(value, str) else None
    if not match:
        return None
    year, month, day, hour, minute, second, fraction, zone = match.groups()
    if int(second) > 60:  # 60 is a leap second, kept below as the second before
        return None
    try:
        if zone in ("Z", "z"):
            tz = dt.UTC
        else:
            hours, minutes = int(zone[1:3]), int(zone[4:6])
            if hours > 23 or minutes > 59:
                return None
            sign = 1 if zone[0] == "+" else -1
            tz = dt.timezone(sign * dt.timedelta(hours=hours, minutes=minutes))
        moment = dt.datetime(
            int(year), int(month), int(day), int(hour), int(minute), min(int(second), 59), tzinfo=tz
        )
    except ValueError:
        return None
    nanos = int((fraction or ".0")[1:].ljust(9, "0")[:9])
    return int(moment.timestamp()) * 1_000_000_000 + nanos


def _required_text(event: dict, name: str) -> str:
    value = event.get(name)
    if value is None:
        raise InvalidEvent(f"required attribute {name!r} is missing")
    if not isinstance(value, str) or not value:
        raise InvalidEvent(f"attribute {name!r} must be a non-empty string")
    return clean_text(value)


def _optional_text(event: dict, name: str) -> str | None:
    value = event.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidEvent(f"attribute {name!r} must be a string")
    return clean_text(value) or None


def _extensions(event: dict, limits: Limits) -> dict:
    """The event's extension attributes, within the attribute limits.

    At most `limits.count` of them are read, in the order sent; Eventscope's
    own and the trace context are always read, wherever they stand. String
    values are cut to `limits.length`; what was cut is recorded in the map
    (collector.attribute_limits) under keys no CloudEvents attribute can have.
    """
    extensions: dict = {}
    cut = []
    read = 0
    for name in event:
        if name is _BODY or name in CORE:
            continue
        if read == limits.count:
            break
        read += 1
        _add_extension(extensions, name, event[name], limits, cut)
    else:
        return mark(extensions, 0, cut)
    # Counted, not read: the rest may be a million names.
    present = sum(1 for name in (*CORE, _BODY) if name in event)
    dropped = len(event) - present - read
    for name in KEPT_EXTENSIONS:
        if name not in extensions and name in event:
            dropped -= 1
            _add_extension(extensions, name, event[name], limits, cut)
    limits.dropped += dropped
    return mark(extensions, dropped, cut)


def _add_extension(extensions: dict, name: str, value, limits: Limits, cut: list) -> None:
    if not _ATTRIBUTE_NAME.fullmatch(name):
        raise InvalidEvent(
            f"attribute name {name!r} is invalid: use lowercase letters and digits only"
        )
    if value is None:
        return  # null means unset
    if isinstance(value, dict | list):
        raise InvalidEvent(f"attribute {name!r} must be a string, number or boolean")
    if isinstance(value, str):
        if len(value) > limits.length:
            value = limits.text(value)
            cut.append(name)
        value = clean_text(value)
    extensions[name] = value


def _duration_ms(value) -> float | None:
    if value is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise InvalidEvent(
            f"'esduration' must be a number of milliseconds, got {_shown(value)}"
        ) from None
    except OverflowError:  # an integer beyond the range of a float
        raise InvalidEvent(
            "'esduration' must be a number of milliseconds, got an integer of "
            f"{len(str(abs(value)))} digits"
        ) from None
    if isinstance(value, bool) or number != number or number < 0 or number == float("inf"):
        raise InvalidEvent(
            f"'esduration' must be a non-negative number of milliseconds, got {_shown(value)}"
        )
    return number


def _shown(value) -> str:
    """`value` for an error message, cut short: messages go back in the response."""
    text = repr(value)
    return text if len(text) <= 64 else f"{text[:60]}…"


def _event_time(event: dict) -> int | None:
    """The event's `time` in nanoseconds, None when absent; InvalidEvent when not RFC 3339."""
    value = event.get("time")
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidEvent("attribute 'time' must be a string")
    time_ns = parse_time(value)
    if time_ns is None:
        raise InvalidEvent(
            "'time' must be an RFC 3339 timestamp such as 2025-07-03T10:15:30.5Z, "
            f"got {_shown(value)}"
        )
    return time_ns


def event_rows(
    event: dict, project_id: int, received_ns: int, limits: Limits | None = None
) -> tuple[EnvelopeRow, StageRow]:
    """One validated CloudEvent (JSON-format dict) -> its envelope and its stage.

    Raises InvalidEvent with the reason when the event breaks CloudEvents 1.0
    or carries an unusable Eventscope extension.
    """
    specversion = event.get("specversion")
    if specversion is None:
        raise InvalidEvent("required attribute 'specversion' is missing")
    if specversion != "1.0":
        raise InvalidEvent(f"'specversion' must be \"1.0\", got {specversion!r}")
    event_id = _required_text(event, "id")
    source = _required_text(event, "source")
    for name, value in (("id", event_id), ("source", source)):
        if len(value) > MAX_ID_CHARS:
            raise InvalidEvent(
                f"'{name}' is {len(value)} characters long; at most {MAX_ID_CHARS} are accepted"
            )
    event_type = _required_text(event, "type")
    subject = _optional_text(event, "subject")
    content_type = _optional_text(event, "datacontenttype")
    schema = _optional_text(event, "dataschema")
    event_ns = _event_time(event)
    extensions = _extensions(event, limits or Limits())

    stage = str(extensions.get("esstage", "published")).lower()
    if stage not in STAGES:
        raise InvalidEvent(f"'esstage' must be one of {', '.join(STAGES)}, got {stage!r}")
    duration_ms = _duration_ms(extensions.get("esduration"))
    payload = _payload(event, content_type)

    if event_ns is not None:
        _check_storable(event_ns, received_ns)
    time_ns = event_ns if event_ns is not None else received_ns

    context = parse_traceparent(_text_or_none(extensions.get("traceparent")))
    if context is None:
        # An invalid traceparent is ignored, and tracestate goes with it.
        extensions.pop("traceparent", None)
        extensions.pop("tracestate", None)
    elif "tracestate" in extensions and not valid_tracestate(
        _text_or_none(extensions["tracestate"])
    ):
        extensions.pop("tracestate")
    trace_id, parent_id = (context[0], context[1]) if context else (None, None)

    role = PRODUCER if stage == "published" else CONSUMER
    envelope = EnvelopeRow(
        project_id=project_id,
        time_ns=time_ns,
        source=source,
        event_id=event_id,
        type=event_type,
        subject=subject,
        datacontenttype=content_type,
        dataschema=schema,
        extensions=redact(extensions),
        trace_id=trace_id,
        time_from_event=event_ns is not None,
        **payload,
    )
    stage_row = StageRow(
        project_id=project_id,
        time_ns=time_ns,
        stage=stage,
        role=role,
        service=clip(_text_or_none(extensions.get("esservice")) or source),
        system=clip(_text_or_none(extensions.get("essystem")) or ""),
        channel=clip(_text_or_none(extensions.get("eschannel")) or ""),
        consumer_group=clip(_text_or_none(extensions.get("esgroup")) or "")
        if role == CONSUMER
        else "",
        trace_id=trace_id,
        # The traceparent is the creation context: the producer's span.
        span_id=parent_id if role == PRODUCER else None,
        linked=[(trace_id, parent_id)] if context and role == CONSUMER else [],
        event_id=event_id,
        event_source=source,
        event_type=event_type,
        error=_text_or_none(extensions.get("eserror")),
        duration_ms=duration_ms,
        origin=ORIGIN_CLOUDEVENT,
    )
    return envelope, stage_row


def _check_storable(time_ns: int, received_ns: int) -> None:
    """Refuse times the storage would drop at once (past retention) or that a
    broken clock produced (over a day ahead), as the writer does for spans."""
    received = dt.datetime.fromtimestamp(received_ns / 1e9, dt.UTC)
    oldest = received.replace(hour=0, minute=0, second=0, microsecond=0) - dt.timedelta(
        days=settings.RETENTION_DAYS
    )
    if time_ns < int(oldest.timestamp()) * 1_000_000_000:
        raise InvalidEvent(
            f"'time' is older than the {settings.RETENTION_DAYS}-day retention window"
        )
    if time_ns > received_ns + 86_400 * 1_000_000_000:
        raise InvalidEvent("'time' is more than a day in the future")


def _text_or_none(value) -> str | None:
    if value is None or value == "":
        return None
    return str(value)


def normalize_events(
    headers: dict[str, str], body: bytes, project_id: int, received_ns: int
) -> EventsResult:
    """A /v1/events request -> envelopes and stages for the writer, plus rejections by index."""
    mode, events = events_from_request(headers, body)
    result = EventsResult(Batch(project_id=project_id, signal="events"), mode=mode)
    limits = Limits()
    for index, event in enumerate(events):
        try:
            if isinstance(event, InvalidEvent):
                raise event
            envelope, stage = event_rows(event, project_id, received_ns, limits)
        except InvalidEvent as exc:
            result.rejected.append({"index": index, "error": str(exc)})
            continue
        result.batch.envelopes.append(envelope)
        result.batch.stages.append(stage)
        result.accepted += 1
    limits.report("events")
    return result
