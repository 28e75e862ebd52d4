import base64
import datetime as dt
import json
from pathlib import Path

import pytest

from collector.batch import CONSUMER, ORIGIN_CLOUDEVENT, PRODUCER
from collector.cloudevents import normalize_events, parse_time
from collector.decode import DecodeError, UnsupportedMediaType
from collector.redact import REDACTED
from collector.traceparent import parse_traceparent, valid_tracestate

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "cloudevents"
RECEIVED_NS = 1_751_600_000_000_000_000  # 2025-07-04
STRUCTURED = {"content-type": "application/cloudevents+json"}
BATCH = {"content-type": "application/cloudevents-batch+json"}


@pytest.fixture(autouse=True)
def fixtures_within_retention(settings):
    # The fixtures carry fixed 2025 times; keep them inside the storage window.
    settings.RETENTION_DAYS = (dt.date.today() - dt.date(2025, 7, 1)).days + 30


def events(headers, body, **kw):
    return normalize_events(headers, body, project_id=5, received_ns=RECEIVED_NS)


def test_structured_mode_gives_an_envelope_and_a_published_stage():
    result = events(STRUCTURED, (FIXTURES / "structured_order_created.json").read_bytes())
    assert result.accepted == 1 and result.rejected == []
    (envelope,) = result.batch.envelopes
    (stage,) = result.batch.stages
    assert (envelope.source, envelope.event_id, envelope.type) == (
        "/shop/orders",
        "order-2001",
        "com.example.shop.order.created",
    )
    assert envelope.subject == "orders/2001"
    assert envelope.time_ns == parse_time("2025-07-03T10:15:30.123456789Z")
    assert envelope.time_ns % 1_000_000_000 == 123456789
    assert envelope.time_from_event
    assert envelope.trace_id.hex() == "4bf92f3577b34da6a3ce929d0e0e4736"
    assert envelope.extensions["tracestate"] == "rojo=00f067aa0ba902b7,congo=t61rcWkgMzE"
    assert (stage.stage, stage.role, stage.service) == ("published", PRODUCER, "orders")
    assert (stage.system, stage.channel, stage.duration_ms) == ("kafka", "shop.orders", 4.5)
    assert stage.span_id.hex() == "00f067aa0ba902b7"  # the creation context
    assert (stage.event_id, stage.event_source, stage.origin) == (
        "order-2001",
        "/shop/orders",
        ORIGIN_CLOUDEVENT,
    )


def test_payload_secrets_are_redacted_at_every_depth():
    result = events(STRUCTURED, (FIXTURES / "structured_order_created.json").read_bytes())
    data = result.batch.envelopes[0].data
    assert data["customer"] == {"id": "c-42", "email": "ada@example.com", "password": REDACTED}
    assert data["payment"] == {"cardNumber": REDACTED, "cvv": REDACTED}
    assert data["items"] == [{"sku": "book-1", "qty": 2, "api_key": REDACTED}]
    assert data["total"] == 42.5


def test_a_mixed_batch_keeps_the_good_events_and_reports_the_bad_by_index():
    result = events(BATCH, (FIXTURES / "batch_mixed.json").read_bytes())
    assert result.accepted == 2
    assert result.rejected == [
        {"index": 1, "error": "'specversion' must be \"1.0\", got '0.3'"},
        {"index": 3, "error": "required attribute 'id' is missing"},
        {"index": 4, "error": "an event must be a JSON object, got string"},
        {
            "index": 5,
            "error": "'esstage' must be one of published, received, processed, failed, "
            "retried, deadlettered, got 'exploded'",
        },
        {
            "index": 6,
            "error": "'time' must be an RFC 3339 timestamp such as 2025-07-03T10:15:30.5Z, "
            "got 'yesterday'",
        },
    ]
    received, failed = result.batch.stages
    assert (received.stage, received.role, received.consumer_group) == (
        "received",
        CONSUMER,
        "payments",
    )
    assert received.span_id is None
    assert [(t.hex(), s.hex()) for t, s in received.linked] == [
        ("4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7")
    ]
    assert (failed.stage, failed.error, failed.duration_ms) == ("failed", "card declined", 250.0)
    # +02:00 offset: 08:15:31.25 UTC
    assert failed.time_ns == parse_time("2025-07-03T08:15:31.25Z")
    assert result.batch.envelopes[1].data == {"reason": "declined"}  # data_base64 JSON


