import gzip
import json
import re
import time
import tracemalloc
import zlib
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from collector.decode import (
    JSON,
    PROTOBUF,
    BodyTooLarge,
    DecodeError,
    UnsupportedMediaType,
    UnusableNumber,
    decode_request,
    decompress,
    id_problem,
    media_type,
    parse_json,
)

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "otlp"


def fixture(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def all_spans(request):
    return [span for rs in request.resource_spans for ss in rs.scope_spans for span in ss.spans]


# ---- content type and encoding ---------------------------------------------------


def test_it_picks_the_decoder_from_the_content_type():
    assert media_type("application/x-protobuf") == PROTOBUF
    assert media_type("application/json; charset=utf-8") == JSON
    assert media_type("Application/JSON") == JSON


@pytest.mark.parametrize("content_type", [None, "", "text/plain", "application/xml"])
def test_it_refuses_unknown_content_types(content_type):
    with pytest.raises(UnsupportedMediaType, match="application/x-protobuf"):
        media_type(content_type)


def test_it_inflates_gzip_zlib_and_raw_deflate():
    body = b"spans" * 1000
    raw = zlib.compressobj(wbits=-zlib.MAX_WBITS)
    raw_deflate = raw.compress(body) + raw.flush()
    assert decompress(gzip.compress(body), "gzip", 10**6) == body
    assert decompress(zlib.compress(body), "deflate", 10**6) == body
    assert decompress(raw_deflate, "deflate", 10**6) == body
    assert decompress(body, None, 10**6) == body
    assert decompress(body, "identity", 10**6) == body


def test_it_reads_concatenated_gzip_members():
    assert decompress(gzip.compress(b"ab") + gzip.compress(b"cd"), "gzip", 100) == b"abcd"


def test_it_stops_a_gzip_bomb_at_the_limit():
    bomb = gzip.compress(b"\0" * (50 * 1024 * 1024))
    assert len(bomb) < 100 * 1024
    with pytest.raises(BodyTooLarge, match="1048576 byte limit"):
        decompress(bomb, "gzip", 1024 * 1024)


def test_it_refuses_a_compressed_body_over_the_limit():
    with pytest.raises(BodyTooLarge):
        decompress(b"x" * 2048, "gzip", 1024)


def test_a_body_exactly_at_the_limit_is_fine():
    body = b"y" * 4096
    assert decompress(gzip.compress(body), "gzip", 4096) == body


def test_it_reports_corrupt_and_truncated_gzip():
    with pytest.raises(DecodeError, match="corrupt gzip"):
        decompress(b"definitely not gzip", "gzip", 1000)
    with pytest.raises(DecodeError, match="truncated gzip"):
        decompress(gzip.compress(b"hello world" * 100)[:-12], "gzip", 10000)


def test_it_refuses_unknown_encodings():
    with pytest.raises(UnsupportedMediaType, match="'br'"):
        decompress(b"...", "br", 1000)


# ---- OTLP JSON -----------------------------------------------------------------


def test_json_hex_ids_decode_to_the_right_bytes():
    request = decode_request("traces", fixture("traces_kafka_messaging.json"), JSON)
    spans = all_spans(request)
    assert len(spans) == 4
    server, producer, consumer, failed = spans
    assert server.trace_id == bytes.fromhex("5b8efff798038103d269b633813fc60c")
    assert server.span_id == bytes.fromhex("eee19b7ec3c1b174")
    assert producer.parent_span_id == server.span_id
    assert consumer.trace_id == producer.trace_id  # upper and lower case hex agree
    assert consumer.parent_span_id == producer.span_id
    assert consumer.flags == 769
    assert failed.status.code == 2
    assert producer.kind == 4 and consumer.kind == 5
    assert producer.start_time_unix_nano == 1751540000010000000
    for span in spans:
        assert id_problem(span.trace_id, span.span_id, span.parent_span_id) is None


def test_json_link_log_and_exemplar_ids_are_hex_too():
    traces = decode_request("traces", fixture("traces_rabbitmq_batch_receive.json"), JSON)
    links = all_spans(traces)[0].links
    assert [link.span_id.hex() for link in links] == ["1a2b3c4d5e6f7081", "00f067aa0ba902b7"]
    assert links[1].trace_id.hex() == "0af7651916cd43dd8448eb211c80319c"

    logs = decode_request("logs", fixture("logs_consumer_error.json"), JSON)
    record = logs.resource_logs[0].scope_logs[0].log_records[0]
    assert record.trace_id.hex() == "0af7651916cd43dd8448eb211c80319c"
    assert record.span_id.hex() == "b7ad6b7169203331"

    metrics = decode_request("metrics", fixture("metrics_kafka_lag_exemplar.json"), JSON)
    histogram = metrics.resource_metrics[0].scope_metrics[0].metrics[1].histogram
    exemplar = histogram.data_points[0].exemplars[0]
    assert exemplar.trace_id.hex() == "0af7651916cd43dd8448eb211c80319c"
    assert exemplar.span_id.hex() == "b7ad6b7169203331"
    assert histogram.data_points[0].count == 3


def test_bytes_values_stay_base64():
    document = {
        "resourceSpans": [
            {
                "scopeSpans": [
                    {
                        "spans": [
                            {
                                "traceId": "5b8efff798038103d269b633813fc60c",
                                "spanId": "eee19b7ec3c1b174",
                                "attributes": [{"key": "raw", "value": {"bytesValue": "AAEC"}}],
                            }
                        ]
                    }
                ]
            }
        ]
    }
    request = decode_request("traces", json.dumps(document).encode(), JSON)
    assert all_spans(request)[0].attributes[0].value.bytes_value == b"\x00\x01\x02"


def test_unknown_json_fields_are_ignored():
    body = json.dumps({"resourceSpans": [], "futureField": {"x": 1}}).encode()
    assert decode_request("traces", body, JSON) == ExportTraceServiceRequest()


def test_a_malformed_hex_id_fails_only_the_length_check():
    document = {
        "resourceSpans": [
            {"scopeSpans": [{"spans": [{"traceId": "zz-not-hex", "spanId": "eee19b7ec3c1b174"}]}]}
        ]
    }
    span = all_spans(decode_request("traces", json.dumps(document).encode(), JSON))[0]
    assert id_problem(span.trace_id, span.span_id) == "trace id must be 16 bytes, got 1"


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b'{"resourceSpans": [', "invalid JSON: Expecting value at line 1 column 20"),
        (b"[1, 2]", "expected an object, got list"),
        (b'{"resourceSpans": "nope"}', "invalid OTLP JSON ExportTraceServiceRequest"),
        (b"\xff\xfe", "not UTF-8"),
    ],
)
def test_undecodable_json_says_what_is_wrong(body, message):
    with pytest.raises(DecodeError, match=message.replace("[", r"\[")):
        decode_request("traces", body, JSON)


