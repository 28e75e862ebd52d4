"""The compiled trace reader against upb + normalize_traces: the same rows, rejections
and limit reports for any request, or the same DecodeError after a counted fallback."""

import logging
import types
from pathlib import Path
from unittest import mock

import pytest
from django.test import override_settings
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import (
    AnyValue,
    ArrayValue,
    InstrumentationScope,
    KeyValue,
    KeyValueList,
)
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span, Status

from collector import stats
from collector.admission import Admission
from collector.compiled import copy_of
from collector.decode import JSON, PROTOBUF, DecodeError, decode_request
from collector.normalize import normalize_traces, spans, stages, wire
from collector.receivers import otlp_grpc, otlp_http

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "otlp"

# ---- what both paths give ---------------------------------------------------------------


def upb_path(body: bytes, project_id=7):
    """(result, None) or (None, the DecodeError's message) through upb."""
    try:
        request = decode_request("traces", body, PROTOBUF)
    except DecodeError as exc:
        return None, str(exc)
    return normalize_traces(request, project_id), None


def cuts():
    snapshot = stats.snapshot()["truncated_attributes"]
    return snapshot["count"]["traces"], snapshot["length"]["traces"]


def assert_same(body: bytes, *, compiled: bool | None = True):
    """Both paths agree on `body`; `compiled`: whether the reader must take it
    itself (True), must hand it to upb (False), or either (None)."""
    cuts_before = cuts()
    expected, error = upb_path(body)
    cuts_upb = tuple(a - b for a, b in zip(cuts(), cuts_before, strict=True))
    fallbacks = stats.snapshot()["wire_fallbacks"]
    cuts_before = cuts()
    try:
        got = wire.traces_from_protobuf(body, 7)
    except DecodeError as exc:
        assert error == str(exc)
        got = None
    else:
        assert error is None, f"upb refused it ({error}), the reader did not"
    fell_back = stats.snapshot()["wire_fallbacks"] - fallbacks
    if compiled is not None:
        assert fell_back == (0 if compiled else 1)
    if got is None:
        return None
    assert tuple(a - b for a, b in zip(cuts(), cuts_before, strict=True)) == cuts_upb
    assert (got.rejected, got.reasons) == (expected.rejected, expected.reasons)
    assert (got.batch.project_id, got.batch.signal) == (7, "traces")
    # repr: every field of every row, dict order and types included (1 != 1.0 != True)
    assert [repr(row) for row in got.batch.spans] == [repr(row) for row in expected.batch.spans]
    assert [repr(row) for row in got.batch.stages] == [repr(row) for row in expected.batch.stages]
    assert [row.dedupe_key() for row in got.batch.stages] == [
        row.dedupe_key() for row in expected.batch.stages
    ]
    return got


# ---- random requests -------------------------------------------------------------------------

LONG = 300  # past the attribute length limit of the limited tests (and the key cache's)
_texts = st.one_of(
    st.text(max_size=12),
    st.text(alphabet="aé\x00€𝄞 .", max_size=8),
    st.builds(
        lambda c, n: c * n, st.sampled_from(["x", "é", "€", "\x00", "ab"]), st.integers(240, LONG)
    ),
)
_MESSAGING = {
    "messaging.system": ["kafka", "rabbitmq", "aws.sqs", "nats", ""],
    "messaging.destination.name": ["orders", "orders.dlq", "orders-DLT", "payments_dead_letter"],
    "messaging.destination": ["orders", "shipments.dlq"],
    "messaging.operation.type": ["publish", "receive", "process", "settle", "create", "send"],
    "messaging.operation": ["receive", "publish", "process", "deliver"],
    "messaging.operation.name": ["poll", "consume", "ack", "produce"],
    "messaging.message.id": ["m-1", "m-2", ""],
    "messaging.consumer.group.name": ["billing", "shipping"],
    "messaging.batch.message_count": ["3"],
    "eventscope.stage": ["retried", "deadlettered", "FAILED", "bogus"],
    "error.type": ["TimeoutError", "ValueError"],
    "rpc.method": ["SendMessage", "ReceiveMessage"],
    "exception.type": ["KeyError"],
    "exception.message": ["no such order"],
    "service.name": ["orders", "payments", ""],
}
_keys = st.one_of(
    st.sampled_from(sorted(_MESSAGING)),
    st.sampled_from(["password", "X-Api-Key", "http.route", "cardNumber", "", "a\x00b", "ключ"]),
    _texts,
)


