"""OTLP trace export requests of a known shape, for tests and benches that
count what was stored against what was sent."""

import time

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest


def trace_request(
    trace: int,
    spans: int,
    *,
    service: str = "checkout",
    attributes: int = 0,
    value_size: int = 8,
) -> bytes:
    """One resource of `service` with `spans` SERVER spans "charge" in trace
    number `trace` (span ids 1..spans), each with `attributes` string
    attributes of `value_size` repeated characters (gzip shrinks them a
    hundredfold, as a hostile client's would)."""
    request = ExportTraceServiceRequest()
    resource_spans = request.resource_spans.add()
    name = resource_spans.resource.attributes.add()
    name.key, name.value.string_value = "service.name", service
    scope = resource_spans.scope_spans.add()
    now = time.time_ns()
    for n in range(spans):
        span = scope.spans.add()
        span.trace_id = trace.to_bytes(16, "big")
        span.span_id = (n + 1).to_bytes(8, "big")
        span.name, span.kind = "charge", 2
        span.start_time_unix_nano, span.end_time_unix_nano = now - 1_000_000, now
        for a in range(attributes):
            attribute = span.attributes.add()
            attribute.key = f"attribute.{a}"
            attribute.value.string_value = "x" * value_size
    return request.SerializeToString()