def event(**attributes) -> dict:
    return {"specversion": "1.0", "id": "1", "source": "/s", "type": "t", **attributes}


@pytest.mark.parametrize(
    "time",
    [
        "yesterday",
        "2025-07-03T00:00:001234Z",  # seconds run on into the fraction
        "2025-07-03 10:15:30Z",  # RFC 3339's date-time separator is T
        "2025-07-03T10:15:30",  # no offset
        "2025-07-03T10:15:30.Z",  # a dot without digits
        "2025-07-03T24:00:00Z",
        "2025-07-03T10:15:61Z",
        "2025-07-03T10:15:30+05:99",
        "2025-07-03T10:15:30+24:00",
        "2025-02-30T10:15:30Z",
        "",
        1751537730,
    ],
)
def test_an_invalid_time_rejects_the_event_naming_the_attribute(time):
    result = events(BATCH, json.dumps([event(time=time), event(id="2")]).encode())
    assert result.accepted == 1
    ((rejected),) = result.rejected
    assert rejected["index"] == 0
    assert "'time'" in rejected["error"]
    assert result.batch.envelopes[0].event_id == "2"


@pytest.mark.parametrize(
    ("time", "utc"),
    [
        ("2025-07-03T10:15:30.123456789012Z", "2025-07-03T10:15:30.123456789Z"),  # 12 digits
        ("2025-07-03t10:15:30z", "2025-07-03T10:15:30Z"),
        ("2025-07-03T12:15:30.5+02:00", "2025-07-03T10:15:30.5Z"),
        ("2025-07-03T05:15:30-05:00", "2025-07-03T10:15:30Z"),
        ("2025-06-30T23:59:60Z", "2025-06-30T23:59:59Z"),  # a leap second
    ],
)
def test_any_rfc3339_time_is_read(time, utc):
    (envelope,) = events(STRUCTURED, json.dumps(event(time=time)).encode()).batch.envelopes
    assert envelope.time_ns == parse_time(utc)
    assert envelope.time_from_event


def test_without_a_time_the_event_gets_the_receive_time():
    (envelope,) = events(STRUCTURED, json.dumps(event()).encode()).batch.envelopes
    assert envelope.time_ns == RECEIVED_NS
    assert not envelope.time_from_event


def test_an_invalid_traceparent_is_ignored_not_an_error():
    body = event(
        esstage="deadlettered",
        traceparent="00-4BF92F3577B34DA6A3CE929D0E0E4736-00F067AA0BA902B7-01",  # uppercase
        tracestate="rojo=00f067aa0ba902b7",
        datacontenttype="text/plain",
        data="ship to: nowhere",
    )
    result = events(STRUCTURED, json.dumps(body).encode())
    (envelope,), (stage,) = result.batch.envelopes, result.batch.stages
    assert envelope.trace_id is None and stage.linked == []
    assert "traceparent" not in envelope.extensions and "tracestate" not in envelope.extensions
    assert envelope.data_text == "ship to: nowhere"  # text/plain stays text


