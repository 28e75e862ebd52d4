"""The shop's simulation: arrivals, checkout, publishing, consumers, retries, the email poll."""

import collections
import random
import uuid
import zlib
from collections.abc import Callable

from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode

from dashboard.demo.metrics import BrokerFigures
from dashboard.demo.model import (
    ANALYTICS_CYCLE_S,
    BAD_ADDRESS,
    BOUNCED_EMAIL,
    CAPTURED_QUEUE,
    DEAD_LETTER_TOPIC,
    DEFAULT_RATE,
    EMAIL_MAX_BATCH,
    EMAIL_POLL_S,
    GATEWAY_TIMEOUT,
    MAX_ATTEMPTS,
    MS,
    ORDERS_TOPIC,
    OUT_OF_STOCK,
    PARTITIONS,
    PROPAGATOR,
    SLOW_SHARE,
    Attempt,
    Consumer,
    InvalidShippingAddress,
    Message,
    Order,
    PaymentGatewayTimeout,
    S,
    Scheduler,
    Tally,
)
from dashboard.demo.outcomes import Outcomes
from dashboard.demo.tracking import Tracking

# At an order rate a consumer can never keep up with (--rate 50 outruns
# email), it skips messages that waited longer than this, so the backlog held
# in memory stays bounded however long the demo runs.
MAX_BACKLOG_S = 900.0


