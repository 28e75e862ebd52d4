import json
from pathlib import Path

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue

from collector.batch import CONSUMER, PRODUCER
from collector.decode import JSON, decode_request
from collector.normalize import any_value, normalize_logs, normalize_traces
from collector.redact import REDACTED

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "otlp"


def traces(name: str):
    return decode_request("traces", (FIXTURES / name).read_bytes(), JSON)


def by_span(stages):
    return {stage.span_id.hex(): stage for stage in stages}


def test_every_span_becomes_a_row_with_its_service_and_attributes():
    result = normalize_traces(traces("traces_kafka_messaging.json"), project_id=7)
    assert result.rejected == 0
    spans = result.batch.spans
    assert [span.service for span in spans] == ["orders", "orders", "payments", "payments"]
    assert result.batch.signal == "traces" and result.batch.project_id == 7
    producer = spans[1]
    assert producer.attributes["messaging.destination.name"] == "shop.orders"
    assert producer.attributes["server.port"] == 9092
    assert producer.duration_ns == 4_500_000
    assert producer.parent_span_id == bytes.fromhex("eee19b7ec3c1b174")
    assert producer.resource["service.version"] == "1.4.2"
    assert producer.scope == "opentelemetry.instrumentation.aiokafka"
    json.dumps([span.attributes for span in spans])  # storable as jsonb


def test_secret_attribute_values_are_redacted_before_storage():
    result = normalize_traces(traces("traces_kafka_messaging.json"), project_id=1)
    server, _, _, failed = result.batch.spans
    assert server.attributes["http.request.header.authorization"] == REDACTED
    assert failed.attributes["payment.card_number"] == REDACTED
    assert server.attributes["http.route"] == "/orders"


def test_producer_and_consumer_spans_become_stages_with_current_and_legacy_names():
    result = normalize_traces(traces("traces_kafka_messaging.json"), project_id=1)
    stages = by_span(result.batch.stages)
    assert len(stages) == 3  # the HTTP server span is not a messaging span

    published = stages["1a2b3c4d5e6f7081"]
    assert (published.stage, published.role) == ("published", PRODUCER)
    assert (published.system, published.channel, published.service) == (
        "kafka",
        "shop.orders",
        "orders",
    )
    assert published.event_id == "order-1001"
    assert published.consumer_group == ""
    assert published.duration_ms == 4.5

    processed = stages["7c1f0a9e2b3d4c5e"]  # legacy attribute names
    assert (processed.stage, processed.role) == ("processed", CONSUMER)
    assert (processed.channel, processed.consumer_group) == ("shop.orders", "payments")
    assert processed.event_id == "order-1001"
    # Python's Kafka instrumentation makes the producer the parent: that is the link.
    assert processed.linked == [(published.trace_id, published.span_id)]


def test_a_consumer_span_with_error_status_is_a_failed_event():
    result = normalize_traces(traces("traces_kafka_messaging.json"), project_id=1)
    failed = by_span(result.batch.stages)["b7ad6b7169203331"]
    assert (failed.stage, failed.role) == ("failed", CONSUMER)
    assert failed.error == "card declined: insufficient funds"  # from the exception event
    assert failed.consumer_group == "payments"
    assert failed.linked == [
        (bytes.fromhex("0af7651916cd43dd8448eb211c80319c"), bytes.fromhex("00f067aa0ba902b7"))
    ]


def test_a_failed_stage_carries_its_error_type_for_the_failure_groups():
    result = normalize_traces(traces("traces_kafka_messaging.json"), project_id=1)
    stages = by_span(result.batch.stages)
    exception = stages["b7ad6b7169203331"].error
    events = next(s.events for s in result.batch.spans if s.span_id.hex() == "b7ad6b7169203331")
    expected = next(e["attributes"]["exception.type"] for e in events if e["name"] == "exception")
    assert exception and stages["b7ad6b7169203331"].error_type == expected
    request = _span(
        kind=5,
        attributes={
            "messaging.system": "nats",
            "messaging.destination.name": "orders",
            "error.type": "TimeoutError",
        },
    )
    request.resource_spans[0].scope_spans[0].spans[0].status.code = 2
    (stage,) = normalize_traces(request, 1).batch.stages
    assert (stage.stage, stage.error, stage.error_type) == (
        "failed",
        "TimeoutError",
        "TimeoutError",
    )


