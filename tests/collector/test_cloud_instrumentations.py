"""Spans as the Azure SDKs, google-cloud-pubsub and the Pulsar instrumentation
make them (tests/fixtures/instrumentations/, each naming its source),
replayed through the OpenTelemetry SDK's OTLP exporter into the receivers:
each gives its publish and consume edges on the right channels and groups,
and every consumer joins its producer for end-to-end latency."""

import asyncio
import json
from pathlib import Path

import pytest
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.trace import Link, SpanKind

from collector import auth
from collector.batch import CONSUMER
from tests.collector.receiver_harness import http_receiver, running_writer
from tests.collector.test_sdk_exporters import export, provider, stored

pytestmark = pytest.mark.django_db(transaction=True)

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "instrumentations"


@pytest.fixture(autouse=True)
def fresh_token_cache():
    auth.forget()
    yield
    auth.forget()


def replay(spans: list[dict], providers: dict) -> None:
    """Make each span as written: service, name, kind, attributes, parent, links."""
    contexts = {}
    for span in spans:
        tracer = providers[span["service"]].get_tracer("replay")
        parent = span.get("parent")
        context = (
            trace.set_span_in_context(trace.NonRecordingSpan(contexts[parent])) if parent else None
        )
        links = [Link(contexts[ref]) for ref in span.get("links", [])]
        made = tracer.start_span(
            span["name"],
            context=context,
            kind=SpanKind[span["kind"]],
            attributes=span["attributes"],
            links=links,
        )
        contexts[span["ref"]] = made.get_span_context()
        made.end()


@pytest.mark.parametrize("system", ["servicebus", "eventhubs", "gcp_pubsub", "pulsar"])
async def test_instrumentation_spans_give_edges_joined_end_to_end(
    system, project, ingest_token, telemetry_db
):
    fixture = json.loads((FIXTURES / f"{system}.json").read_text())
    async with running_writer() as writer, http_receiver(writer) as url:
        providers = {
            name: provider(
                name,
                OTLPSpanExporter(
                    endpoint=f"{url}/v1/traces",
                    headers={"authorization": f"Bearer {ingest_token}"},
                    timeout=10,
                ),
            )
            # producers first: the order the services appear in
            for name in dict.fromkeys(s["service"] for s in fixture["spans"])
        }
        await asyncio.to_thread(replay, fixture["spans"], providers)
        await export(*providers.values())

    spans, stages, rollups = await stored(project.pk)
    assert len(spans) == len(fixture["spans"])
    edges = {(r[0], r[1], r[2], r[3]): r[4] for r in rollups}
    expect = fixture["expect"]
    source, target, group, count = expect["publish"]
    assert edges.pop((source, target, "publish", group)) == count
    source, target, group, count = expect["consume"]
    assert edges.pop((source, target, "consume", group)) == count
    assert edges == {}  # nothing counted twice, nothing on a stray channel
    consumed = [s for s in stages if s[2] == CONSUMER]
    assert len(consumed) == count
    assert all(s[7] is not None and s[7] >= 0 for s in consumed)
