"""A small shop, stored the way production data is: OTLP JSON and CloudEvents go
through the real decoders, normaliser and storage writer (no hand-made rows).

web calls orders (CLIENT → SERVER "POST /orders"), which publishes to kafka "orders";
payments (group "payments") processes it; email (group "email") fails on it;
audit (rabbitmq-free batch consumer in its own trace) links back to the publish.
"""

import asyncio
import json
import os
import threading
import time

from collector.cloudevents import normalize_events
from collector.decode import JSON, decode_request
from collector.normalize import normalize_traces
from tests.collector.receiver_harness import running_writer

KIND_SERVER, KIND_CLIENT, KIND_PRODUCER, KIND_CONSUMER = 2, 3, 4, 5


def new_trace_id() -> str:
    return os.urandom(16).hex()


def new_span_id() -> str:
    return os.urandom(8).hex()


def attr(key, value):
    if isinstance(value, bool):
        return {"key": key, "value": {"boolValue": value}}
    if isinstance(value, int):
        return {"key": key, "value": {"intValue": str(value)}}
    return {"key": key, "value": {"stringValue": str(value)}}


def span(trace_id, span_id, name, kind, start_ns, ms, parent="", attrs=None, error=None, links=()):
    """One OTLP JSON span."""
    out = {
        "traceId": trace_id,
        "spanId": span_id,
        "parentSpanId": parent,
        "name": name,
        "kind": kind,
        "startTimeUnixNano": str(start_ns),
        "endTimeUnixNano": str(start_ns + int(ms * 1e6)),
        "attributes": [attr(k, v) for k, v in (attrs or {}).items()],
        "status": {"code": 2, "message": error} if error else {},
        "links": [{"traceId": t, "spanId": s} for t, s in links],
    }
    return out


def request(spans_by_service: dict) -> dict:
    """An ExportTraceServiceRequest in OTLP JSON, one resource per service."""
    return {
        "resourceSpans": [
            {
                "resource": {"attributes": [attr("service.name", service)]},
                "scopeSpans": [{"scope": {"name": "shop"}, "spans": spans}],
            }
            for service, spans in spans_by_service.items()
        ]
    }


def messaging(system, destination, operation, group=None, message_id=None, **extra):
    attrs = {
        "messaging.system": system,
        "messaging.destination.name": destination,
        "messaging.operation.type": operation,
    }
    if group:
        attrs["messaging.consumer.group.name"] = group
    if message_id:
        attrs["messaging.message.id"] = message_id
    attrs.update(extra)
    return attrs


def order_journey(
    *, event_id="evt-1", start_ns=None, email_error="SMTP 550 mailbox unavailable", names=None
) -> tuple[dict, dict]:
    """OTLP JSON for one order's journey, and its ids {"trace", "audit_trace", "publish"...}.

    `names` overrides service/channel names (for escaping tests).
    """
    names = {
        "orders": "orders",
        "payments": "payments",
        "email": "email",
        "topic": "orders",
        **(names or {}),
    }
    start_ns = start_ns or time.time_ns() - 5_000_000_000
    trace, audit_trace = new_trace_id(), new_trace_id()
    call, root, publish, pay, mail, audit = (new_span_id() for _ in range(6))
    topic = names["topic"]
    spans = {
        "web": [span(trace, call, "POST", KIND_CLIENT, start_ns - 2_000_000, 45)],
        names["orders"]: [
            span(
                trace,
                root,
                "POST /orders",
                KIND_SERVER,
                start_ns,
                40,
                parent=call,
                attrs={"http.route": "/orders"},
            ),
            span(
                trace,
                publish,
                f"{topic} publish",
                KIND_PRODUCER,
                start_ns + 10_000_000,
                5,
                parent=root,
                attrs=messaging("kafka", topic, "send", message_id=event_id),
            ),
        ],
        names["payments"]: [
            span(
                trace,
                pay,
                f"{topic} process",
                KIND_CONSUMER,
                start_ns + 60_000_000,
                25,
                parent=publish,
                attrs=messaging("kafka", topic, "process", "payments", event_id),
            )
        ],
        names["email"]: [
            span(
                trace,
                mail,
                f"{topic} process",
                KIND_CONSUMER,
                start_ns + 80_000_000,
                12,
                parent=publish,
                attrs=messaging("kafka", topic, "process", "email", event_id),
                error=email_error,
            )
        ],
        "audit": [
            span(
                audit_trace,
                audit,
                f"{topic} receive",
                KIND_CONSUMER,
                start_ns + 90_000_000,
                3,
                attrs=messaging("kafka", topic, "receive", "audit"),
                links=[(trace, publish)],
            )
        ],
    }
    ids = {"trace": trace, "audit_trace": audit_trace, "publish": publish, "event_id": event_id}
    return request(spans), ids


def traces_batch(document: dict, project_id: int):
    """The Batch the receivers would hand to the writer for this OTLP JSON."""
    message = decode_request("traces", json.dumps(document).encode(), JSON)
    return normalize_traces(message, project_id).batch


def events_batch(events: list[dict], project_id: int):
    """The Batch of a CloudEvents batch-mode request."""
    body = json.dumps(events).encode()
    headers = {"content-type": "application/cloudevents-batch+json"}
    result = normalize_events(headers, body, project_id, time.time_ns())
    assert not result.rejected, result.rejected
    return result.batch


def store(*batches) -> None:
    """Write batches through the real storage writer (needs the `telemetry_db` fixture)."""

    async def write():
        async with running_writer() as writer:
            for batch in batches:
                await writer.submit(batch)

    # A thread of its own: browser tests call this while Playwright's loop runs here.
    errors = []
    worker = threading.Thread(target=lambda: _run(write, errors))
    worker.start()
    worker.join()
    if errors:
        raise errors[0]


def _run(coroutine_function, errors) -> None:
    try:
        asyncio.run(coroutine_function())
    except BaseException as exc:
        errors.append(exc)


def store_order(project_id: int, **kwargs) -> dict:
    """Store one order journey for the project; returns its ids."""
    document, ids = order_journey(**kwargs)
    store(traces_batch(document, project_id))
    return ids


def store_big_trace(project_id: int, spans: int) -> str:
    """One trace of `spans` spans (a root and its children); returns its id."""
    trace = new_trace_id()
    start = time.time_ns() - 60 * 10**9
    root = new_span_id()
    rows = [span(trace, root, "GET /report", KIND_SERVER, start, 5000)]
    for i in range(spans - 1):
        rows.append(
            span(trace, new_span_id(), f"SELECT row {i}", 1, start + i * 400_000, 0.3, parent=root)
        )
    store(traces_batch(request({"reports": rows}), project_id))
    return trace


def dead_lettered_order(event_id: str, source: str = "/shop/orders") -> dict:
    """The CloudEvent that reports order `event_id` dead-lettered by shipping."""
    return {
        "specversion": "1.0",
        "id": event_id,
        "source": source,
        "type": "order.created",
        "esstage": "deadlettered",
        "esservice": "shipping",
        "eschannel": "orders",
        "essystem": "rabbitmq",
        "esgroup": "shipping",
        "eserror": "address missing",
    }