class Shop(Outcomes, Tracking):
    """The shop's services and broker; `advance(now_ns)` plays everything up to now."""

    def __init__(
        self,
        tracer: Callable[[str], trace.Tracer],
        *,
        start_ns: int,
        rate: float = DEFAULT_RATE,
        seed: int | None = None,
        send_events: Callable[[list[dict]], None] | None = None,
        cycle_s: float = ANALYTICS_CYCLE_S,
    ):
        if not rate > 0:
            raise ValueError(f"the order rate must be positive, got {rate!r}")
        if not cycle_s > 0:
            raise ValueError(f"the slow/fast cycle must be positive, got {cycle_s!r}")
        self.cycle_s = cycle_s
        self.slow_s = cycle_s * SLOW_SHARE
        self.tracer = tracer
        self.start_ns = start_ns
        self.rate = rate
        self.random = random.Random(seed)
        self.send_events = send_events
        self.scheduler = Scheduler()
        self._start_tracking(seed)
        self.tally = Tally()
        self.offsets = dict.fromkeys(range(PARTITIONS), 0)
        self.payments = Consumer("payments", "payments")
        self.shipping = Consumer("shipping", "shipping")
        self.analytics = Consumer("analytics", "analytics")
        self.ledger = Consumer("ledger", "ledger")
        # Each Kafka group's committed offset per partition: the next one it reads.
        self.committed: dict[str, dict[int, int]] = {
            group: {} for group in ("payments", "shipping", "analytics", "email")
        }
        # payments.captured: when the ledger takes each message not yet
        # acknowledged (in queue order), and the queue's counters.
        self.ledger_pending: collections.deque[int] = collections.deque()
        self.queue_published = 0
        self.queue_acknowledged = 0
        # In publish order, like the topic the consumer reads.
        self.email_inbox: collections.deque[Message] = collections.deque()
        self.scheduler.at(start_ns + self._next_gap(), self._arrive)
        self.scheduler.at(start_ns + int(EMAIL_POLL_S * S), self._poll_email)

    def advance(self, now_ns: int) -> int:
        """Play the shop up to `now_ns`; returns the number of actions run."""
        return self.scheduler.run_until(now_ns)

    def next_due(self) -> int:
        due = self.scheduler.next_due()
        return due if due is not None else self.start_ns

    def broker_figures(self, now_ns: int) -> BrokerFigures:
        """What the brokers hold once the shop has been played up to `now_ns`."""
        unacknowledged = sum(1 for taken in self.ledger_pending if taken <= now_ns)
        return BrokerFigures(
            end_offsets=dict(self.offsets),
            committed={group: dict(offsets) for group, offsets in self.committed.items()},
            queue_ready=len(self.ledger_pending) - unacknowledged,
            queue_unacknowledged=unacknowledged,
            queue_published=self.queue_published,
            queue_delivered=self.queue_acknowledged + unacknowledged,
            queue_acknowledged=self.queue_acknowledged,
        )

    def _commit(self, message: Message, group: str) -> None:
        """A consumer is done with `message` (processed, failed or dead-lettered)."""
        offsets = self.committed[group]
        offsets[message.partition] = max(offsets.get(message.partition, 0), message.offset + 1)

    # -- randomness, always drawn in simulation order --

    def _ms(self, low: float, high: float) -> int:
        return int(self.random.uniform(low, high) * MS)

    def _next_gap(self) -> int:
        return int(self.random.expovariate(self.rate) * S) + 1

    def _uuid(self) -> str:
        return str(uuid.UUID(int=self.random.getrandbits(128), version=4))

    def _chance(self, odds: float) -> bool:
        return self.random.random() < odds

    # -- storefront -> orders -> shop.orders --

    def _arrive(self) -> None:
        self.tally.orders += 1
        number = self.tally.orders
        order = Order(
            number=number,
            id=f"ord-{number:06d}",
            customer=f"cus-{self.random.randint(1, 5000):05d}",
            total=round(self.random.uniform(8, 400), 2),
            items=self.random.randint(1, 6),
            out_of_stock=self._chance(OUT_OF_STOCK),
            gateway_timeout=self._chance(GATEWAY_TIMEOUT),
            bad_address=self._chance(BAD_ADDRESS),
            bounced_email=self._chance(BOUNCED_EMAIL),
        )
        arrived = self._current
        duration = self._ms(25, 90)
        self.scheduler.at(arrived + duration, self._checkout, order, arrived, duration)
        self.scheduler.at(arrived + self._next_gap(), self._arrive)

    def _checkout(self, order: Order, start: int, duration: int) -> None:
        end = start + duration
        storefront, orders = self.tracer("storefront"), self.tracer("orders")
        client = storefront.start_span(
            "POST",
            kind=SpanKind.CLIENT,
            start_time=start,
            attributes={
                "http.request.method": "POST",
                "url.full": "http://orders:8080/orders",
                "server.address": "orders",
                "server.port": 8080,
            },
        )
        carrier: dict = {}
        PROPAGATOR.inject(carrier, context=trace.set_span_in_context(client))
        server = orders.start_span(
            "POST /orders",
            context=PROPAGATOR.extract(carrier),
            kind=SpanKind.SERVER,
            start_time=start + MS,
            attributes={
                "http.request.method": "POST",
                "http.route": "/orders",
                "url.path": "/orders",
                "url.scheme": "http",
                "server.address": "orders",
                "server.port": 8080,
                "network.protocol.version": "1.1",
                "shop.order.id": order.id,
            },
        )
        status = 409 if order.out_of_stock else 201
        if order.out_of_stock:
            # A 4xx is the client's failure, not the server's (HTTP semconv).
            client.set_status(Status(StatusCode.ERROR, "409 Conflict: item out of stock"))
            client.set_attribute("error.type", "409")
        else:
            self._publish_order(order, trace.set_span_in_context(server), start + duration // 2)
        server.set_attribute("http.response.status_code", status)
        client.set_attribute("http.response.status_code", status)
        server.end(end_time=end - MS)
        client.end(end_time=end)

    def _publish_order(self, order: Order, parent, start: int) -> None:
        key = order.customer
        partition = zlib.crc32(key.encode()) % PARTITIONS
        offset = self.offsets[partition]
        self.offsets[partition] += 1
        message = Message(order, self._uuid(), ORDERS_TOPIC, partition=partition, offset=offset)
        end = start + self._ms(1, 6)
        self._send(
            "orders",
            message,
            parent,
            start,
            end,
            {
                "messaging.system": "kafka",
                "messaging.operation.name": "send",
                "messaging.kafka.message.key": key,
                "messaging.destination.partition.id": str(partition),
                "messaging.message.body.size": len(order.body()),
                "messaging.client.id": "orders-1",
                "shop.event.type": "OrderPlaced",
            },
        )
        self._deliver(message, self.payments, self._pay)
        self._deliver(message, self.shipping, self._ship)
        self._deliver(message, self.analytics, self._analyse)
        message.available_ns = end + self._ms(2, 20)
        self.email_inbox.append(message)
        self._publish_statuses(message, end + 2 * MS)

    def _send(self, service: str, message: Message, parent, start: int, end: int, attributes):
        """A PRODUCER span for `message`, its context injected into the message headers."""
        span = self.tracer(service).start_span(
            f"{attributes['messaging.operation.name']} {message.destination}",
            context=parent,
            kind=SpanKind.PRODUCER,
            start_time=start,
            attributes={
                "messaging.destination.name": message.destination,
                "messaging.operation.type": "send",
                "messaging.message.id": message.id,
                **attributes,
            },
        )
        PROPAGATOR.inject(message.headers, context=trace.set_span_in_context(span))
        span.end(end_time=end)
        message.published_ns = end
        if message.destination != DEAD_LETTER_TOPIC:
            self.tally.published += 1

    # -- single-message Kafka consumers --

    def _deliver(self, message: Message, consumer: Consumer, handle: Callable) -> None:
        """Queue a message for a consumer: it starts once polled and once the
        consumer is done with everything before it."""
        arrival = message.published_ns + self._ms(2, 20)
        start = max(arrival, consumer.busy_until_ns)
        if start - message.published_ns <= MAX_BACKLOG_S * S:
            handle(message, consumer, start)

    def _plan(
        self,
        start: int,
        low_ms: float,
        high_ms: float,
        error: Exception | None,
        failures: int,
        dead_letter: bool,
    ) -> list[Attempt]:
        """Attempts of one message: `failures` failed ones (retried with
        backoff), then a success, or a dead letter when `dead_letter`."""
        attempts = []
        for number in range(failures + (0 if dead_letter else 1)):
            end = start + self._ms(low_ms, high_ms)
            failed = number < failures
            last = number == failures - 1 and dead_letter
            attempts.append(
                Attempt(start, end, error if failed else None, failed and not last, last)
            )
            start = end + self._ms(100, 150) * (2**number)
        return attempts

    def _pay(self, message: Message, consumer: Consumer, start: int) -> None:
        error = PaymentGatewayTimeout("card processor did not answer within 3s")
        attempts = self._plan(start, 20, 120, error, int(message.order.gateway_timeout), False)
        self._schedule(message, consumer, attempts, then=self._capture_payment)

    def _ship(self, message: Message, consumer: Consumer, start: int) -> None:
        bad = message.order.bad_address
        error = InvalidShippingAddress(f"carrier rejected the address of {message.order.id}")
        attempts = self._plan(start, 10, 60, error, MAX_ATTEMPTS if bad else 0, bad)
        self._schedule(message, consumer, attempts, then=self._notify_shipment)

    def _analyse(self, message: Message, consumer: Consumer, start: int) -> None:
        phase = ((start - self.start_ns) / S) % self.cycle_s
        slow = phase < self.slow_s
        low, high = (1200, 2500) if slow else (10, 40)
        self._schedule(message, consumer, self._plan(start, low, high, None, 0, False))

    def _schedule(self, message, consumer, attempts, then=None) -> None:
        consumer.busy_until_ns = attempts[-1].end_ns
        for attempt in attempts:
            self.scheduler.at(attempt.end_ns, self._process, message, consumer, attempt, then)

    def _process(self, message: Message, consumer: Consumer, attempt: Attempt, then) -> None:
        """A CONSUMER span, parented on the producer's context from the message headers."""
        span = self.tracer(consumer.service).start_span(
            f"process {message.destination}",
            context=message.context(),
            kind=SpanKind.CONSUMER,
            start_time=attempt.start_ns,
            attributes=self._consumer_attributes(message, consumer),
        )
        if attempt.error is not None:
            self._fail(span, attempt.error, attempt.end_ns, retried=attempt.retried)
            if attempt.dead_letter:
                self._publish_dead_letter(message, consumer, span, attempt.end_ns)
            elif not attempt.retried:
                self.tally.failed += 1
        else:
            self.tally.processed += 1
            if then is not None:
                then(message, span, attempt.end_ns)
        span.end(end_time=attempt.end_ns)
        if not attempt.retried:
            if message.destination == CAPTURED_QUEUE:
                self.ledger_pending.popleft()
                self.queue_acknowledged += 1
            else:
                self._commit(message, consumer.group)

    def _consumer_attributes(self, message: Message, consumer: Consumer) -> dict:
        if message.destination == CAPTURED_QUEUE:
            return {
                "messaging.system": "rabbitmq",
                "messaging.destination.name": CAPTURED_QUEUE,
                "messaging.operation.type": "process",
                "messaging.operation.name": "consume",
                "messaging.message.id": message.id,
                "messaging.rabbitmq.destination.routing_key": CAPTURED_QUEUE,
                "messaging.rabbitmq.message.delivery_tag": message.offset + 1,
            }
        return {
            "messaging.system": "kafka",
            "messaging.destination.name": message.destination,
            "messaging.operation.type": "process",
            "messaging.operation.name": "process",
            "messaging.consumer.group.name": consumer.group,
            "messaging.message.id": message.id,
            "messaging.kafka.message.key": message.order.customer,
            "messaging.destination.partition.id": str(message.partition),
            "messaging.kafka.offset": message.offset,
        }

    def _fail(self, span, error: Exception, at_ns: int, *, retried: bool) -> None:
        try:
            raise error
        except Exception as raised:
            span.record_exception(raised, timestamp=at_ns - MS)
        span.set_attribute("error.type", type(error).__qualname__)
        span.set_status(Status(StatusCode.ERROR, str(error)))
        if retried:
            # The SDK has no notion of a retry; Eventscope's stage attribute says it.
            span.set_attribute("eventscope.stage", "retried")
            self.tally.retried += 1

    # -- email: batch receive with links, legacy attribute names --

    def _poll_email(self) -> None:
        now = self._current
        oldest = now - int(MAX_BACKLOG_S * S)
        inbox = self.email_inbox
        while inbox and inbox[0].published_ns < oldest:
            inbox.popleft()
        batch = []
        while inbox and inbox[0].available_ns <= now and len(batch) < EMAIL_MAX_BATCH:
            batch.append(inbox.popleft())
        if not batch:
            self.scheduler.at(now + int(EMAIL_POLL_S * S), self._poll_email)
            return
        received = now + self._ms(2, 8)
        ends = []
        start = received
        for _ in batch:
            end = start + self._ms(20, 80)
            ends.append((start, end))
            start = end
        self.scheduler.at(start, self._send_emails, batch, now, received, ends)
        self.scheduler.at(max(start, now + int(EMAIL_POLL_S * S)), self._poll_email)

    def _legacy_attributes(self, operation: str) -> dict:
        return {
            "messaging.system": "kafka",
            "messaging.destination": ORDERS_TOPIC,
            "messaging.destination_kind": "topic",
            "messaging.operation": operation,
            "messaging.kafka.consumer_group": "email",
            "messaging.kafka.client_id": "email-1",
        }

    @property
    def _current(self) -> int:
        """The simulated time of the action being run."""
        return self.scheduler.current_ns