def test_binary_mode_reads_percent_encoded_ce_headers():
    headers = {
        "content-type": "application/json",
        "ce-specversion": "1.0",
        "ce-id": "order-3001",
        "ce-source": "/shop/orders",
        "ce-type": "com.example.shop.order.shipped",
        "ce-subject": "Order%20%E2%82%AC42",
        "ce-esstage": "processed",
        "ce-esservice": '"shipping"',
        "ce-eschannel": "shop.orders",
        "ce-essystem": "rabbitmq",
        "ce-esgroup": "shipping",
        "ce-esduration": "12.5",
        "ce-traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        "traceparent": "00-11111111111111111111111111111111-2222222222222222-01",
    }
    result = events(headers, b'{"carrier": "dhl", "token": "s3cr3t"}')
    assert result.accepted == 1
    envelope, stage = result.batch.envelopes[0], result.batch.stages[0]
    assert envelope.subject == "Order €42"
    assert "traceparent" in envelope.extensions
    assert envelope.extensions["traceparent"].startswith("00-4bf92f35")
    assert envelope.datacontenttype == "application/json"
    assert envelope.data == {"carrier": "dhl", "token": REDACTED}
    # The CloudEvents traceparent (creation context) wins over the per-hop header.
    assert envelope.trace_id.hex() == "4bf92f3577b34da6a3ce929d0e0e4736"
    assert (stage.stage, stage.service, stage.consumer_group, stage.duration_ms) == (
        "processed",
        "shipping",
        "shipping",
        12.5,
    )


@pytest.mark.parametrize(
    ("raw", "text"),
    [
        ("%e2%82%ac 42", "€ 42"),  # lowercase hex
        ("%41%42c", "ABc"),  # over-encoded
        ('"quoted%20value"', "quoted value"),
        ("100%25", "100%"),
        ("\u00e2\u0082\u00ac", "€"),  # raw UTF-8 bytes, as the receiver decodes them (latin-1)
    ],
)
def test_binary_mode_header_values_are_percent_decoded_utf8(raw, text):
    headers = {
        "ce-specversion": "1.0",
        "ce-id": "1",
        "ce-source": "/s",
        "ce-type": "t",
        "ce-subject": raw,
    }
    (envelope,) = events(headers, b"").batch.envelopes
    assert envelope.subject == text


def test_binary_mode_rejects_a_header_that_is_not_utf8():
    headers = {
        "ce-specversion": "1.0",
        "ce-id": "1",
        "ce-source": "/s",
        "ce-type": "t",
        "ce-subject": "%ff%fe",
    }
    result = events(headers, b"")
    assert result.rejected == [
        {"index": 0, "error": "a ce- header is not valid percent-encoded UTF-8"}
    ]


def test_binary_mode_without_ce_headers_is_an_unsupported_media_type():
    with pytest.raises(UnsupportedMediaType, match="ce-id"):
        events({"content-type": "text/plain"}, b"hello")


def test_binary_mode_keeps_undecodable_payloads_as_base64():
    headers = {
        "content-type": "application/octet-stream",
        "ce-specversion": "1.0",
        "ce-id": "b-1",
        "ce-source": "/s",
        "ce-type": "t",
    }
    result = events(headers, b"\x00\xff\x10")
    envelope = result.batch.envelopes[0]
    assert envelope.data_base64 and base64.b64decode(envelope.data_text) == b"\x00\xff\x10"
    assert envelope.data_size == 3


def test_esservice_defaults_to_the_source_and_esstage_to_published():
    body = json.dumps({"specversion": "1.0", "id": "1", "source": "/billing", "type": "t"})
    (stage,) = events(STRUCTURED, body.encode()).batch.stages
    assert (stage.service, stage.stage, stage.role) == ("/billing", "published", PRODUCER)


def test_payloads_over_the_cap_are_stored_truncated(settings):
    settings.PAYLOAD_MAX_BYTES = 100
    body = json.dumps(
        {"specversion": "1.0", "id": "1", "source": "/s", "type": "t", "data": {"blob": "é" * 500}}
    )
    envelope = events(STRUCTURED, body.encode()).batch.envelopes[0]
    assert envelope.truncated and envelope.data is None
    assert len(envelope.data_text.encode()) <= 100
    assert envelope.data_text.startswith('{"blob": "éé')
    assert envelope.data_size == len(json.dumps({"blob": "é" * 500}, ensure_ascii=False).encode())


