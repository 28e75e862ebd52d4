"""OTLP requests to Eventscope rows: spans, the messaging stages they imply, logs.

How a span becomes a stage (the messaging conventions are read through
collector.semconv, old and new attribute names alike):

- Only spans with messaging attributes (`messaging.*`) give a stage.
- The operation type decides: create/send/publish -> `published` (role
  producer); receive -> `received`, process/deliver -> `processed` (role
  consumer); settle (ack/nack) gives none. Without an operation, a PRODUCER
  span publishes and a CONSUMER span processes.
- A CONSUMER span with the legacy `messaging.operation` = `receive` (no
  `messaging.operation.type`) and no span links is the processing of the one
  message it received (`processed`): pika and aio-pika wrap the
  consumer callback in it and make no process span. Decided from the span
  alone, so a parent and child exported apart still count once. Should a
  process/deliver span of the same request hang under it or link to it, it
  is a plain receipt again (`received`); a process span exported in a later
  request than its receive cannot undo the promotion (both then count).
- Nested publishes: pika's `PikaInstrumentor().instrument()` wraps both the
  blocking channel and the channel under it, so one publish gives a PRODUCER
  span with a PRODUCER child on the same destination. The innermost one is
  the publish (the message carries its context, so consumers join to it);
  the producer spans above it on the same system and channel, in the same
  trace and request, give no stage. They end together and the SDK's batch
  processor exports them together; spans exported one per request (a
  simple span processor) cannot be paired and both count.
- A span with status ERROR turns its stage into `failed` (on the producer
  side: a failed publish). The error text is the status message, else
  `error.type`, else the message of an `exception` event.
- `eventscope.stage` = one of published/received/processed/failed/retried/
  deadlettered overrides all of the above; instrumentations that know about
  retries and dead-lettering should set it.
- Dead letters by convention: a publish to a channel named like a
  dead-letter queue (`orders.dlq`, `orders-DLT`, `orders_dead_letter`...) is
  recorded as a `published` stage on that channel, and the consumer's
  process stage it belongs to (its parent span, when exported in the same
  request) becomes `deadlettered`. When the parent is a batch receive, or is
  not in the request, a separate `deadlettered` stage is added, on the
  receive's channel or else the channel the dead-letter queue collects for
  (`orders.dlq` -> `orders`).
- `linked` holds the creation contexts a consumer stage joins to: its span
  links and, on the consumer side, its parent when the parent is remote
  (span flag 0x200) or the span is CONSUMER kind, because Python's Kafka and
  RabbitMQ instrumentations use the message's context as the parent.
"""

import base64
import json
import math
import time
from dataclasses import dataclass, field

from collector import fingerprint, redact, semconv
from collector.attribute_limits import Limits, mark
from collector.batch import (
    CONSUMER,
    KIND_CONSUMER,
    KIND_PRODUCER,
    MAX_ID_CHARS,
    PRODUCER,
    STAGES,
    STATUS_ERROR,
    Batch,
    LogRow,
    SpanRow,
    StageRow,
    clip,
)
from collector.decode import hex_id, id_problem, optional_id_problem

UNKNOWN_SERVICE = "unknown_service"
MAX_INT64 = 2**63 - 1
MAX_SPAN_KIND = KIND_CONSUMER
MAX_SEVERITY = 24  # SEVERITY_NUMBER_FATAL4
SPAN_FLAGS_PARENT_IS_REMOTE = 0x300  # "has is_remote" and "is remote" bits
MAX_REASONS = 5


