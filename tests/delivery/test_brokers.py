"""Delivery findings from real brokers, through a real two-process collector:
exact counts of duplicate, poison, missing, late and out-of-order events."""

import asyncio
import json
import time
import uuid
from collections import Counter

import nats
import pika
import pytest

from dashboard.delivery.models import Finding
from tests.delivery.conftest import Service, findings, set_channel, settle

pytestmark = [pytest.mark.brokers]


def rabbit():
    return pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", 5672))


def publish_orders(shop: Service, channel, queue: str, count: int) -> None:
    for n in range(count):
        headers = shop.publish("rabbitmq", queue, f"ord-{n}")
        channel.basic_publish(
            "", queue, str(n).encode(), pika.BasicProperties(message_id=f"ord-{n}", headers=headers)
        )


def drain(channel, queue: str, handle) -> None:
    """basic_get until `handle` (called with (n, attempt, method, properties))
    returns True for the last time: it says whether it is done with the queue."""
    attempts: Counter = Counter()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        method, properties, body = channel.basic_get(queue)
        if method is None:
            time.sleep(0.05)
            continue
        n = int(body)
        attempts[n] += 1
        if handle(n, attempts[n], method, properties):
            return
    raise AssertionError(f"queue {queue} not drained: {attempts}")


@pytest.mark.parametrize("resend", [False, True], ids=["exported-once", "every-export-resent"])
def test_rabbitmq_requeue_after_the_work_is_a_duplicate_and_retries_past_n_are_poison(
    collector, project, resend
):
    queue = f"es-delivery-{uuid.uuid4().hex[:8]}"
    shop = Service(collector, "orders", resend=resend)
    payments = Service(collector, "payments", resend=resend)
    connection = rabbit()
    try:
        channel = connection.channel()
        channel.queue_declare(queue)
        publish_orders(shop, channel, queue, 10)
        acked = set()

        def handle(n, attempt, method, properties):
            headers, mid = properties.headers or {}, properties.message_id
            if n in (2, 5) and attempt == 1:
                # The work is done, then the ack is lost: nack and requeue.
                with payments.process("rabbitmq", queue, headers, mid):
                    pass
                channel.basic_nack(method.delivery_tag, requeue=True)
                return False
            if n == 7 and attempt == 1:
                # A failure, then a redelivery that succeeds: no duplicate.
                with payments.process("rabbitmq", queue, headers, mid, fail="gateway timeout"):
                    pass
                channel.basic_nack(method.delivery_tag, requeue=True)
                return False
            if n == 9 and attempt <= 3:
                with payments.process("rabbitmq", queue, headers, mid, fail="bad address"):
                    pass
                channel.basic_nack(method.delivery_tag, requeue=True)
                return False
            stage = "deadlettered" if n == 9 else None
            with payments.process("rabbitmq", queue, headers, mid, stage=stage):
                pass
            channel.basic_ack(method.delivery_tag)
            acked.add(n)
            return len(acked) == 10

        drain(channel, queue, handle)
    finally:
        with_channel = connection.channel()
        with_channel.queue_delete(queue)
        connection.close()
    shop.close()
    payments.close()

    settle()
    assert findings(project) == {
        ("duplicate", queue, "payments"): ["ord-2", "ord-5"],
        ("poison", queue, "payments"): ["ord-9"],
    }
    from dashboard.delivery.models import Finding

    poison = Finding.objects.get(project=project, kind="poison")
    assert (poison.failures, poison.deadlettered) == (4, True)
    assert poison.retry_ms > 0
    duplicate = Finding.objects.filter(project=project, kind="duplicate").first()
    assert duplicate.successes == 2 and len(duplicate.examples) == 2
    # A second pass over the same data changes nothing.
    settle()
    assert Finding.objects.filter(project=project).count() == 3


def test_rabbitmq_consumer_that_drops_messages_has_missing_then_late_events(collector, project):
    queue = f"es-delivery-{uuid.uuid4().hex[:8]}"
    set_channel(project, "rabbitmq", queue, deadline_seconds=3)
    shop, ledger = Service(collector, "orders"), Service(collector, "ledger")
    held = []
    connection = rabbit()
    try:
        channel = connection.channel()
        channel.queue_declare(queue)
        publish_orders(shop, channel, queue, 12)
        seen = set()

        def handle(n, attempt, method, properties):
            seen.add(n)
            if n in (10, 11):
                held.append(properties)  # processed later, after the deadline
            elif n not in (8, 9):  # 8 and 9 are acked and never processed
                with ledger.process("rabbitmq", queue, properties.headers, properties.message_id):
                    pass
            channel.basic_ack(method.delivery_tag)
            return len(seen) == 12

        drain(channel, queue, handle)
    finally:
        connection.channel().queue_delete(queue)
        connection.close()
    shop.flush()
    ledger.flush()
    time.sleep(3.5)
    settle()
    assert findings(project) == {
        ("missing", queue, "ledger"): ["ord-10", "ord-11", "ord-8", "ord-9"],
    }
    for properties in held:
        with ledger.process("rabbitmq", queue, properties.headers, properties.message_id):
            pass
    shop.close()
    ledger.close()
    settle()
    assert findings(project) == {
        ("missing", queue, "ledger"): ["ord-8", "ord-9"],
        ("late", queue, "ledger"): ["ord-10", "ord-11"],
    }