@pytest.mark.parametrize(
    ("event", "error"),
    [
        ({"data": 1, "data_base64": "AA=="}, "mutually exclusive"),
        ({"data_base64": "***"}, "not valid base64"),
        ({"esduration": "slow"}, "'esduration' must be a number"),
        ({"esduration": -3}, "non-negative"),
        ({"Bad-Name": "x"}, "attribute name 'Bad-Name' is invalid"),
        ({"esgroup": {"a": 1}}, "must be a string, number or boolean"),
        ({"source": ""}, "'source' must be a non-empty string"),
    ],
)
def test_each_invalid_event_gets_a_clear_reason(event, error):
    body = json.dumps(
        [{"specversion": "1.0", "id": "1", "source": "/s", "type": "t", **event}]
    ).encode()
    result = events(BATCH, body)
    assert result.accepted == 0
    assert error in result.rejected[0]["error"]


@pytest.mark.parametrize(
    ("headers", "body", "message"),
    [
        (STRUCTURED, b'{"id": ', "invalid JSON: Expecting value at line 1 column 8"),
        (BATCH, b'{"id": "1"}', "must be a JSON array, got object"),
        (STRUCTURED, b"[]", "must be a JSON object, got array"),
    ],
)
def test_bad_json_is_a_decode_error_saying_what_is_wrong(headers, body, message):
    with pytest.raises(DecodeError, match=message.replace("[", r"\[")):
        events(headers, body)


def test_structured_formats_other_than_json_are_unsupported():
    with pytest.raises(UnsupportedMediaType, match="avro"):
        events({"content-type": "application/cloudevents+avro"}, b"...")


# ---- W3C trace context -----------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        " 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00",
        "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-future-field",
        "cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-09",
    ],
)
def test_valid_traceparents(value):
    trace_id, parent_id, _ = parse_traceparent(value)
    assert trace_id.hex() == "4bf92f3577b34da6a3ce929d0e0e4736"
    assert parent_id.hex() == "00f067aa0ba902b7"


@pytest.mark.parametrize(
    "value",
    [
        "",
        "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",  # uppercase
        "00-00000000000000000000000000000000-00f067aa0ba902b7-01",  # zero trace id
        "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",  # zero parent id
        "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",  # forbidden version
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",  # v00 is exactly 55
        "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01x",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
    ],
)
def test_invalid_traceparents(value):
    assert parse_traceparent(value) is None


def test_tracestate_validation():
    assert valid_tracestate("rojo=00f067aa0ba902b7,congo=t61rcWkgMzE")
    assert valid_tracestate("tenant@vendor=x")
    assert not valid_tracestate("no-equals-sign")
    assert not valid_tracestate("a=1,a=2")
    assert not valid_tracestate(",".join(f"k{i}=v" for i in range(33)))


def test_a_bad_tracestate_is_dropped_but_the_traceparent_kept():
    body = json.dumps(
        {
            "specversion": "1.0",
            "id": "1",
            "source": "/s",
            "type": "t",
            "traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "tracestate": "BAD KEY=1",
        }
    ).encode()
    envelope = events(STRUCTURED, body).batch.envelopes[0]
    assert envelope.trace_id is not None
    assert "tracestate" not in envelope.extensions


def test_times_outside_the_storage_window_are_rejected(settings):
    settings.RETENTION_DAYS = 7

    def event(time):
        return {"specversion": "1.0", "id": "1", "source": "/s", "type": "t", "time": time}

    body = json.dumps(
        [
            event("2025-06-20T00:00:00Z"),
            event("2025-07-06T00:00:00Z"),
            event("2025-07-03T23:00:00Z"),
        ]
    ).encode()
    result = events(BATCH, body)
    assert result.rejected == [
        {"index": 0, "error": "'time' is older than the 7-day retention window"},
        {"index": 1, "error": "'time' is more than a day in the future"},
    ]
    assert result.accepted == 1


# ---- numbers JSON cannot carry or PostgreSQL cannot store ------------------------