@dataclass
class Normalized:
    """A batch plus what was refused from the request, for partial_success."""

    batch: Batch
    rejected: int = 0
    reasons: list[str] = field(default_factory=list)

    def reject(self, reason: str) -> None:
        self.rejected += 1
        if len(self.reasons) < MAX_REASONS and reason not in self.reasons:
            self.reasons.append(reason)

    def absorb(self, written) -> int:
        """Count the items the writer refused (collector.writer.WriteResult); returns how many."""
        refused = getattr(written, "refused", 0) or 0
        if refused:
            self.rejected += refused
            for reason in getattr(written, "reasons", ()) or ():
                if len(self.reasons) < MAX_REASONS and reason not in self.reasons:
                    self.reasons.append(reason)
        return refused

    @property
    def error_message(self) -> str:
        """An English summary for partial_success.error_message ('' when nothing was rejected)."""
        if not self.rejected:
            return ""
        return f"{self.rejected} item(s) rejected: " + "; ".join(self.reasons)


# ---- values ------------------------------------------------------------------


def clean_text(value: str) -> str:
    """A string PostgreSQL accepts in text and jsonb (no NUL, valid UTF-8)."""
    if "\x00" in value:
        value = value.replace("\x00", "\ufffd")
    try:
        value.encode()
    except UnicodeEncodeError:
        value = value.encode("utf-8", "replace").decode()
    return value


def _pb_text(value: str) -> str:
    """`clean_text` for strings read from a protobuf message: the parser refuses
    invalid UTF-8 in string fields, so only NUL (which PostgreSQL refuses) is left."""
    return value.replace("\x00", "\ufffd") if "\x00" in value else value


def any_value(value):
    """An OTLP AnyValue as a JSON-able Python value (bytes become base64 text)."""
    which = value.WhichOneof("value")
    if which == "string_value":
        return _pb_text(value.string_value)
    if which is None:
        return None
    if which == "int_value":
        return value.int_value
    if which == "bool_value":
        return value.bool_value
    if which == "double_value":
        number = value.double_value
        # jsonb has no NaN or Infinity.
        return number if math.isfinite(number) else str(number)
    if which == "bytes_value":
        return base64.b64encode(value.bytes_value).decode()
    if which == "array_value":
        return [any_value(v) for v in value.array_value.values]
    if which == "kvlist_value":
        return {_pb_text(kv.key): any_value(kv.value) for kv in value.kvlist_value.values}
    return None


def attributes(
    key_values, secrets: redact.Matcher | None = None, limits: Limits | None = None, dropped=0
) -> dict:
    """OTLP KeyValue list -> dict, with secret-keyed values redacted, within `limits`.

    `dropped` is the sender's own dropped_attributes_count; what the limits
    cut is added to it and recorded in the map (collector.attribute_limits).

    This runs for every span, resource, event and link, so the common case (a
    string value under a key seen before) costs one protobuf field read, one
    cached key verdict and one length check. Entries past the count limit
    are never read.
    """
    secrets = secrets or redact.matcher()
    limits = limits or Limits()
    verdicts = secrets.verdicts  # the cache is asked inline: a call per key costs more
    length = limits.length
    if len(key_values) > limits.count:
        over = len(key_values) - limits.count
        key_values = key_values[: limits.count]
        limits.dropped += over
        dropped += over
    out = {}
    cut = None
    for kv in key_values:
        key = kv.key
        secret = verdicts.get(key)
        if secret is None:
            # The verdict cache holds only short keys without NUL (redact.MAX_CACHED_KEY_CHARS,
            # which the length limit is never below), so only a miss needs these checks.
            if "\x00" in key:
                key = _pb_text(key)
            if len(key) > length:
                key = limits.text(key)
                cut = [*(cut or ()), key]
            secret = secrets.is_secret(key)
        if secret:
            out[key] = redact.REDACTED
            continue
        value = kv.value
        # A set string field is non-empty (proto3 oneof): asking for it first
        # saves a WhichOneof call on the commonest kind of value.
        text = value.string_value
        if text:
            if len(text) > length:
                text = limits.text(text)
                cut = [*(cut or ()), key]
            out[key] = _pb_text(text) if "\x00" in text else text
        else:
            before = limits.truncated
            item = bounded_value(value, limits)
            if limits.truncated != before:
                cut = [*(cut or ()), key]
            out[key] = secrets.walk(item) if isinstance(item, dict | list) else item
    if dropped or cut:
        mark(out, dropped, cut)
    return out