# Processing order of the ten events published 0..9, keys alternating A/B:
# A = 0 2 4 6 8, B = 1 3 5 7 9.
ORDER = [0, 1, 4, 2, 3, 6, 9, 5, 8, 7]


def jumpers(order: list[int], key_of) -> set[int]:
    """Events processed before an event with the same key published earlier."""
    out = set()
    for i, b in enumerate(order):
        if any(a < b and key_of(a) == key_of(b) for a in order[i + 1 :]):
            out.add(b)
    return out


def test_nats_jetstream_processed_out_of_key_order(collector, project):
    subject = f"es.delivery.{uuid.uuid4().hex[:8]}"
    stream = subject.replace(".", "_")
    set_channel(project, "nats", subject, ordering_attribute="shop.customer")
    shop, billing = Service(collector, "orders"), Service(collector, "billing")

    def key_of(n):
        return "A" if n % 2 == 0 else "B"

    async def run():
        nc = await nats.connect("nats://127.0.0.1:4222")
        js = nc.jetstream()
        await js.add_stream(name=stream, subjects=[subject])
        try:
            for n in range(10):
                headers = shop.publish("nats", subject, f"ev-{n}", **{"shop.customer": key_of(n)})
                await js.publish(subject, json.dumps(n).encode(), headers=headers)
                time.sleep(0.002)
            sub = await js.pull_subscribe(subject, durable=f"billing-{stream}")
            messages = await sub.fetch(10, timeout=10)
            by_number = {json.loads(m.data): m for m in messages}
            for n in ORDER:
                message = by_number[n]
                with billing.process(
                    "nats", subject, dict(message.headers or {}), f"ev-{n}", group="billing"
                ):
                    time.sleep(0.002)
                await message.ack()
        finally:
            await js.delete_stream(stream)
            await nc.close()

    asyncio.run(run())
    shop.close()
    billing.close()
    settle()
    expected = sorted(f"ev-{n}" for n in jumpers(ORDER, key_of))
    assert expected == ["ev-4", "ev-9"]
    assert findings(project, "out_of_order") == {("out_of_order", subject, "billing"): expected}


def test_rabbitmq_consumer_without_propagation_is_judged_by_message_id(collector, project):
    """A fanout exchange with two queues: ledger's consumer carries the
    producer's context, audit's only the AMQP message id (instrumented
    without propagation). audit's dropped, late and twice-processed messages
    are found as ledger's would be."""
    tag = uuid.uuid4().hex[:8]
    exchange, ledger_queue, audit_queue = f"es-dx-{tag}", f"es-ledger-{tag}", f"es-audit-{tag}"
    set_channel(project, "rabbitmq", audit_queue, deadline_seconds=3)
    shop, ledger = Service(collector, "orders"), Service(collector, "ledger")
    audit = Service(collector, "audit")
    held, traces = [], {}
    connection = rabbit()
    try:
        channel = connection.channel()
        channel.exchange_declare(exchange, "fanout")
        for queue in (ledger_queue, audit_queue):
            channel.queue_declare(queue)
            channel.queue_bind(queue, exchange)
        for n in range(12):
            headers = shop.publish("rabbitmq", exchange, f"ord-{n}")
            traces[f"ord-{n}"] = headers["traceparent"].split("-")[1]
            channel.basic_publish(
                exchange, "", str(n).encode(),
                pika.BasicProperties(message_id=f"ord-{n}", headers=headers),
            )  # fmt: skip

        def ledger_handle(n, attempt, method, properties):
            with ledger.process(
                "rabbitmq", ledger_queue, properties.headers, properties.message_id
            ):
                pass
            channel.basic_ack(method.delivery_tag)
            return attempt == 1 and n == 11

        done = set()

        def audit_handle(n, attempt, method, properties):
            # No headers read: the span has no parent and no link.
            if n in (10, 11):
                held.append(properties.message_id)  # processed after the deadline
            elif n not in (8, 9):  # 8 and 9 are acked and never processed
                with audit.process("rabbitmq", audit_queue, {}, properties.message_id):
                    pass
                if n == 2 and attempt == 1:
                    # The work is done, then the ack is lost: processed twice.
                    channel.basic_nack(method.delivery_tag, requeue=True)
                    return False
            channel.basic_ack(method.delivery_tag)
            done.add(n)
            return len(done) == 12

        drain(channel, ledger_queue, ledger_handle)
        drain(channel, audit_queue, audit_handle)
    finally:
        cleanup = connection.channel()
        for queue in (ledger_queue, audit_queue):
            cleanup.queue_delete(queue)
        cleanup.exchange_delete(exchange)
        connection.close()
    shop.flush()
    ledger.flush()
    audit.flush()
    time.sleep(3.5)
    settle()
    assert findings(project) == {
        ("duplicate", audit_queue, "audit"): ["ord-2"],
        ("missing", audit_queue, "audit"): ["ord-10", "ord-11", "ord-8", "ord-9"],
    }
    for message_id in held:
        with audit.process("rabbitmq", audit_queue, {}, message_id):
            pass
    for service in (shop, ledger, audit):
        service.close()
    settle()
    assert findings(project) == {
        ("duplicate", audit_queue, "audit"): ["ord-2"],
        ("missing", audit_queue, "audit"): ["ord-8", "ord-9"],
        ("late", audit_queue, "audit"): ["ord-10", "ord-11"],
    }
    # Each finding names the trace of the order's publish: its journey.
    for finding in Finding.objects.filter(project=project):
        assert finding.trace_id == traces[finding.event_id], finding.kind