def test_batch_receive_links_to_every_producer_and_rabbitmq_queue_is_the_channel():
    result = normalize_traces(traces("traces_rabbitmq_batch_receive.json"), project_id=1)
    receive = by_span(result.batch.stages)["53995c3f42cd8ad8"]
    assert (receive.stage, receive.role, receive.system) == ("received", CONSUMER, "rabbitmq")
    assert receive.channel == "shipping-orders"
    assert [(t.hex(), s.hex()) for t, s in receive.linked] == [
        ("5b8efff798038103d269b633813fc60c", "1a2b3c4d5e6f7081"),
        ("0af7651916cd43dd8448eb211c80319c", "00f067aa0ba902b7"),
    ]
    assert result.batch.spans[0].links[0] == {
        "trace_id": "5b8efff798038103d269b633813fc60c",
        "span_id": "1a2b3c4d5e6f7081",
        "attributes": {"messaging.message.id": "order-1001"},
    }


def test_a_dead_letter_publish_under_a_batch_receive_adds_a_deadlettered_stage():
    result = normalize_traces(traces("traces_rabbitmq_batch_receive.json"), project_id=1)
    assert len(result.batch.stages) == 3
    receive, dlq, dead = result.batch.stages
    assert receive.stage == "received"
    assert (dlq.stage, dlq.role, dlq.channel) == ("published", PRODUCER, "shop.orders.dlq")
    assert (dead.stage, dead.role, dead.channel) == ("deadlettered", CONSUMER, "shipping-orders")
    assert dead.error == "dead-lettered to shop.orders.dlq"
    assert dead.event_id == "order-1002"
    assert dead.linked == receive.linked


def test_a_dead_letter_publish_turns_its_process_stage_into_deadlettered():
    request = traces("traces_rabbitmq_batch_receive.json")
    receive = request.resource_spans[0].scope_spans[0].spans[0]
    for kv in receive.attributes:
        if kv.key == "messaging.operation.type":
            kv.value.string_value = "process"
    result = normalize_traces(request, project_id=1)
    assert [s.stage for s in result.batch.stages] == ["deadlettered", "published"]
    assert result.batch.stages[0].error == "dead-lettered to shop.orders.dlq"


def test_a_dead_letter_publish_without_its_consumer_span_adds_a_deadlettered_stage():
    request = traces("traces_rabbitmq_batch_receive.json")
    del request.resource_spans[0].scope_spans[0].spans[0]
    result = normalize_traces(request, project_id=1)
    stages = sorted(result.batch.stages, key=lambda s: s.stage)
    assert [(s.stage, s.role, s.channel) for s in stages] == [
        ("deadlettered", CONSUMER, "shop.orders"),
        ("published", PRODUCER, "shop.orders.dlq"),
    ]
    assert stages[0].event_id == "order-1002"
    assert stages[0].dedupe_key() != stages[1].dedupe_key()


def _span(**fields):
    request = ExportTraceServiceRequest()
    span = request.resource_spans.add().scope_spans.add().spans.add()
    span.trace_id = bytes.fromhex("5b8efff798038103d269b633813fc60c")
    span.span_id = bytes.fromhex("eee19b7ec3c1b174")
    span.start_time_unix_nano = 1751540000000000000
    span.end_time_unix_nano = 1751540000001000000
    span.name = "work"
    for key, value in fields.pop("attributes", {}).items():
        kv = span.attributes.add(key=key)
        kv.value.string_value = value
    for key, value in fields.items():
        setattr(span, key, value)
    return request