SPAN_WITH = (
    '{"resourceSpans": [{"scopeSpans": [{"spans": [{"traceId": '
    '"5b8efff798038103d269b633813fc60c", "spanId": "eee19b7ec3c1b174", "attributes": '
    '[{"key": "x", "value": {"doubleValue": %s}}]}]}]}]}'
)


@pytest.mark.parametrize(
    ("number", "message"),
    [
        ("NaN", "invalid JSON: NaN is not a JSON number (JSON has no NaN or Infinity)"),
        ("Infinity", "invalid JSON: Infinity is not a JSON number"),
        ("-Infinity", "invalid JSON: -Infinity is not a JSON number"),
        ("1e400", "invalid JSON: 1e400 is beyond the range of a 64-bit float"),
        ("9" * 5000, "invalid JSON: an integer of 5000 digits is over the 4300-digit limit"),
    ],
    ids=["nan", "infinity", "-infinity", "1e400", "5000-digit-integer"],
)
def test_numbers_python_reads_but_json_does_not_have_are_a_decode_error(number, message):
    # json.loads takes all of these; none can be stored, and a bare ValueError would be a 500.
    with pytest.raises(DecodeError, match=re.escape(message)):
        decode_request("traces", (SPAN_WITH % number).encode(), JSON)


def test_parse_json_can_mark_unusable_numbers_instead_of_failing():
    unusable = []
    document = parse_json(b'{"a": [1, NaN], "b": 2.5}', unusable=unusable)
    (marker,) = unusable
    assert document == {"a": [1, marker], "b": 2.5}
    assert isinstance(marker, UnusableNumber) and marker.problem.startswith("NaN")


