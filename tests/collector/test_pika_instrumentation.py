"""The real pika instrumentation, on the real RabbitMQ, exporting to the real
receivers: every message counted once on both edges of the flow graph.

`opentelemetry-instrumentation-pika` makes one CONSUMER span with the legacy
`messaging.operation` = `receive` around the consumer callback and no process
span; `PikaInstrumentor().instrument()` wraps both the blocking channel and
the channel under it, so each publish gives two nested PRODUCER spans.
"""

import asyncio
import uuid

import pika
import pytest
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.instrumentation.pika import PikaInstrumentor

from collector import auth
from collector.batch import CONSUMER, PRODUCER
from tests.collector.receiver_harness import http_receiver, running_writer
from tests.collector.test_sdk_exporters import export, provider, stored

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.brokers]

MESSAGES = 50
FAILING = {n for n in range(MESSAGES) if n % 10 == 9}  # 5 of them


class OrderRejected(Exception):
    pass


@pytest.fixture(autouse=True)
def fresh_token_cache():
    auth.forget()
    yield
    auth.forget()


def connect() -> pika.BlockingConnection:
    return pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", 5672))


def run_shop(queue: str, orders, payments, globally: bool) -> list[int]:
    """orders publishes MESSAGES orders to `queue`; payments consumes them all,
    its callback raising for the FAILING ones. Returns the order numbers seen."""
    instrumentor = PikaInstrumentor()
    if globally:
        # One provider for the process, as an auto-instrumented service has.
        instrumentor.instrument(tracer_provider=orders)
    seen: list[int] = []
    publisher, consumer = connect(), connect()
    try:
        out = publisher.channel()
        out.queue_declare(queue, auto_delete=True)
        if not globally:
            PikaInstrumentor.instrument_channel(out, tracer_provider=orders)
        inbox = consumer.channel()

        def on_order(channel, method, properties, body):
            number = int(body)
            seen.append(number)
            try:
                if number in FAILING:
                    raise OrderRejected(f"order {number} rejected")
            finally:
                channel.basic_ack(method.delivery_tag)

        # One message at a time: pika stops dispatching the deliveries it holds
        # once a callback raises, until the next one arrives.
        inbox.basic_qos(prefetch_count=1)
        inbox.basic_consume(queue, on_message_callback=on_order)
        if not globally:
            PikaInstrumentor.instrument_channel(inbox, tracer_provider=payments)
        for n in range(MESSAGES):
            out.basic_publish(
                "", queue, str(n).encode(), pika.BasicProperties(message_id=f"order-{n}")
            )
        while len(seen) < MESSAGES:
            try:
                consumer.process_data_events(time_limit=5)
            except OrderRejected:
                pass  # a consumer loop that survives a failing message
    finally:
        publisher.close()
        consumer.close()
        if globally:
            instrumentor.uninstrument()
    return seen


@pytest.mark.parametrize("globally", [False, True], ids=["instrument_channel", "instrument"])
async def test_each_message_counts_once_on_the_publish_and_the_consume_edge(
    globally, project, ingest_token, telemetry_db
):
    queue = f"es-pika-{uuid.uuid4().hex[:8]}"
    async with running_writer() as writer, http_receiver(writer) as url:

        def exporter():
            return OTLPSpanExporter(
                endpoint=f"{url}/v1/traces",
                headers={"authorization": f"Bearer {ingest_token}"},
                timeout=10,
            )

        orders = provider("orders", exporter())
        payments = orders if globally else provider("payments", exporter())
        seen = await asyncio.to_thread(run_shop, queue, orders, payments, globally)
        assert sorted(seen) == list(range(MESSAGES))
        await export(*{orders, payments})

    spans, stages, rollups = await stored(project.pk)
    # The instrumentation really made nested producer spans when instrumenting globally.
    assert len(spans) == (3 if globally else 2) * MESSAGES
    consumer_service = "orders" if globally else "payments"
    assert rollups == [
        ("service:orders", f"channel:rabbitmq:{queue}", "publish", "", MESSAGES, 0),
        (f"channel:rabbitmq:{queue}", f"service:{consumer_service}", "consume", "", MESSAGES, 5),
    ]
    published = [s for s in stages if s[2] == PRODUCER]
    consumed = [s for s in stages if s[2] == CONSUMER]
    assert sorted(s[0] for s in published) == sorted(f"order-{n}" for n in range(MESSAGES))
    assert sorted(s[0] for s in consumed) == sorted(f"order-{n}" for n in range(MESSAGES))
    outcomes = {s[0]: (s[1], s[6]) for s in consumed}
    for n in range(MESSAGES):
        if n in FAILING:
            assert outcomes[f"order-{n}"][0] == "failed"
            assert f"order {n} rejected" in outcomes[f"order-{n}"][1]
        else:
            assert outcomes[f"order-{n}"] == ("processed", None)
    # Each consumer joined its publish (the context the message carried).
    assert all(s[7] is not None and s[7] >= 0 for s in consumed)