def test_the_eventscope_stage_attribute_overrides_the_operation():
    request = _span(
        kind=5,
        attributes={
            "messaging.system": "nats",
            "messaging.destination.name": "orders.created",
            "eventscope.stage": "retried",
        },
    )
    (stage,) = normalize_traces(request, 1).batch.stages
    assert (stage.stage, stage.role, stage.system) == ("retried", CONSUMER, "nats")


def test_settle_and_non_messaging_spans_give_no_stage():
    settle = _span(
        kind=3, attributes={"messaging.system": "kafka", "messaging.operation.type": "settle"}
    )
    internal = _span(kind=1)
    assert normalize_traces(settle, 1).batch.stages == []
    assert normalize_traces(internal, 1).batch.stages == []


def test_a_failed_publish_is_a_failed_producer_stage():
    request = _span(kind=4, attributes={"messaging.system": "kafka", "error.type": "timeout"})
    request.resource_spans[0].scope_spans[0].spans[0].status.code = 2
    (stage,) = normalize_traces(request, 1).batch.stages
    assert (stage.stage, stage.role, stage.error) == ("failed", PRODUCER, "timeout")


def test_spans_with_invalid_ids_are_rejected_and_the_rest_kept():
    request = traces("traces_kafka_messaging.json")
    spans = request.resource_spans[0].scope_spans[0].spans
    spans[0].trace_id = b"\x00" * 16
    spans[1].span_id = b"short"
    result = normalize_traces(request, 1)
    assert result.rejected == 2
    assert len(result.batch.spans) == 2
    assert "trace id is all zeros" in result.error_message
    assert "span id must be 8 bytes, got 5" in result.error_message
    assert result.error_message.startswith("2 item(s) rejected")


def test_nul_characters_and_non_finite_numbers_are_made_storable():
    value = AnyValue()
    value.kvlist_value.values.add(key="a\x00b").value.string_value = "x\x00y"
    value.kvlist_value.values.add(key="nan").value.double_value = float("nan")
    value.kvlist_value.values.add(key="raw").value.bytes_value = b"\xff"
    assert any_value(value) == {"a\ufffdb": "x\ufffdy", "nan": "nan", "raw": "/w=="}


def test_log_records_keep_their_trace_context_and_redact_attributes():
    request = decode_request("logs", (FIXTURES / "logs_consumer_error.json").read_bytes(), JSON)
    result = normalize_logs(request, project_id=3)
    assert result.rejected == 0
    error, structured = result.batch.logs
    assert error.service == "payments"
    assert error.trace_id.hex() == "0af7651916cd43dd8448eb211c80319c"
    assert error.span_id.hex() == "b7ad6b7169203331"
    assert (error.severity_number, error.severity_text) == (17, "ERROR")
    assert error.body == "payment failed for order-1002: card declined"
    assert error.attributes == {
        "order.id": "order-1002",
        "db.password": REDACTED,
        "retry.attempt": 3,
    }
    assert structured.time_ns == 1751540001300000000  # observed time stands in
    assert json.loads(structured.body) == {"event": "consumer.rebalanced", "partitions": [1, 3]}
    assert structured.trace_id is None


def test_log_records_with_malformed_context_are_rejected():
    request = decode_request("logs", (FIXTURES / "logs_consumer_error.json").read_bytes(), JSON)
    request.resource_logs[0].scope_logs[0].log_records[0].span_id = b"\x01\x02"
    result = normalize_logs(request, 1)
    assert result.rejected == 1 and len(result.batch.logs) == 1


def test_spans_with_impossible_times_or_unknown_enums_are_rejected_and_the_rest_kept():
    request = traces("traces_kafka_messaging.json")
    spans = request.resource_spans[0].scope_spans[0].spans
    spans[0].end_time_unix_nano = 2**64 - 1  # past int64: no duration can be stored
    spans[1].kind = 99999
    result = normalize_traces(request, 1)
    assert result.rejected == 2
    assert "start or end time is out of range" in result.error_message
    assert "kind 99999 is not a SpanKind (0-5)" in result.error_message
    assert [s.kind for s in result.batch.spans] == [
        s.kind for s in request.resource_spans[0].scope_spans[0].spans[2:]
    ] + [s.kind for rs in request.resource_spans[1:] for ss in rs.scope_spans for s in ss.spans]