def bounded_value(value, limits: Limits):
    """`any_value` within the limits: strings cut to the length limit, arrays and
    maps to the count limit (elements past it are never read)."""
    which = value.WhichOneof("value")
    # Numbers first: they are the commonest values that are not strings.
    if which == "int_value":
        return value.int_value
    if which == "string_value":
        return _pb_text(limits.text(value.string_value))
    if which == "bytes_value":
        return limits.text(base64.b64encode(value.bytes_value).decode())
    if which == "array_value":
        values = value.array_value.values
        if len(values) > limits.count:
            limits.truncated += 1
            values = values[: limits.count]
        return [bounded_value(v, limits) for v in values]
    if which == "kvlist_value":
        values = value.kvlist_value.values
        if len(values) > limits.count:
            limits.truncated += 1
            values = values[: limits.count]
        return {_pb_text(limits.text(kv.key)): bounded_value(kv.value, limits) for kv in values}
    return any_value(value)


def _service(resource: dict) -> str:
    name = resource.get("service.name")
    return clip(str(name)) if name not in (None, "") else UNKNOWN_SERVICE


# ---- traces ------------------------------------------------------------------


def normalize_traces(request, project_id: int) -> Normalized:
    """ExportTraceServiceRequest -> Batch(signal="traces") of SpanRow and StageRow.

    Spans with invalid ids or no start time are rejected one by one; the rest
    of the request is kept.
    """
    result = Normalized(Batch(project_id=project_id, signal="traces"))
    # span_id -> (stage, span) for the dead-letter pass below
    stages_by_span: dict[bytes, StageRow] = {}
    dead_letter_publishes: list[tuple[StageRow, dict]] = []
    producers: list[StageRow] = []
    # (trace_id, span_id) -> stage of the legacy single-message receives counted as processing
    single_receives: dict[tuple[bytes, bytes], StageRow] = {}

    secrets = redact.matcher()
    limits = Limits()
    for resource_spans in request.resource_spans:
        resource_message = resource_spans.resource
        resource = attributes(
            resource_message.attributes, secrets, limits, resource_message.dropped_attributes_count
        )
        service = _service(resource)
        for scope_spans in resource_spans.scope_spans:
            scope = _pb_text(scope_spans.scope.name) or None
            for span in scope_spans.spans:
                # Each protobuf field read is a call into the C extension that
                # wraps what it returns, so every field is read once here.
                ids = (span.trace_id, span.span_id, span.parent_span_id)
                times = (span.start_time_unix_nano, span.end_time_unix_nano)
                kind, status = span.kind, span.status
                code = status.code
                problem = _span_problem(*ids, *times, kind, code)
                if problem:
                    result.reject(f"span {clip(span.name, 100)!r}: {problem}")
                    continue
                attrs = attributes(span.attributes, secrets, limits, span.dropped_attributes_count)
                contexts = _contexts(span.links)
                row = _span_row(
                    span, attrs, project_id, service, resource, scope, secrets, limits, ids,
                    times, kind, code, status.message, contexts,
                )  # fmt: skip
                result.batch.spans.append(row)
                stage = _stage_row(span, attrs, row, contexts)
                if stage is None:
                    continue
                result.batch.stages.append(stage)
                stages_by_span[row.span_id] = stage
                if stage.role == PRODUCER:
                    producers.append(stage)
                    if semconv.is_dead_letter_channel(stage.channel):
                        dead_letter_publishes.append((stage, attrs))
                elif row.kind == KIND_CONSUMER and not contexts and stage.stage == "processed":
                    if semconv.is_legacy_receive(attrs):
                        single_receives[(row.trace_id, row.span_id)] = stage

    if single_receives:
        _demote_receives_with_process_spans(single_receives, result.batch.stages)
    outer_publishes = _outer_publishes(producers, stages_by_span) if producers else {}
    if outer_publishes:
        result.batch.stages = [s for s in result.batch.stages if id(s) not in outer_publishes]
    for publish, attrs in dead_letter_publishes:
        if id(publish) not in outer_publishes:
            _mark_dead_letter(publish, attrs, stages_by_span, result.batch, outer_publishes)
    limits.report("traces")
    return result


