"""How a span becomes a stage: the rules below, and the passes over a whole request.

The messaging conventions are read through collector.semconv, old and new
attribute names alike:

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
- A CLIENT span that sends (send/publish) and links to creation contexts
  is a batch send of messages created by spans of their own, which are the
  publishes: it gives no stage.
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

from collector import fingerprint, semconv
from collector.batch import (
    CONSUMER,
    KIND_CLIENT,
    KIND_CONSUMER,
    KIND_PRODUCER,
    MAX_ID_CHARS,
    ORIGIN_SPAN,
    PRODUCER,
    STAGES,
    STATUS_ERROR,
    Batch,
    SpanRow,
    StageRow,
    clip,
)
from collector.decode import optional_id_problem
from collector.normalize.rows import stage_row

SPAN_FLAGS_PARENT_IS_REMOTE = 0x300  # "has is_remote" and "is remote" bits


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
    if role == PRODUCER and row.kind == KIND_CLIENT and contexts:
        # A batch send linking to its messages' creation spans (the Azure
        # SDKs' ServiceBus.send): the creations are the publishes.
        return None
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


# A span's stage, role and edge names follow from its kind, error status, links
# and eight fields of semconv.fields() (the key in `_stage_row`): spans of one
# instrumentation share them, so each combination is worked out once.
_classified: dict[tuple, tuple | None] = {}
_MAX_CLASSIFIED = 10_000


def _classify(row: SpanRow, found, attrs, contexts) -> tuple | None:
    """(stage, role, system, channel, consumer group) of a messaging span, or None."""
    mapped = _stage_and_role(row, found, attrs, contexts)
    if mapped is None:
        return None
    stage, role = mapped
    return (
        stage,
        role,
        clip(semconv.system(found)),
        clip(semconv.channel(found, role)),
        clip(semconv.text(found, "consumer_group")) if role == CONSUMER else "",
    )


def _stage_row(flags: int, attrs, row: SpanRow, contexts) -> StageRow | None:
    """The stage of a stored span (`flags`: the span's flags), or None."""
    found = semconv.fields(attrs)
    if not semconv.is_messaging(attrs, found):
        return None
    kind = row.kind
    get = found.get
    # The fields one by one: unpacking a map() into the tuple cost a list.
    key = (
        kind, row.status_code == STATUS_ERROR, not contexts,
        attrs.get("messaging.operation.type") if kind == KIND_CONSUMER else None,
        get("stage"), get("operation_type"), get("operation_name"), get("system"),
        get("destination"), get("destination_template"), get("consumer_group"),
        get("rpc_method"),
    )  # fmt: skip
    try:
        classified = _classified[key]
    except KeyError:
        classified = _classify(row, found, attrs, contexts)
        if len(_classified) >= _MAX_CLASSIFIED:
            _classified.clear()
        _classified[key] = classified
    except TypeError:  # a list or map among the values
        classified = _classify(row, found, attrs, contexts)
    if classified is None:
        return None
    stage, role, system, channel, consumer_group = classified
    parent_span_id = row.parent_span_id
    linked = [(link_trace, link_span) for link_trace, link_span, _ in contexts]
    if (
        role == CONSUMER
        and parent_span_id
        and (
            flags & SPAN_FLAGS_PARENT_IS_REMOTE == SPAN_FLAGS_PARENT_IS_REMOTE
            or kind == KIND_CONSUMER
        )
    ):
        linked.append((row.trace_id, parent_span_id))
    message_id = get("message_id")
    if message_id is not None:
        message_id = clip(str(message_id), MAX_ID_CHARS)
    error_type = get("error_type")
    events = row.events
    return stage_row(
        row.project_id, row.start_time_ns, stage, role, row.service, system, channel,
        consumer_group, row.trace_id, row.span_id, parent_span_id,
        list(dict.fromkeys(linked)) if len(linked) > 1 else linked, message_id, None, None,
        _error_text(found, row) if stage in ("failed", "deadlettered") else None,
        row.duration_ns / 1e6, ORIGIN_SPAN,
        fingerprint.error_type(
            error_type,
            [e["attributes"].get("exception.type") for e in events if e["name"] == "exception"],
        )
        if error_type is not None or events
        else "",
    )  # fmt: skip


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