def test_a_span_that_ends_before_it_starts_is_kept_with_no_duration():
    request = traces("traces_kafka_messaging.json")
    first = request.resource_spans[0].scope_spans[0].spans[0]
    first.end_time_unix_nano = first.start_time_unix_nano - 1
    result = normalize_traces(request, 1)
    assert result.rejected == 0
    assert result.batch.spans[0].duration_ns == 0


def test_log_records_with_an_unknown_severity_are_rejected():
    request = decode_request("logs", (FIXTURES / "logs_consumer_error.json").read_bytes(), JSON)
    request.resource_logs[0].scope_logs[0].log_records[0].severity_number = 40000
    result = normalize_logs(request, 1)
    assert result.rejected == 1 and len(result.batch.logs) == 1
    assert "severity number 40000 is out of range" in result.error_message


def test_structured_log_bodies_are_redacted_like_attributes():
    request = decode_request("logs", (FIXTURES / "logs_consumer_error.json").read_bytes(), JSON)
    body = request.resource_logs[0].scope_logs[0].log_records[1].body
    body.kvlist_value.values.add(key="apiKey").value.string_value = "k-123"
    (_, structured) = normalize_logs(request, 1).batch.logs
    assert json.loads(structured.body)["apiKey"] == REDACTED
    assert json.loads(structured.body)["event"] == "consumer.rebalanced"


def test_huge_names_are_cut_so_the_rest_of_the_request_stays_storable():
    request = traces("traces_kafka_messaging.json")
    resource = request.resource_spans[0].resource
    for kv in resource.attributes:
        if kv.key == "service.name":
            kv.value.string_value = "s" * 5000
    span = request.resource_spans[0].scope_spans[0].spans[1]
    for kv in span.attributes:
        if kv.key == "messaging.destination.name":
            kv.value.string_value = "orders-" + "x" * 5000
    kv = span.attributes.add()
    kv.key, kv.value.string_value = "messaging.message.id", "m" * 5000
    result = normalize_traces(request, 1)
    assert result.rejected == 0
    stage = next(s for s in result.batch.stages if s.span_id == span.span_id)
    assert len(stage.service) == 256 and stage.service.endswith("…")
    assert len(stage.channel) == 256 and stage.channel.startswith("orders-xxx")
    assert len(stage.event_id) == 512


def test_a_log_record_without_any_time_is_marked_as_stamped_on_receipt():
    from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest

    request = ExportLogsServiceRequest()
    records = request.resource_logs.add().scope_logs.add().log_records
    records.add().body.string_value = "no time at all"
    observed = records.add()
    observed.body.string_value = "observed only"
    observed.observed_time_unix_nano = 1_700_000_000_000_000_000
    timeless, stamped = normalize_logs(request, project_id=1).batch.logs
    assert not timeless.time_from_record and timeless.time_ns > 0
    assert stamped.time_from_record and stamped.time_ns == 1_700_000_000_000_000_000
    # Retries of the timeless record, received at other times, share its key.
    later = type(timeless)(
        **{**{f: getattr(timeless, f) for f in timeless.__slots__}, "time_ns": 1}
    )
    assert later.dedupe_key() == timeless.dedupe_key()


# ---- one message, one count ------------------------------------------------------------

TRACE = bytes.fromhex("5b8efff798038103d269b633813fc60c")
PIKA_SCOPE = "opentelemetry.instrumentation.pika.utils"


