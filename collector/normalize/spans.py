"""OTLP trace requests to span rows and the stages they imply."""

from collector import redact, semconv
from collector.attribute_limits import Limits
from collector.batch import (
    KIND_CONSUMER,
    PRODUCER,
    STATUS_ERROR,
    Batch,
    SpanRow,
    StageRow,
    clip,
)
from collector.compiled import copy_of
from collector.decode import hex_id, id_problem
from collector.normalize import stages
from collector.normalize.rows import span_row
from collector.normalize.values import MAX_INT64, Normalized, _pb_text, _service, attributes

# stages.py compiled as it is (collector/normalize/_stages.pyx) when built
_stages = copy_of("collector.normalize._stages", stages)
_contexts, _stage_row = _stages._contexts, _stages._stage_row
_demote_receives_with_process_spans = _stages._demote_receives_with_process_spans
_mark_dead_letter, _outer_publishes = _stages._mark_dead_letter, _stages._outer_publishes

MAX_SPAN_KIND = KIND_CONSUMER
_ZERO_TRACE_ID, _ZERO_SPAN_ID = bytes(16), bytes(8)


class TraceRequest:
    """What normalising one trace request keeps besides its rows: the rejections,
    the attribute limits and secrets of the request, and the stages that the
    passes over the whole request (dead letters, nested publishes, legacy
    receives) revisit. `normalize_traces` and the compiled wire reader
    (collector.normalize._wire) both fill it, span by span."""

    __slots__ = (
        "result", "secrets", "limits", "stages_by_span", "dead_letter_publishes", "producers",
        "single_receives",
    )  # fmt: skip

    def __init__(self, project_id: int):
        self.result = Normalized(Batch(project_id=project_id, signal="traces"))
        self.secrets = redact.matcher()
        self.limits = Limits()
        # span_id -> stage, for the dead-letter pass
        self.stages_by_span: dict[bytes, StageRow] = {}
        self.dead_letter_publishes: list[tuple[StageRow, dict]] = []
        self.producers: list[StageRow] = []
        # (trace_id, span_id) -> stage of the legacy single-message receives counted as processing
        self.single_receives: dict[tuple[bytes, bytes], StageRow] = {}

    def reject_span(self, name, trace_id, span_id, parent_span_id, start_ns, end_ns, kind, code):
        """Refuse a span that failed the validity check (the message says why)."""
        problem = _span_problem(trace_id, span_id, parent_span_id, start_ns, end_ns, kind, code)
        self.result.reject(f"span {clip(name, 100)!r}: {problem}")

    def add_stage(self, flags: int, attrs: dict, row: SpanRow, contexts) -> None:
        """The stage a stored span implies, if any (`contexts`: its links' valid contexts)."""
        stage = _stage_row(flags, attrs, row, contexts)
        if stage is None:
            return
        self.result.batch.stages.append(stage)
        self.stages_by_span[row.span_id] = stage
        if stage.role == PRODUCER:
            self.producers.append(stage)
            if semconv.is_dead_letter_channel(stage.channel):
                self.dead_letter_publishes.append((stage, attrs))
        elif row.kind == KIND_CONSUMER and not contexts and stage.stage == "processed":
            if semconv.is_legacy_receive(attrs):
                self.single_receives[(row.trace_id, row.span_id)] = stage

    def finish(self) -> Normalized:
        """The passes over the whole request, then the result."""
        batch = self.result.batch
        if self.single_receives:
            _demote_receives_with_process_spans(self.single_receives, batch.stages)
        producers = self.producers
        outer_publishes = _outer_publishes(producers, self.stages_by_span) if producers else {}
        if outer_publishes:
            batch.stages = [s for s in batch.stages if id(s) not in outer_publishes]
        for publish, attrs in self.dead_letter_publishes:
            if id(publish) not in outer_publishes:
                _mark_dead_letter(publish, attrs, self.stages_by_span, batch, outer_publishes)
        self.limits.report("traces")
        return self.result


def normalize_traces(request, project_id: int) -> Normalized:
    """ExportTraceServiceRequest -> Batch(signal="traces") of SpanRow and StageRow.

    Spans with invalid ids or no start time are rejected one by one; the rest
    of the request is kept. collector.normalize.wire does the same from the
    request's protobuf bytes; the two give the same result for any request.
    """
    state = TraceRequest(project_id)
    secrets, limits = state.secrets, state.limits
    length = limits.length
    spans_out = state.result.batch.spans
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
                # wraps what it returns, so every field is read once here, and
                # the row is built in place rather than through helpers.
                trace_id, span_id, parent_span_id = span.trace_id, span.span_id, span.parent_span_id
                start_ns, end_ns = span.start_time_unix_nano, span.end_time_unix_nano
                kind, status = span.kind, span.status
                code = status.code
                if (
                    len(trace_id) != 16
                    or len(span_id) != 8
                    or (parent_span_id and len(parent_span_id) != 8)
                    or trace_id == _ZERO_TRACE_ID
                    or span_id == _ZERO_SPAN_ID
                    or not 0 < start_ns <= MAX_INT64
                    or end_ns > MAX_INT64
                    or not 0 <= kind <= MAX_SPAN_KIND
                    or not 0 <= code <= STATUS_ERROR
                ):
                    state.reject_span(
                        span.name, trace_id, span_id, parent_span_id, start_ns, end_ns, kind, code
                    )
                    continue
                attrs = attributes(span.attributes, secrets, limits, span.dropped_attributes_count)
                links = span.links
                contexts = _contexts(links) if links else ()
                name, message, events = span.name, status.message, span.events
                if len(name) > length:
                    name = limits.text(name)
                if len(message) > length:
                    message = limits.text(message)
                row = span_row(
                    project_id, trace_id, span_id, parent_span_id or None, start_ns,
                    end_ns - start_ns if end_ns > start_ns else 0, service,
                    _pb_text(name) if "\x00" in name else name, kind, code,
                    (_pb_text(message) if "\x00" in message else message) or None, attrs,
                    resource, _events(events, secrets, limits) if events else [],
                    _links(contexts, secrets, limits) if contexts else [], scope,
                )  # fmt: skip
                spans_out.append(row)
                state.add_stage(span.flags, attrs, row, contexts)
    return state.finish()


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


def _events(events, secrets, limits) -> list[dict]:
    return [
        {
            "name": _pb_text(limits.text(event.name)),
            "time_ns": event.time_unix_nano,
            "attributes": attributes(
                event.attributes, secrets, limits, event.dropped_attributes_count
            ),
        }
        for event in events
    ]


def _links(contexts, secrets, limits) -> list[dict]:
    return [
        {
            "trace_id": hex_id(link_trace),
            "span_id": hex_id(link_span),
            "attributes": attributes(
                link.attributes, secrets, limits, link.dropped_attributes_count
            ),
        }
        for link_trace, link_span, link in contexts
    ]