def _span_problem(trace_id, span_id, parent_span_id, start_ns, end_ns, kind, code) -> str | None:
    """Why a span cannot be stored, or None."""
    problem = id_problem(trace_id, span_id, parent_span_id)
    if problem:
        return problem
    if not start_ns:
        return "start time is missing"
    if start_ns > MAX_INT64 or end_ns > MAX_INT64:
        return "start or end time is out of range"
    # An end before the start (a span never ended, a clock step) is kept with
    # duration 0; the kind and status come from closed lists.
    if not 0 <= kind <= MAX_SPAN_KIND:
        return f"kind {kind} is not a SpanKind (0-{MAX_SPAN_KIND})"
    if not 0 <= code <= STATUS_ERROR:
        return f"status code {code} is not a StatusCode (0-{STATUS_ERROR})"
    return None


def _span_row(
    span, attrs, project_id, service, resource, scope, secrets, limits, ids, times, kind, code,
    message, contexts,
) -> SpanRow:  # fmt: skip
    trace_id, span_id, parent_span_id = ids
    start_ns, end_ns = times
    events = span.events
    name = span.name
    if len(name) > limits.length:
        name = limits.text(name)
    if len(message) > limits.length:
        message = limits.text(message)
    return SpanRow(
        project_id=project_id,
        trace_id=trace_id,
        span_id=span_id,
        parent_span_id=parent_span_id or None,
        start_time_ns=start_ns,
        duration_ns=max(0, end_ns - start_ns),
        service=service,
        name=_pb_text(name),
        kind=kind,
        status_code=code,
        status_message=_pb_text(message) or None,
        attributes=attrs,
        resource=resource,
        events=[
            {
                "name": _pb_text(limits.text(event.name)),
                "time_ns": event.time_unix_nano,
                "attributes": attributes(
                    event.attributes, secrets, limits, event.dropped_attributes_count
                ),
            }
            for event in events
        ]
        if events
        else [],
        links=[
            {
                "trace_id": hex_id(link_trace),
                "span_id": hex_id(link_span),
                "attributes": attributes(
                    link.attributes, secrets, limits, link.dropped_attributes_count
                ),
            }
            for link_trace, link_span, link in contexts
        ],
        scope=scope,
    )


def _contexts(links) -> list[tuple[bytes, bytes, object]]:
    """(trace id, span id, link) of the span links that name a valid context."""
    out = []
    for link in links:
        trace_id, span_id = link.trace_id, link.span_id
        if trace_id and span_id and optional_id_problem(trace_id, span_id) is None:
            out.append((trace_id, span_id, link))
    return out


def _stage_and_role(row: SpanRow, found, attrs, contexts) -> tuple[str, str] | None:
    override = found.get("stage")
    if isinstance(override, str) and override.lower() in STAGES:
        stage = override.lower()
        return stage, PRODUCER if stage == "published" else CONSUMER
    operation = semconv.operation_type(found)
    if (
        operation == "receive"
        and row.kind == KIND_CONSUMER
        and not contexts
        and semconv.is_legacy_receive(attrs)
    ):
        # One pushed message handed to the callback inside this span: its processing.
        operation = "process"
    if operation is None:
        if row.kind == KIND_PRODUCER:
            operation = "send"
        elif row.kind == KIND_CONSUMER:
            operation = "process"
        else:
            return None
    mapped = semconv.OPERATION_STAGE.get(operation)
    if mapped is None:
        return None
    stage, role = mapped
    if row.status_code == STATUS_ERROR:
        stage = "failed"
    return stage, role