def _spans(*specs, scope=PIKA_SCOPE):
    """A request of spans in one trace: (span_id hex, parent hex or '', kind, attributes,
    error message or None, [linked (trace bytes, span hex)])."""
    request = ExportTraceServiceRequest()
    scope_spans = request.resource_spans.add().scope_spans.add()
    scope_spans.scope.name = scope
    for n, (span_id, parent, kind, attributes, error, links) in enumerate(specs):
        span = scope_spans.spans.add()
        span.trace_id = TRACE
        span.span_id = bytes.fromhex(span_id)
        if parent:
            span.parent_span_id = bytes.fromhex(parent)
        span.kind = kind
        span.name = f"span {n}"
        span.start_time_unix_nano = 1751540000000000000 + n * 1000
        span.end_time_unix_nano = 1751540000001000000
        for key, value in attributes.items():
            span.attributes.add(key=key).value.string_value = value
        if error:
            span.status.code, span.status.message = 2, error
        for link_trace, link_span in links:
            link = span.links.add()
            link.trace_id, link.span_id = link_trace, bytes.fromhex(link_span)
    return request


PIKA_RECEIVE = {
    "messaging.system": "rabbitmq",
    "messaging.operation": "receive",
    "messaging.destination": "orders",
}
PIKA_PUBLISH = {"messaging.system": "rabbitmq", "messaging.destination": "orders"}


def test_a_legacy_receive_span_without_a_process_span_is_the_processing():
    request = _spans(
        ("0000000000000001", "00000000000000aa", 5, PIKA_RECEIVE, None, []),
        ("0000000000000002", "00000000000000bb", 5, PIKA_RECEIVE, "ValueError: bad order", []),
    )
    ok, bad = normalize_traces(request, 1).batch.stages
    assert (ok.stage, ok.role, ok.channel) == ("processed", CONSUMER, "orders")
    assert (bad.stage, bad.error) == ("failed", "ValueError: bad order")
    # the message's context (the parent) is what joins it to its publish
    assert ok.linked == [(TRACE, bytes.fromhex("00000000000000aa"))]


def test_receives_that_are_receipts_stay_received():
    batch = {**PIKA_RECEIVE}
    current = {**PIKA_RECEIVE, "messaging.operation.type": "receive"}
    request = _spans(
        # a batch receive links to its messages
        ("0000000000000001", "", 5, batch, None, [(TRACE, "00000000000000aa")]),
        # the current conventions' receive is a receipt
        ("0000000000000002", "00000000000000bb", 5, current, None, []),
        # a legacy receive with its own process span under it
        ("0000000000000003", "00000000000000cc", 5, PIKA_RECEIVE, None, []),
        ("0000000000000004", "0000000000000003", 5, {**PIKA_RECEIVE, "messaging.operation": "process"}, None, []),
    )  # fmt: skip
    stages = by_span(normalize_traces(request, 1).batch.stages)
    assert stages["0000000000000001"].stage == "received"
    assert stages["0000000000000002"].stage == "received"
    assert stages["0000000000000003"].stage == "received"
    assert stages["0000000000000004"].stage == "processed"


def test_nested_producer_spans_of_one_publish_count_once():
    request = _spans(
        ("0000000000000001", "00000000000000aa", 4, PIKA_PUBLISH, None, []),
        ("0000000000000002", "0000000000000001", 4, PIKA_PUBLISH, None, []),
        # a publish to another channel inside a publish is a publish of its own
        ("0000000000000003", "0000000000000001", 4, {**PIKA_PUBLISH, "messaging.destination": "audit"}, None, []),
    )  # fmt: skip
    stages = normalize_traces(request, 1).batch
    assert len(stages.spans) == 3  # every span is kept
    published = {(s.span_id.hex(), s.channel) for s in stages.stages}
    # the innermost span is the publish: the message carries its context
    assert published == {("0000000000000002", "orders"), ("0000000000000003", "audit")}


def test_a_nested_dead_letter_publish_marks_its_processing_once():
    dlq = {**PIKA_PUBLISH, "messaging.destination": "orders.dlq"}
    request = _spans(
        ("0000000000000001", "00000000000000aa", 5, PIKA_RECEIVE, None, []),
        ("0000000000000002", "0000000000000001", 4, dlq, None, []),
        ("0000000000000003", "0000000000000002", 4, dlq, None, []),
    )
    stages = normalize_traces(request, 1).batch.stages
    assert sorted((s.span_id.hex(), s.stage) for s in stages) == [
        ("0000000000000001", "deadlettered"),
        ("0000000000000003", "published"),
    ]