def test_events_with_nan_infinity_or_overlong_numbers_are_rejected_by_name():
    good = json.dumps(event(id="good", data={"total": 1.5}))
    huge = "9" * 5000
    body = (
        f'[{good}, {{"specversion": "1.0", "id": "a", "source": "/s", "type": "t",'
        ' "data": {"a": Infinity}},'
        ' {"specversion": "1.0", "id": "b", "source": "/s", "type": "t", "esx": NaN},'
        ' {"specversion": "1.0", "id": "c", "source": "/s", "type": "t",'
        ' "data": {"items": [1, -Infinity]}},'
        f' {{"specversion": "1.0", "id": "d", "source": "/s", "type": "t", "data": {huge}}},'
        ' {"specversion": "1.0", "id": "e", "source": "/s", "type": "t", "data": 1e400},'
        f" {good}]"
    )
    result = events(BATCH, body.encode())
    assert result.rejected == [
        {
            "index": 1,
            "error": "attribute 'data' at data.a: Infinity is not a JSON number "
            "(JSON has no NaN or Infinity)",
        },
        {
            "index": 2,
            "error": "attribute 'esx': NaN is not a JSON number (JSON has no NaN or Infinity)",
        },
        {
            "index": 3,
            "error": "attribute 'data' at data.items[1]: -Infinity is not a JSON number "
            "(JSON has no NaN or Infinity)",
        },
        {
            "index": 4,
            "error": "attribute 'data': an integer of 5000 digits is over the 4300-digit limit",
        },
        {"index": 5, "error": "attribute 'data': 1e400 is beyond the range of a 64-bit float"},
    ]
    assert result.accepted == 2
    assert [e.data for e in result.batch.envelopes] == [{"total": 1.5}, {"total": 1.5}]


def test_a_structured_event_with_nan_is_rejected_naming_the_attribute():
    body = b'{"specversion": "1.0", "id": "1", "source": "/s", "type": "t", "esduration": NaN}'
    result = events(STRUCTURED, body)
    assert result.accepted == 0
    assert result.rejected[0]["error"].startswith("attribute 'esduration': NaN is not")


def test_an_esduration_too_large_for_a_float_is_rejected():
    body = json.dumps([event(esduration=10**400), event(esduration="1e400")]).encode()
    result = events(BATCH, body)
    assert result.rejected == [
        {
            "index": 0,
            "error": "'esduration' must be a number of milliseconds, got an integer of 401 digits",
        },
        {
            "index": 1,
            "error": "'esduration' must be a non-negative number of milliseconds, got '1e400'",
        },
    ]


@pytest.mark.parametrize(
    "payload",
    [b'{"a": Infinity}', b'{"n": NaN}', b'{"n": ' + b"9" * 5000 + b"}"],
    ids=["infinity", "nan", "5000-digit-integer"],
)
def test_a_binary_json_payload_json_cannot_carry_is_kept_as_text(payload):
    # As a payload that is not JSON at all: the event is stored, its body as sent.
    headers = {
        "content-type": "application/json",
        "ce-specversion": "1.0",
        "ce-id": "b-2",
        "ce-source": "/s",
        "ce-type": "t",
    }
    result = events(headers, payload)
    (envelope,) = result.batch.envelopes
    assert (envelope.data, envelope.data_text) == (None, payload.decode())


def test_a_base64_json_payload_json_cannot_carry_is_kept_as_base64():
    raw = b'{"a": -Infinity}'
    body = json.dumps(
        event(datacontenttype="application/json", data_base64=base64.b64encode(raw).decode())
    )
    (envelope,) = events(STRUCTURED, body.encode()).batch.envelopes
    assert envelope.data is None
    assert envelope.data_base64 and base64.b64decode(envelope.data_text) == raw


def test_overlong_ids_are_refused_and_overlong_names_are_cut():
    base = {"specversion": "1.0", "type": "OrderPlaced", "source": "/shop"}
    batch = [
        {**base, "id": "i" * 600},
        {**base, "id": "ok-1", "source": "/" + "s" * 600},
        {**base, "id": "ok-2", "eschannel": "c" * 5000, "esservice": "v" * 5000},
    ]
    result = events(BATCH, json.dumps(batch).encode())
    assert result.accepted == 1
    assert result.rejected == [
        {"index": 0, "error": "'id' is 600 characters long; at most 512 are accepted"},
        {"index": 1, "error": "'source' is 601 characters long; at most 512 are accepted"},
    ]
    (stage,) = result.batch.stages
    assert len(stage.channel) == 256 and len(stage.service) == 256