def _error_text(found, row: SpanRow) -> str | None:
    if row.status_message:
        return row.status_message
    error_type = found.get("error_type")
    if error_type:
        return str(error_type)
    # The events as stored: their attributes are already within the limits.
    for event in row.events:
        if event["name"] == "exception":
            event_attrs = event["attributes"]
            message = event_attrs.get("exception.message") or event_attrs.get("exception.type")
            if message:
                return str(message)
    return "error" if row.status_code == STATUS_ERROR else None


def _stage_row(span, attrs, row: SpanRow, contexts) -> StageRow | None:
    found = semconv.fields(attrs)
    if not semconv.is_messaging(attrs, found):
        return None
    mapped = _stage_and_role(row, found, attrs, contexts)
    if mapped is None:
        return None
    stage, role = mapped
    linked = [(link_trace, link_span) for link_trace, link_span, _ in contexts]
    if (
        role == CONSUMER
        and row.parent_span_id
        and (
            span.flags & SPAN_FLAGS_PARENT_IS_REMOTE == SPAN_FLAGS_PARENT_IS_REMOTE
            or row.kind == KIND_CONSUMER
        )
    ):
        linked.append((row.trace_id, row.parent_span_id))
    message_id = found.get("message_id")
    return StageRow(
        project_id=row.project_id,
        time_ns=row.start_time_ns,
        stage=stage,
        role=role,
        service=row.service,
        system=clip(semconv.text(found, "system")),
        channel=clip(semconv.channel(found, role)),
        consumer_group=clip(semconv.text(found, "consumer_group")) if role == CONSUMER else "",
        trace_id=row.trace_id,
        span_id=row.span_id,
        parent_span_id=row.parent_span_id,
        linked=list(dict.fromkeys(linked)) if len(linked) > 1 else linked,
        event_id=clip(str(message_id), MAX_ID_CHARS) if message_id is not None else None,
        error=_error_text(found, row) if stage in ("failed", "deadlettered") else None,
        duration_ms=row.duration_ns / 1e6,
        error_type=fingerprint.error_type(
            found.get("error_type"),
            [e["attributes"].get("exception.type") for e in row.events if e["name"] == "exception"],
        ),
    )


def _demote_receives_with_process_spans(single_receives: dict, stages: list[StageRow]) -> None:
    """A legacy receive with a process span of its own under it (or linked to
    it) in the request is a receipt, not the processing: it goes back to
    `received`."""
    for stage in stages:
        if stage.role != CONSUMER or stage.stage not in ("processed", "failed", "deadlettered"):
            continue
        if (stage.trace_id, stage.span_id) in single_receives:
            continue
        for owner in ((stage.trace_id, stage.parent_span_id), *stage.linked):
            receive = single_receives.get(owner)
            if receive is not None:
                receive.stage = "received"


def _outer_publishes(producers: list[StageRow], stages_by_span: dict) -> dict[int, StageRow]:
    """The producer stages (by id()) that have a producer stage on the same
    system and channel right under them in the same trace: one publish seen
    by two nested instrumentations. Maps to the innermost publish."""
    outer: dict[int, StageRow] = {}
    for stage in producers:
        parent = stages_by_span.get(stage.parent_span_id) if stage.parent_span_id else None
        if (
            parent is not None
            and parent.role == PRODUCER
            and parent.trace_id == stage.trace_id
            and (parent.system, parent.channel) == (stage.system, stage.channel)
        ):
            outer[id(parent)] = stage
    return outer


