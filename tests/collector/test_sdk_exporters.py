"""The real OpenTelemetry SDK exporting messaging spans to the running receivers.

Two services (a producer and a consumer) propagate the trace context through
message headers, as Kafka/RabbitMQ instrumentations do, and export over
OTLP/HTTP (protobuf, gzip) or OTLP/gRPC.
"""

import asyncio

import psycopg
import pytest
from opentelemetry import propagate
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (
    OTLPSpanExporter as GrpcSpanExporter,
)
from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
    OTLPSpanExporter as HttpSpanExporter,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import SpanKind, Status, StatusCode

from collector import auth
from collector.batch import CONSUMER, PRODUCER
from collector.db import conninfo
from tests.collector.receiver_harness import (
    CollectingWriter,
    grpc_receiver,
    http_receiver,
    running_writer,
)

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def fresh_token_cache():
    auth.forget()
    yield
    auth.forget()


def provider(service: str, exporter) -> TracerProvider:
    tracer_provider = TracerProvider(resource=Resource.create({"service.name": service}))
    tracer_provider.add_span_processor(BatchSpanProcessor(exporter, schedule_delay_millis=60_000))
    return tracer_provider


def run_shop(orders: TracerProvider, payments: TracerProvider, messages: int = 3) -> None:
    """orders publishes `messages` orders to Kafka; payments processes them, failing the last."""
    producer = orders.get_tracer("shop.orders")
    consumer = payments.get_tracer("shop.payments")
    for n in range(messages):
        carrier: dict[str, str] = {}
        with producer.start_as_current_span(
            "send shop.orders",
            kind=SpanKind.PRODUCER,
            attributes={
                "messaging.system": "kafka",
                "messaging.operation.type": "send",
                "messaging.destination.name": "shop.orders",
                "messaging.message.id": f"order-{n}",
            },
        ):
            propagate.inject(carrier)
        parent = propagate.extract(carrier)
        with consumer.start_as_current_span(
            "shop.orders process",
            context=parent,
            kind=SpanKind.CONSUMER,
            attributes={
                # The older names, as kafka-python still emits them.
                "messaging.system": "kafka",
                "messaging.destination": "shop.orders",
                "messaging.operation": "process",
                "messaging.kafka.consumer_group": "payments",
                "messaging.message_id": f"order-{n}",
            },
            record_exception=False,
            set_status_on_exception=False,
        ) as span:
            if n == messages - 1:
                span.set_status(Status(StatusCode.ERROR, "card declined"))


async def export(*providers: TracerProvider) -> None:
    for tracer_provider in providers:
        # The exporters are blocking clients; the receiver runs on this loop.
        assert await asyncio.to_thread(tracer_provider.force_flush, 20_000)
        await asyncio.to_thread(tracer_provider.shutdown)


def assert_shop_stages(writer: CollectingWriter, messages: int = 3) -> None:
    """What the receivers handed to the writer: every span once, the right stages."""
    spans = writer.spans()
    assert len(spans) == 2 * messages
    assert len({(s.trace_id, s.span_id) for s in spans}) == 2 * messages
    assert {s.service for s in spans} == {"orders", "payments"}
    stages = writer.stages()
    published = {s.event_id: s for s in stages if s.stage == "published"}
    consumed = {s.event_id: s for s in stages if s.role == CONSUMER}
    assert set(published) == set(consumed) == {f"order-{n}" for n in range(messages)}
    for event_id, publish in published.items():
        assert (publish.role, publish.service, publish.channel) == (
            PRODUCER,
            "orders",
            "shop.orders",
        )
        consume = consumed[event_id]
        assert (consume.service, consume.channel, consume.consumer_group) == (
            "payments",
            "shop.orders",
            "payments",
        )
        # The consumer joins its producer through the propagated context.
        assert consume.linked == [(publish.trace_id, publish.span_id)]
    last = consumed[f"order-{messages - 1}"]
    assert (last.stage, last.error) == ("failed", "card declined")
    assert sorted(s.stage for s in consumed.values()) == ["failed"] + ["processed"] * (messages - 1)


