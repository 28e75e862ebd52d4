"""What the handling sends on: dead letters, captured payments, emails, notifications."""

import json

from opentelemetry import trace
from opentelemetry.trace import Link, SpanKind

from dashboard.demo.model import (
    CAPTURED_QUEUE,
    DEAD_LETTER_TOPIC,
    DLQ_ARCHIVE,
    MAX_ATTEMPTS,
    MS,
    NOTIFICATIONS_SUBJECT,
    ORDERS_TOPIC,
    Consumer,
    MailboxUnavailable,
    Message,
    _rfc3339,
)


class Outcomes:
    """The Shop's methods for what its consumers' handling sends on (a part of Shop)."""

    def _publish_dead_letter(self, message: Message, consumer: Consumer, parent, at_ns: int):
        """Hand a message that keeps failing to shop.orders.dlq, from inside
        the last failed attempt: Eventscope reads the parent as dead-lettered."""
        dead_letter = Message(message.order, message.id, DEAD_LETTER_TOPIC)
        self._send(
            consumer.service,
            dead_letter,
            trace.set_span_in_context(parent),
            at_ns - MS,
            at_ns,
            {
                "messaging.system": "kafka",
                "messaging.operation.name": "send",
                "messaging.kafka.message.key": message.order.customer,
                "shop.dead_letter.reason": f"failed {MAX_ATTEMPTS} times",
                "shop.dead_letter.source": f"{message.destination}/{message.partition}",
            },
        )
        self.tally.dead_lettered += 1
        if self.send_events is not None:
            self.scheduler.at(at_ns + 5 * MS, self._archive_dead_letter, dead_letter, at_ns)

    def _archive_dead_letter(self, dead_letter: Message, published: int) -> None:
        """`dlq-archive` reads shop.orders.dlq and reports what it keeps as a
        CloudEvent with the order's payload, under the message's id and on the
        dead letter's trace: Eventscope then has the payload of the
        dead-lettered event and can replay it."""
        order = dead_letter.order
        archived = self._current
        event = {
            "specversion": "1.0",
            "id": dead_letter.id,
            "source": "/shop/orders",
            "type": "com.example.shop.OrderPlaced",
            "subject": order.id,
            "time": _rfc3339(archived),
            "datacontenttype": "application/json",
            "traceparent": dead_letter.headers["traceparent"],
            "essystem": "kafka",
            "eschannel": DEAD_LETTER_TOPIC,
            "esstage": "processed",
            "esservice": DLQ_ARCHIVE,
            "esgroup": DLQ_ARCHIVE,
            "esduration": round((archived - published) / MS, 3),
            "data": json.loads(order.body()),
        }
        self.tally.cloudevents += 1
        self.tally.archived += 1
        self.send_events([event])

    # -- payments -> RabbitMQ -> ledger --

    def _capture_payment(self, message: Message, parent, at_ns: int) -> None:
        start = at_ns - self._ms(2, 5)
        captured = Message(message.order, self._uuid(), CAPTURED_QUEUE)
        captured.offset = self.tally.processed
        self._send(
            "payments",
            captured,
            trace.set_span_in_context(parent),
            start,
            at_ns - MS,
            {
                "messaging.system": "rabbitmq",
                "messaging.operation.name": "publish",
                "messaging.rabbitmq.destination.routing_key": CAPTURED_QUEUE,
                "shop.event.type": "PaymentCaptured",
            },
        )
        arrival = captured.published_ns + self._ms(1, 4)
        start = max(arrival, self.ledger.busy_until_ns)
        self.queue_published += 1
        self.ledger_pending.append(start)
        self._schedule(captured, self.ledger, self._plan(start, 4, 25, None, 0, False))

    def _send_emails(self, batch, polled: int, received: int, ends) -> None:
        tracer = self.tracer("email")
        receive = tracer.start_span(
            f"{ORDERS_TOPIC} receive",
            kind=SpanKind.CONSUMER,
            start_time=polled,
            # Per-message attributes go on the links: a batch has no one message id.
            links=[
                Link(
                    m.span_context(),
                    {"messaging.message_id": m.id, "messaging.kafka.partition": m.partition},
                )
                for m in batch
            ],
            attributes={
                **self._legacy_attributes("receive"),
                "messaging.batch.message_count": len(batch),
            },
        )
        receive.end(end_time=received)
        for message, (start, end) in zip(batch, ends, strict=True):
            span = tracer.start_span(
                f"{ORDERS_TOPIC} process",
                context=trace.set_span_in_context(receive),
                kind=SpanKind.CONSUMER,
                start_time=start,
                links=[Link(message.span_context())],
                attributes={
                    **self._legacy_attributes("process"),
                    "messaging.message_id": message.id,
                    "messaging.kafka.message_key": message.order.customer,
                    "messaging.kafka.partition": message.partition,
                },
            )
            if message.order.bounced_email:
                error = MailboxUnavailable(f"550 mailbox unavailable for {message.order.customer}")
                self._fail(span, error, end, retried=False)
                self.tally.failed += 1
            else:
                self.tally.processed += 1
            span.end(end_time=end)
            self._commit(message, "email")

    # -- shipping -> notifications, reported as CloudEvents --

    def _notify_shipment(self, message: Message, parent, at_ns: int) -> None:
        if self.send_events is None:
            return
        published = at_ns + self._ms(2, 6)
        processed = published + self._ms(15, 80)
        self.scheduler.at(
            processed,
            self._report_notification,
            message,
            parent.get_span_context(),
            published,
            processed,
        )

    def _report_notification(self, message: Message, context, published: int, processed: int):
        traceparent = f"00-{context.trace_id:032x}-{context.span_id:016x}-01"
        common = {
            "specversion": "1.0",
            "id": f"ntf-{message.order.id}",
            "source": "/shop/notifications",
            "type": "com.example.shop.ShipmentNotice",
            "subject": message.order.id,
            "datacontenttype": "application/json",
            "traceparent": traceparent,
            "essystem": "nats",
            "eschannel": NOTIFICATIONS_SUBJECT,
            "data": {
                "order": message.order.id,
                "customer": message.order.customer,
                "items": message.order.items,
            },
        }
        events = [
            {
                **common,
                "time": _rfc3339(published),
                "esstage": "published",
                "esservice": "notifications",
            },
            {
                **common,
                "time": _rfc3339(processed),
                "esstage": "processed",
                "esservice": "push",
                "esgroup": "push",
                "esduration": round((processed - published) / MS, 3),
            },
        ]
        self.tally.cloudevents += len(events)
        self.send_events(events)