def _mark_dead_letter(
    publish: StageRow, attrs, stages_by_span, batch: Batch, outer_publishes: dict
) -> None:
    """Record the consumer-side dead-lettering implied by a publish to a dead-letter channel."""
    parent = stages_by_span.get(publish.parent_span_id) if publish.parent_span_id else None
    # A nested publish: the consumer span it belongs to is above the outer producer spans.
    while parent is not None and id(parent) in outer_publishes:
        parent = stages_by_span.get(parent.parent_span_id) if parent.parent_span_id else None
    error = publish.error or f"dead-lettered to {publish.channel}"
    if parent is not None and parent.role == CONSUMER and parent.stage in ("processed", "failed"):
        # One message handled and then dead-lettered: that handling is the outcome.
        parent.error = parent.error or error
        parent.stage = "deadlettered"
        return
    # A batch receive (or no consumer span at hand): the dead letter is a stage
    # of its own, on the consumer's channel when known.
    consumer = parent if parent is not None and parent.role == CONSUMER else None
    batch.stages.append(
        StageRow(
            project_id=publish.project_id,
            time_ns=publish.time_ns,
            stage="deadlettered",
            role=CONSUMER,
            service=publish.service,
            system=consumer.system if consumer else publish.system,
            channel=consumer.channel
            if consumer
            else semconv.origin_of_dead_letter_channel(publish.channel),
            consumer_group=consumer.consumer_group if consumer else "",
            trace_id=publish.trace_id,
            span_id=publish.span_id,
            parent_span_id=publish.parent_span_id,
            linked=list(consumer.linked) if consumer else [],
            event_id=publish.event_id,
            error=error,
            duration_ms=publish.duration_ms,
            error_type=publish.error_type,
        )
    )


# ---- logs ----------------------------------------------------------------------


def _body_text(value, secrets: redact.Matcher, limits: Limits) -> str | None:
    if value.WhichOneof("value") == "string_value":
        # A log message is not an attribute: it is kept whole.
        return _pb_text(value.string_value)
    # A structured body (a map of fields) is bounded and redacted like attributes.
    body = bounded_value(value, limits)
    if body is None:
        return None
    if isinstance(body, str):
        return body
    return json.dumps(secrets.walk(body), ensure_ascii=False)


def normalize_logs(request, project_id: int) -> Normalized:
    """ExportLogsServiceRequest -> Batch(signal="logs") of LogRow.

    A record without a timestamp takes its observed time, else the receive
    time; a record whose trace context is malformed is rejected.
    """
    result = Normalized(Batch(project_id=project_id, signal="logs"))
    received_ns = time.time_ns()
    secrets = redact.matcher()
    limits = Limits()
    for resource_logs in request.resource_logs:
        resource_message = resource_logs.resource
        resource = attributes(
            resource_message.attributes, secrets, limits, resource_message.dropped_attributes_count
        )
        service = _service(resource)
        for scope_logs in resource_logs.scope_logs:
            for record in scope_logs.log_records:
                problem = optional_id_problem(record.trace_id, record.span_id)
                if problem is None and not 0 <= record.severity_number <= MAX_SEVERITY:
                    problem = f"severity number {record.severity_number} is out of range"
                if (
                    problem is None
                    and max(record.time_unix_nano, record.observed_time_unix_nano) > MAX_INT64
                ):
                    problem = "time is out of range"
                if problem:
                    result.reject(f"log record: {problem}")
                    continue
                body = _body_text(record.body, secrets, limits)
                result.batch.logs.append(
                    LogRow(
                        project_id=project_id,
                        time_ns=record.time_unix_nano
                        or record.observed_time_unix_nano
                        or received_ns,
                        service=service,
                        severity_number=record.severity_number,
                        severity_text=_pb_text(record.severity_text) or None,
                        body=body,
                        trace_id=record.trace_id or None,
                        span_id=record.span_id or None,
                        attributes=attributes(
                            record.attributes, secrets, limits, record.dropped_attributes_count
                        ),
                        time_from_record=bool(
                            record.time_unix_nano or record.observed_time_unix_nano
                        ),
                    )
                )
    limits.report("logs")
    return result
