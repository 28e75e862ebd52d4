"""The demo shop gives the Delivery page something to show: a few events of
each kind, found by the pass from the spans the shop exports."""

import time

import pytest
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from collector.decode import PROTOBUF, decode_request
from collector.normalize import normalize_traces
from dashboard import demo
from dashboard.delivery.models import Finding
from tests.dashboard.world import store
from tests.delivery.conftest import settle

pytestmark = pytest.mark.usefixtures("telemetry_db")


def test_ten_minutes_of_the_demo_show_every_kind(project):
    exporter = InMemorySpanExporter()
    telemetry = demo.Telemetry(lambda: SimpleSpanProcessor(exporter))
    start = time.time_ns() - 1200 * demo.S
    shop = demo.Shop(telemetry.tracer, start_ns=start, rate=2.0, seed=5, send_events=None)
    shop.advance(start + 600 * demo.S)
    telemetry.shutdown()
    # Orders placed in the first 400 s: the shop has played on long enough
    # for every consumer to get to them (or for tracking to be late).
    recent = {
        span.context.trace_id
        for span in exporter.get_finished_spans()
        if span.resource.attributes["service.name"] == "storefront"
        and span.start_time > start + 400 * demo.S
    }
    spans = [s for s in exporter.get_finished_spans() if s.context.trace_id not in recent]
    batches = []
    for i in range(0, len(spans), 500):
        body = encode_spans(spans[i : i + 500]).SerializeToString()
        batches.append(normalize_traces(decode_request("traces", body, PROTOBUF), project.id).batch)
    store(*batches)
    settle()
    kinds = {(f.kind, f.channel, f.group) for f in Finding.objects.filter(project=project)}
    for kind in ("duplicate", "missing", "late", "out_of_order"):
        assert (kind, "shop.order-status", "tracking") in kinds, kinds
    # Addresses that keep failing are retried twice, then dead-lettered.
    assert ("poison", "shop.orders", "shipping") in kinds
    poison = Finding.objects.filter(project=project, kind="poison").first()
    assert poison.deadlettered and poison.failures == demo.MAX_ATTEMPTS
    # Nothing else: the rest of the shop delivers once, in order.
    assert {k[1:] for k in kinds} == {
        ("shop.order-status", "tracking"),
        ("shop.orders", "shipping"),
    }