def test_undecodable_protobuf_is_a_decode_error():
    with pytest.raises(DecodeError, match="invalid protobuf ExportTraceServiceRequest"):
        decode_request("traces", b"\x0a\xff\xff\xff\xff\x0f", PROTOBUF)


def test_protobuf_round_trips():
    request = decode_request("traces", fixture("traces_kafka_messaging.json"), JSON)
    assert decode_request("traces", request.SerializeToString(), PROTOBUF) == request


def test_id_problem_names_each_invalid_id():
    trace, span = b"\x01" * 16, b"\x02" * 8
    assert id_problem(trace, span) is None
    assert id_problem(b"\x00" * 16, span) == "trace id is all zeros"
    assert id_problem(trace, b"\x00" * 8) == "span id is all zeros"
    assert id_problem(trace, b"\x01" * 7) == "span id must be 8 bytes, got 7"
    assert "parent span id" in id_problem(trace, span, b"\x01" * 3)


# ---- decompression stays linear and bounded -------------------------------------


def _peak_bytes(function, *args):
    """The peak of Python allocations while `function(*args)` runs (or raises)."""
    tracemalloc.start()
    try:
        function(*args)
    except BodyTooLarge:
        pass
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return peak


def test_many_gzip_members_of_zeros_stop_at_the_limit_in_bounded_memory():
    # 3 members of 100 kB of zeros are 396 bytes on the wire; flush() after
    # each member's end used to inflate the rest again, doubling per member.
    member = gzip.compress(b"\0" * 100_000)
    bomb = member * 1000
    limit = 1024 * 1024
    with pytest.raises(BodyTooLarge):
        decompress(bomb, "gzip", limit)
    assert _peak_bytes(decompress, bomb, "gzip", limit) < limit + len(bomb) + 512 * 1024


def test_a_thousand_small_members_inflate_to_their_concatenation():
    members = [f"member {i};".encode() for i in range(1000)]
    body = b"".join(gzip.compress(m) for m in members)
    assert decompress(body, "gzip", 10**6) == b"".join(members)


def test_tiny_empty_members_up_to_the_body_limit_take_linear_time():
    empty = gzip.compress(b"")
    body = empty * (2 * 1024 * 1024 // len(empty))  # about 100,000 members
    started = time.process_time()
    assert decompress(body, "gzip", 20 * 1024 * 1024) == b""
    # Quadratic copying of the remainder would take minutes here.
    assert time.process_time() - started < 20


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    sizes=st.lists(st.integers(0, 300_000), min_size=1, max_size=12),
    coding=st.sampled_from(["gzip", "zlib", "raw"]),
    limit=st.integers(1, 600_000),
    fill=st.sampled_from([b"\0", b"span ", bytes(range(256))]),
)
def test_inflating_any_members_never_holds_more_than_the_limit(sizes, coding, limit, fill):
    payloads = [(fill * (size // len(fill) + 1))[:size] for size in sizes]
    if coding == "gzip":
        body, encoding, expected = (
            b"".join(map(gzip.compress, payloads)),
            "gzip",
            b"".join(payloads),
        )
    else:
        # zlib and raw deflate streams carry one member.
        expected = payloads[0]
        wbits = zlib.MAX_WBITS if coding == "zlib" else -zlib.MAX_WBITS
        deflater = zlib.compressobj(wbits=wbits)
        body, encoding = deflater.compress(expected) + deflater.flush(), "deflate"
    if len(body) > limit:
        with pytest.raises(BodyTooLarge):
            decompress(body, encoding, limit)
        return
    if len(expected) > limit:
        with pytest.raises(BodyTooLarge, match="inflates past"):
            decompress(body, encoding, limit)
    else:
        assert decompress(body, encoding, limit) == expected
    # The output buffer, the input and one slice of each: never a copy per member.
    assert _peak_bytes(decompress, body, encoding, limit) <= 2 * limit + len(body) + 256 * 1024