async def stored(project_id: int):
    """(spans, stages, rollups) stored for the project, read back from PostgreSQL."""
    async with await psycopg.AsyncConnection.connect(conninfo(), autocommit=True) as conn:
        spans = await (
            await conn.execute(
                "SELECT trace_id, span_id, service, kind FROM collector_span WHERE project_id = %s",
                (project_id,),
            )
        ).fetchall()
        stages = await (
            await conn.execute(
                "SELECT event_id, stage, role, service, channel, consumer_group, error, e2e_ms "
                "FROM collector_stage WHERE project_id = %s ORDER BY event_id, role DESC",
                (project_id,),
            )
        ).fetchall()
        rollups = await (
            await conn.execute(
                "SELECT source, target, kind, consumer_group, sum(count), sum(errors) "
                "FROM collector_flowrollup WHERE project_id = %s "
                "GROUP BY 1, 2, 3, 4 ORDER BY kind DESC",
                (project_id,),
            )
        ).fetchall()
    return spans, stages, rollups


def assert_shop_stored(spans, stages, rollups, messages: int = 3) -> None:
    assert len(spans) == 2 * messages
    assert len({(row[0], row[1]) for row in spans}) == 2 * messages  # each span exactly once
    assert len(stages) == 2 * messages
    for n in range(messages):
        publish, consume = [row for row in stages if row[0] == f"order-{n}"]
        assert publish[1:6] == ("published", PRODUCER, "orders", "shop.orders", "")
        outcome = "failed" if n == messages - 1 else "processed"
        assert consume[1:6] == (outcome, CONSUMER, "payments", "shop.orders", "payments")
        assert consume[7] is not None and consume[7] >= 0  # produce -> consume latency
    assert stages[-1][6] == "card declined"
    assert rollups == [
        ("service:orders", "channel:kafka:shop.orders", "publish", "", messages, 0),
        ("channel:kafka:shop.orders", "service:payments", "consume", "payments", messages, 1),
    ]


async def test_http_protobuf_exporter_with_gzip_stores_every_span_once(
    project, ingest_token, telemetry_db
):
    async with running_writer() as writer, http_receiver(writer) as url:

        def exporter():
            return HttpSpanExporter(
                endpoint=f"{url}/v1/traces",
                headers={"authorization": f"Bearer {ingest_token}"},
                compression=Compression.Gzip,
                timeout=10,
            )

        orders, payments = provider("orders", exporter()), provider("payments", exporter())
        run_shop(orders, payments)
        await export(orders, payments)
    assert_shop_stored(*await stored(project.pk))


async def test_grpc_exporter_stores_every_span_once(project, ingest_token, telemetry_db):
    async with running_writer() as writer, grpc_receiver(writer) as address:

        def exporter():
            return GrpcSpanExporter(
                endpoint=address,
                insecure=True,
                headers={"authorization": f"Bearer {ingest_token}"},
                timeout=10,
            )

        orders, payments = provider("orders", exporter()), provider("payments", exporter())
        run_shop(orders, payments)
        await export(orders, payments)
    assert_shop_stored(*await stored(project.pk))


async def test_what_the_receivers_hand_to_the_writer(ingest_token):
    collecting = CollectingWriter()
    async with http_receiver(collecting) as url:
        orders = provider(
            "orders",
            HttpSpanExporter(
                endpoint=f"{url}/v1/traces", headers={"authorization": f"Bearer {ingest_token}"}
            ),
        )
        payments = provider(
            "payments",
            HttpSpanExporter(
                endpoint=f"{url}/v1/traces", headers={"authorization": f"Bearer {ingest_token}"}
            ),
        )
        run_shop(orders, payments)
        await export(orders, payments)
    assert_shop_stages(collecting)


async def test_an_exporter_without_token_exports_nothing(ingest_token):
    writer = CollectingWriter()
    async with http_receiver(writer) as url:
        orders = provider("orders", HttpSpanExporter(endpoint=f"{url}/v1/traces", timeout=5))
        payments = provider("payments", HttpSpanExporter(endpoint=f"{url}/v1/traces", timeout=5))
        run_shop(orders, payments, messages=1)
        # force_flush reports success even when the export was refused; a 401
        # is not retried, so this returns promptly.
        await export(orders, payments)
    assert writer.batches == []