def _scalar(draw_value):
    return st.one_of(
        st.builds(lambda s: AnyValue(string_value=s), draw_value),
        st.builds(lambda b: AnyValue(bool_value=b), st.booleans()),
        st.builds(lambda i: AnyValue(int_value=i), st.integers(-(2**63), 2**63 - 1)),
        st.builds(lambda d: AnyValue(double_value=d), st.floats()),
        st.builds(lambda b: AnyValue(bytes_value=b), st.binary(max_size=12)),
        st.builds(AnyValue),
        st.builds(lambda: AnyValue(string_value="")),
    )


_values = st.recursive(
    _scalar(_texts),
    lambda inner: st.one_of(
        st.lists(inner, max_size=5).map(lambda v: AnyValue(array_value=ArrayValue(values=v))),
        st.lists(st.tuples(_keys, inner), max_size=5).map(
            lambda kvs: AnyValue(
                kvlist_value=KeyValueList(values=[KeyValue(key=k, value=v) for k, v in kvs])
            )
        ),
    ),
    max_leaves=8,
)


@st.composite
def _key_value(draw):
    key = draw(_keys)
    if key in _MESSAGING and draw(st.booleans()):
        return KeyValue(
            key=key, value=AnyValue(string_value=draw(st.sampled_from(_MESSAGING[key])))
        )
    if draw(st.integers(0, 9)) == 0:
        return KeyValue(key=key)  # no value at all
    return KeyValue(key=key, value=draw(_values))


_attributes = st.lists(_key_value(), max_size=5)
_dropped = st.one_of(st.just(0), st.integers(0, 2**32 - 1))
_TRACES = [bytes.fromhex("0af7651916cd43dd8448eb211c80319c"), bytes(range(1, 17))]
_SPANS = [bytes([i]) * 8 for i in range(1, 6)]
_trace_ids = st.one_of(st.sampled_from(_TRACES), st.sampled_from([b"", bytes(16), b"\x01" * 15]))
_span_ids = st.one_of(st.sampled_from(_SPANS), st.sampled_from([b"", bytes(8), b"\x02" * 9]))
_times = st.one_of(
    st.sampled_from([0, 1, 1_700_000_000_000_000_000, 2**63 - 1, 2**63, 2**64 - 1]),
    st.integers(0, 2**64 - 1),
)


@st.composite
def _span(draw):
    span = Span(
        trace_id=draw(st.sampled_from(_TRACES) if draw(st.integers(0, 5)) else _trace_ids),
        span_id=draw(st.sampled_from(_SPANS) if draw(st.integers(0, 5)) else _span_ids),
        parent_span_id=draw(st.one_of(st.just(b""), _span_ids)),
        name=draw(_texts),
        kind=draw(st.one_of(st.integers(0, 5), st.integers(-(2**31), 2**31 - 1))),
        start_time_unix_nano=draw(
            st.one_of(st.integers(1_700_000_000_000_000_000, 1_700_000_000_100_000_000), _times)
        ),
        end_time_unix_nano=draw(
            st.one_of(st.integers(1_700_000_000_000_000_000, 1_700_000_000_100_000_000), _times)
        ),
        attributes=draw(_attributes),
        dropped_attributes_count=draw(_dropped),
        flags=draw(st.sampled_from([0, 0x100, 0x300, 0x301, 2**32 - 1])),
        trace_state=draw(st.sampled_from(["", "vendor=1"])),
        dropped_events_count=draw(_dropped),
        dropped_links_count=draw(_dropped),
    )
    if draw(st.booleans()):
        span.status.CopyFrom(
            Status(
                code=draw(st.one_of(st.integers(0, 2), st.integers(-(2**31), 2**31 - 1))),
                message=draw(_texts),
            )
        )
    for _ in range(draw(st.integers(0, 2))):
        event = span.events.add(
            name=draw(st.one_of(st.just("exception"), _texts)),
            time_unix_nano=draw(_times),
            dropped_attributes_count=draw(_dropped),
        )
        event.attributes.extend(draw(_attributes))
    for _ in range(draw(st.integers(0, 3))):
        link = span.links.add(
            trace_id=draw(_trace_ids),
            span_id=draw(_span_ids),
            dropped_attributes_count=draw(_dropped),
            flags=draw(st.sampled_from([0, 0x300])),
        )
        link.attributes.extend(draw(_attributes))
    return span


@st.composite
def requests(draw):
    request = ExportTraceServiceRequest()
    for _ in range(draw(st.integers(0, 2))):
        resource = Resource(attributes=draw(_attributes), dropped_attributes_count=draw(_dropped))
        resource_spans = ResourceSpans(schema_url=draw(st.sampled_from(["", "https://x"])))
        if draw(st.integers(0, 4)):
            resource_spans.resource.CopyFrom(resource)
        for _ in range(draw(st.integers(0, 2))):
            scope_spans = ScopeSpans(spans=draw(st.lists(_span(), max_size=4)))
            if draw(st.booleans()):
                scope_spans.scope.CopyFrom(
                    InstrumentationScope(
                        name=draw(_texts), version="1.0", attributes=draw(_attributes)
                    )
                )
            resource_spans.scope_spans.append(scope_spans)
        request.resource_spans.append(resource_spans)
    return request.SerializeToString()


_hypothesis = settings(
    max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


@_hypothesis
@given(requests())
def test_random_requests_give_the_same_rows_as_upb(body):
    assert_same(body)


@_hypothesis
@given(requests())
def test_random_requests_within_tight_limits_give_the_same_rows_cuts_and_reports(body):
    with override_settings(MAX_ATTRIBUTES=2, MAX_ATTRIBUTE_LENGTH=256):
        assert_same(body)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(requests())
def test_the_compiled_stage_rules_give_what_stages_py_gives(body):
    request = decode_request("traces", body, PROTOBUF)
    compiled = normalize_traces(request, 7)
    python = {name: getattr(stages, name) for name in _STAGE_FUNCTIONS}
    with mock.patch.multiple(spans, **python):
        expected = normalize_traces(request, 7)
    assert [repr(r) for r in compiled.batch.stages] == [repr(r) for r in expected.batch.stages]
    assert [repr(r) for r in compiled.batch.spans] == [repr(r) for r in expected.batch.spans]


_STAGE_FUNCTIONS = (
    "_contexts", "_stage_row", "_demote_receives_with_process_spans", "_mark_dead_letter",
    "_outer_publishes",
)  # fmt: skip


def test_every_fixture_request_gives_the_same_rows():
    for path in sorted(FIXTURES.glob("traces_*.json")):
        request = decode_request("traces", path.read_bytes(), JSON)
        got = assert_same(request.SerializeToString())
        assert got.batch.spans or got.rejected, path.name


# ---- hand-made wire bytes ----------------------------------------------------------------


def varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def field(number: int, payload: bytes) -> bytes:
    return varint(number << 3 | 2) + varint(len(payload)) + payload


def fixed64(number: int, value: int) -> bytes:
    return varint(number << 3 | 1) + value.to_bytes(8, "little")


def request_of(span: bytes, resource: bytes = b"") -> bytes:
    service = field(1, field(1, b"service.name") + field(2, field(1, b"orders")))
    return field(
        1, field(1, resource or service) + field(2, field(1, field(1, b"lib")) + field(2, span))
    )


def span_of(*extra: bytes, name=b"publish orders") -> bytes:
    return (
        field(1, _TRACES[0])
        + field(2, _SPANS[0])
        + field(5, name)
        + varint(6 << 3)
        + varint(4)
        + fixed64(7, 1_700_000_000_000_000_000)
        + fixed64(8, 1_700_000_000_005_000_000)
        + field(9, field(1, b"messaging.system") + field(2, field(1, b"kafka")))
        + field(9, field(1, b"messaging.destination.name") + field(2, field(1, b"orders")))
        + b"".join(extra)
    )


UNKNOWN = {
    "varint": varint(99 << 3) + varint(2**63),
    "fixed64": varint(99 << 3 | 1) + bytes(8),
    "length-delimited": field(99, b"\xff\xfe anything"),
    "fixed32": varint(99 << 3 | 5) + bytes(4),
}


@pytest.mark.parametrize("kind", sorted(UNKNOWN))
def test_unknown_fields_of_every_wire_type_are_skipped_at_every_level(kind):
    unknown = UNKNOWN[kind]
    event = field(11, fixed64(1, 5) + field(2, b"exception") + unknown)
    link = field(13, field(1, _TRACES[1]) + field(2, _SPANS[1]) + unknown)
    attribute = field(9, field(1, b"k") + field(2, field(1, b"v") + unknown) + unknown)
    span = span_of(unknown, event, link, attribute, field(15, varint(3 << 3) + varint(2) + unknown))
    got = assert_same(unknown + request_of(span) + unknown)
    assert got.batch.spans[0].attributes["k"] == "v"
    assert got.batch.stages[0].stage == "failed"


def test_an_unknown_group_goes_to_upb_which_skips_it():
    group = varint(99 << 3 | 3) + varint(1 << 3) + varint(5) + varint(99 << 3 | 4)
    got = assert_same(request_of(span_of(group)), compiled=False)
    assert len(got.batch.spans) == 1


def test_scalar_fields_sent_twice_keep_the_last_value():
    span = span_of(
        field(5, b"the last name"),
        varint(6 << 3) + varint(5),
        fixed64(7, 1_700_000_000_001_000_000),
        field(1, _TRACES[1]),
        field(
            9,
            field(1, b"k")
            + field(1, b"key")
            + field(2, field(1, b"a") + varint(3 << 3) + varint(7)),
        ),
    )
    got = assert_same(request_of(span))
    row = got.batch.spans[0]
    assert (row.name, row.kind, row.trace_id) == ("the last name", 5, _TRACES[1])
    assert row.attributes["key"] == 7 and "k" not in row.attributes


def test_a_message_field_sent_twice_is_merged_by_upb():
    status = field(15, varint(3 << 3) + varint(2)) + field(15, field(2, b"timed out"))
    got = assert_same(request_of(span_of(status)), compiled=False)
    assert (got.batch.spans[0].status_code, got.batch.spans[0].status_message) == (2, "timed out")


def test_a_known_field_with_the_wrong_wire_type_goes_to_upb():
    got = assert_same(request_of(span_of(varint(5 << 3) + varint(1))), compiled=False)
    assert got.batch.spans[0].name == "publish orders"


def test_truncated_requests_get_upbs_error_or_its_rows():
    body = request_of(span_of(field(11, fixed64(1, 5) + field(2, b"exception"))))
    refused = 0
    for end in range(len(body)):
        if assert_same(body[:end], compiled=None) is None:
            refused += 1
    assert refused > len(body) // 2


@pytest.mark.parametrize(
    "where",
    ["name", "key", "value", "scope", "schema_url", "trace_state", "event", "link_trace_state"],
)
def test_invalid_utf8_anywhere_gets_upbs_decode_error(where):
    bad = b"ok \xc3\x28 \xed\xa0\x80"
    span = {
        "name": span_of(name=bad),
        "key": span_of(field(9, field(1, bad) + field(2, field(1, b"v")))),
        "value": span_of(field(9, field(1, b"k") + field(2, field(1, bad)))),
        "trace_state": span_of(field(3, bad)),
        "event": span_of(field(11, field(2, bad))),
        "link_trace_state": span_of(field(13, field(3, bad))),
    }.get(where, span_of())
    body = request_of(span)
    if where == "scope":
        body = field(1, field(2, field(1, field(1, bad)) + field(2, span)))
    elif where == "schema_url":
        body = field(1, field(3, bad) + field(2, field(2, span)))
    fallbacks = stats.snapshot()["wire_fallbacks"]
    with pytest.raises(DecodeError, match="invalid protobuf ExportTraceServiceRequest"):
        wire.traces_from_protobuf(body, 7)
    assert stats.snapshot()["wire_fallbacks"] == fallbacks + 1
    assert upb_path(body)[0] is None


@pytest.mark.parametrize("depth", [1, 10, 25, 40, 60, 200])
def test_deeply_nested_values_get_upbs_answer(depth):
    value = field(1, b"leaf")
    for _ in range(depth):
        value = field(5, field(1, value))  # AnyValue{array_value{values: [value]}}
    body = request_of(span_of(field(9, field(1, b"deep") + field(2, value))))
    got = assert_same(body, compiled=None if depth >= 25 else True)
    if depth >= 60:
        assert got is None  # past upb's recursion limit
    else:
        leaf = got.batch.spans[0].attributes["deep"]
        for _ in range(depth):
            leaf = leaf[0]
        assert leaf == "leaf"


def test_over_long_varints_and_bad_lengths_get_upbs_answer():
    for broken in (
        varint(6 << 3) + b"\xff" * 10 + b"\x01",
        field(5, b"x")[:-1] + b"\x7f",
        varint(0) + varint(1),  # field number 0
        varint(5 << 3 | 7),  # no such wire type
    ):
        assert_same(request_of(span_of(broken)), compiled=None)


def test_enum_values_past_32_bits_are_cut_as_upb_cuts_them():
    for kind in (2**32 + 4, 2**63 + 2, 2**64 - 1):
        assert_same(request_of(span_of(varint(6 << 3) + varint(kind))))


# ---- in the receivers ----------------------------------------------------------------------


def test_the_receivers_read_protobuf_traces_with_the_compiled_reader(monkeypatch):
    assert wire.compiled(), "collector/normalize/_wire is not built: run `make install`"
    assert spans._stages.__name__ == "collector.normalize._stages", "stale or not built"
    assert spans._stages.semconv.__name__ == "collector._semconv", "stale or not built"
    from collector.normalize import _wire

    calls = []
    real = _wire.normalize

    def counted(body, project_id):
        calls.append(len(body))
        return real(body, project_id)

    monkeypatch.setattr(_wire, "normalize", counted)
    body = request_of(span_of())
    reservation = Admission(10**8).reservation()
    try:
        _, http = otlp_http._decode_otlp("traces", body, None, PROTOBUF, 7, reservation)
    finally:
        reservation.release()
    grpc = otlp_grpc.TraceService(writer=None).decode(body, 7)
    assert calls == [len(body), len(body)]
    assert (
        [s.name for s in http.batch.spans]
        == [s.name for s in grpc.batch.spans]
        == ["publish orders"]
    )


def test_the_fallback_count_is_on_the_metrics_page():
    before = stats.snapshot()["wire_fallbacks"]
    with pytest.raises(DecodeError):
        wire.traces_from_protobuf(b"\x0a\x05abc", 7)
    assert stats.snapshot()["wire_fallbacks"] == before + 1
    lines = stats.render().splitlines()
    line = next(text for text in lines if text.startswith("eventscope_wire_fallbacks"))
    assert float(line.split()[-1]) >= before + 1


def test_without_the_extension_the_upb_path_answers_and_the_start_warns(monkeypatch, caplog):
    body = request_of(span_of())
    expected, _ = upb_path(body)
    monkeypatch.setattr(wire, "_wire", None)
    monkeypatch.setattr(wire, "_missing", "No module named 'collector.normalize._wire'")
    assert not wire.compiled()
    fallbacks = stats.snapshot()["wire_fallbacks"]
    got = wire.traces_from_protobuf(body, 7)
    assert [repr(r) for r in got.batch.spans] == [repr(r) for r in expected.batch.spans]
    assert stats.snapshot()["wire_fallbacks"] == fallbacks  # not a fallback: nothing to fall from
    with caplog.at_level(logging.WARNING, logger="collector.normalize.wire"):
        wire.warn_if_missing()
    assert "compiled OTLP trace reader is not built" in caplog.text


def test_a_compiled_copy_older_than_its_source_is_not_used(tmp_path, caplog):
    from collector import _semconv, semconv

    assert copy_of("collector._semconv", semconv) is _semconv
    edited = tmp_path / "semconv.py"
    edited.write_text(Path(semconv.__file__).read_text())  # written now: newer than the build
    source = types.ModuleType("collector.semconv")
    source.__file__ = str(edited)
    with caplog.at_level(logging.WARNING, logger="collector.compiled"):
        assert copy_of("collector._semconv", source) is source
    assert "older than collector.semconv" in caplog.text
    assert copy_of("collector._not_built", semconv) is semconv
