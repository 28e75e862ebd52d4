"""The demo shop: an event-driven system instrumented with the real
OpenTelemetry SDK, exporting OTLP to a collector like any user's services.

Entry point (used by `manage.py demo` and `manage.py serve --demo`):

    run(endpoint: str, stop: threading.Event, headers: dict | None = None) -> None

blocks until `stop` is set.

The shop, one TracerProvider per service so each has its own `service.name`:

- `storefront` calls `orders` (POST /orders, a CLIENT and a SERVER span: a
  call edge). `orders` publishes OrderPlaced to the Kafka topic `shop.orders`.
- `payments`, `shipping`, `analytics` consume `shop.orders` one message at a
  time with the current messaging conventions; `email` receives batches (one
  receive span linking every message's producer) and uses the legacy names.
- `payments` retries gateway timeouts, then publishes PaymentCaptured to the
  RabbitMQ queue `payments.captured`, consumed by `ledger`.
- `shipping` retries an invalid address twice, then dead-letters the order
  to `shop.orders.dlq`. `email` fails a bounced address without retrying.
- `analytics` is slow for 90 s out of every 120 s (three quarters of
  `cycle_s`), so its lag climbs and then drains.
- `shipping` hands shipments to `notifications`, which reports them as
  CloudEvents (published and processed) to `/v1/events`.
- `dlq-archive` keeps every dead-lettered order and reports it as a
  CloudEvent with its payload, under the message's id and on the dead
  letter's trace: the dead-lettered failure can then be replayed.
- The brokers report their figures as the OpenTelemetry Collector's
  receivers do, over OTLP metrics to `/v1/metrics`: `kafkametrics` for the
  topic `shop.orders` (end offsets, each group's committed offset and lag)
  and `rabbitmq` for the queue `payments.captured` (messages ready and
  unacknowledged, and the counters). The figures are the simulation's own:
  offsets advance with published orders, a group commits a message once it
  is done with it.

The shop is a discrete-event simulation on the wall clock: every decision is
drawn from one seedable random generator in a fixed order, and a span is
recorded once its (back-dated) end time has passed, so a seed gives the same
story at any speed.
"""

import collections
import dataclasses
import datetime as dt
import heapq
import itertools
import json
import logging
import os
import queue
import random
import ssl
import threading
import time
import uuid
import zlib
from collections.abc import Callable

import httpx
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.metrics import CallbackOptions, Observation
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import MetricReader, PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import Link, SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

log = logging.getLogger(__name__)

DEFAULT_RATE = 2.0  # orders per second
VERSION = "1.4.2"
SERVICES = (
    "storefront",
    "orders",
    "payments",
    "shipping",
    "email",
    "analytics",
    "ledger",
)
ORDERS_TOPIC = "shop.orders"
DEAD_LETTER_TOPIC = "shop.orders.dlq"
PARTITIONS = 3
# Published through RabbitMQ's default exchange, so the producer's
# destination (the routing key) and the consumer's (the queue) are one name.
CAPTURED_QUEUE = "payments.captured"
NOTIFICATIONS_SUBJECT = "shop.notifications"
MAX_ATTEMPTS = 3
# An export (retries included) gives up after this; it also bounds how long
# stopping takes when the collector has gone away.
EXPORT_TIMEOUT_S = 5.0
EMAIL_POLL_S = 0.5
EMAIL_MAX_BATCH = 10
ANALYTICS_CYCLE_S = 120.0
ANALYTICS_SLOW_S = 90.0
SLOW_SHARE = ANALYTICS_SLOW_S / ANALYTICS_CYCLE_S
# The brokers' figures are scraped this often (the receivers' default is a
# minute; the demo wants a lively lag page), at most a 24th of the cycle.
METRICS_INTERVAL_S = 5.0
DLQ_ARCHIVE = "dlq-archive"
RABBITMQ_VHOST = "/"
# At an order rate a consumer can never keep up with (--rate 50 outruns
# email), it skips messages that waited longer than this, so the backlog held
# in memory stays bounded however long the demo runs.
MAX_BACKLOG_S = 900.0

# Per-order odds of the things that go wrong.
OUT_OF_STOCK = 0.01
GATEWAY_TIMEOUT = 0.04
BAD_ADDRESS = 0.03
BOUNCED_EMAIL = 0.04

MS = 1_000_000
S = 1_000_000_000
PROPAGATOR = TraceContextTextMapPropagator()


class OutOfStock(Exception):
    """An order for an item the warehouse no longer has (HTTP 409)."""


class PaymentGatewayTimeout(TimeoutError):
    """The card processor did not answer in time; worth retrying."""


class InvalidShippingAddress(ValueError):
    """The carrier rejected the address; retrying cannot help."""


class MailboxUnavailable(ConnectionError):
    """The customer's mail server bounced the confirmation."""


# ---- telemetry ------------------------------------------------------------------


class Telemetry:
    """One TracerProvider per service, each with its own resource and span processor."""

    def __init__(self, make_processor: Callable[[], SpanProcessor]):
        self.providers = {}
        for service in SERVICES:
            provider = TracerProvider(
                resource=Resource.create(
                    {
                        "service.name": service,
                        "service.namespace": "shop",
                        "service.version": VERSION,
                        "deployment.environment.name": "demo",
                    }
                ),
                # run() shuts down explicitly; an atexit hook per provider
                # would flush them again at interpreter exit.
                shutdown_on_exit=False,
            )
            provider.add_span_processor(make_processor())
            self.providers[service] = provider

    @classmethod
    def otlp(cls, endpoint: str, headers: dict | None = None) -> "Telemetry":
        """Export each service's spans over OTLP/HTTP protobuf to `{endpoint}/v1/traces`."""
        url = f"{endpoint.rstrip('/')}/v1/traces"
        return cls(
            lambda: BatchSpanProcessor(
                OTLPSpanExporter(
                    endpoint=url, headers=dict(headers or {}), timeout=EXPORT_TIMEOUT_S
                ),
                schedule_delay_millis=1000,
            )
        )

    def tracer(self, service: str) -> trace.Tracer:
        return self.providers[service].get_tracer("eventscope.demo", VERSION)

    def shutdown(self) -> None:
        """Flush and stop every service's exporter.

        All at once: with the collector gone, each exporter retries until its
        timeout, and one after the other would take seven times as long."""
        stopping = [
            threading.Thread(target=provider.shutdown, name=f"demo-stop-{service}")
            for service, provider in self.providers.items()
        ]
        for thread in stopping:
            thread.start()
        for thread in stopping:
            thread.join()


class _QuietThread(logging.Filter):
    """Drops httpx's per-request INFO lines logged from one thread, which would
    otherwise log every CloudEvents post of the demo."""

    def __init__(self, thread_name: str):
        super().__init__()
        self.thread_name = thread_name

    def filter(self, record):
        return record.threadName != self.thread_name or record.levelno > logging.INFO


def _exporter_tls() -> ssl.SSLContext:
    """The TLS settings the OpenTelemetry exporters read from the environment
    (OTEL_EXPORTER_OTLP_CERTIFICATE, _CLIENT_CERTIFICATE, _CLIENT_KEY), so the
    CloudEvents posts reach the collector the same way the spans do."""
    context = ssl.create_default_context(cafile=os.environ.get("OTEL_EXPORTER_OTLP_CERTIFICATE"))
    client_certificate = os.environ.get("OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE")
    if client_certificate:
        context.load_cert_chain(
            client_certificate, os.environ.get("OTEL_EXPORTER_OTLP_CLIENT_KEY") or None
        )
    return context


class CloudEventSender:
    """Posts CloudEvents batches from a thread of its own, so a slow or absent
    collector never stalls the shop; when the queue is full, events are dropped."""

    def __init__(self, endpoint: str, headers: dict | None = None):
        self.url = f"{endpoint.rstrip('/')}/v1/events"
        self.client = httpx.Client(headers=dict(headers or {}), timeout=5.0, verify=_exporter_tls())
        self.pending: queue.Queue = queue.Queue(maxsize=1000)
        self.dropped = 0
        self.thread = threading.Thread(target=self._deliver, name="demo-cloudevents", daemon=True)
        self.quiet = _QuietThread(self.thread.name)
        logging.getLogger("httpx").addFilter(self.quiet)
        self.thread.start()

    def send(self, events: list[dict]) -> None:
        try:
            self.pending.put_nowait(events)
        except queue.Full:
            self.dropped += len(events)

    def close(self) -> None:
        """Deliver what is queued (waiting a few seconds at most), then stop."""
        try:
            self.pending.put(None, timeout=5)
        except queue.Full:
            pass
        self.thread.join(timeout=10)
        self.client.close()
        logging.getLogger("httpx").removeFilter(self.quiet)

    def _deliver(self) -> None:
        failing = False
        while (events := self.pending.get()) is not None:
            try:
                response = self.client.post(
                    self.url,
                    json=events,
                    headers={"content-type": "application/cloudevents-batch+json"},
                )
                problem = None if response.is_success else f"HTTP {response.status_code}"
            except httpx.HTTPError as exc:
                problem = str(exc) or type(exc).__name__
            # One warning per outage, not one per batch.
            if problem and not failing:
                log.warning("the demo's CloudEvents are not accepted at %s: %s", self.url, problem)
            failing = problem is not None


@dataclasses.dataclass
class BrokerFigures:
    """What the shop's brokers would report at one moment.

    Kafka: the end offset of each partition of `shop.orders` and each group's
    committed offset (the next offset it will read). RabbitMQ: the queue
    `payments.captured`, its messages ready and unacknowledged and its
    cumulative published, delivered and acknowledged counters.
    """

    end_offsets: dict[int, int]
    committed: dict[str, dict[int, int]]
    queue_ready: int = 0
    queue_unacknowledged: int = 0
    queue_published: int = 0
    queue_delivered: int = 0
    queue_acknowledged: int = 0


class BrokerMetrics:
    """The shop's broker figures as OTLP metrics, in the shape of the
    OpenTelemetry Collector's `kafkametrics` and `rabbitmq` receivers.

    A receiver scrapes its broker and exports what it read; here each export
    observes the latest `BrokerFigures` the shop handed to `update()`. The
    rabbitmq receiver names its queue in resource attributes, so the queue
    has a MeterProvider (a resource) of its own.
    """

    KAFKA_SCOPE = (
        "github.com/open-telemetry/opentelemetry-collector-contrib/receiver/kafkametricsreceiver"
    )
    RABBITMQ_SCOPE = (
        "github.com/open-telemetry/opentelemetry-collector-contrib/receiver/rabbitmqreceiver"
    )

    def __init__(self, make_reader: Callable[[], MetricReader]):
        self._lock = threading.Lock()
        self._figures: BrokerFigures | None = None
        self.kafka = MeterProvider(
            metric_readers=[make_reader()], resource=Resource({}), shutdown_on_exit=False
        )
        self.rabbitmq = MeterProvider(
            metric_readers=[make_reader()],
            resource=Resource(
                {
                    "rabbitmq.queue.name": CAPTURED_QUEUE,
                    "rabbitmq.vhost.name": RABBITMQ_VHOST,
                    "rabbitmq.node.name": "rabbit@shop",
                }
            ),
            shutdown_on_exit=False,
        )
        kafka = self.kafka.get_meter(self.KAFKA_SCOPE, VERSION)
        kafka.create_observable_gauge(
            "kafka.partition.current_offset",
            [self._end_offsets],
            "1",
            "Current offset of partition of topic.",
        )
        kafka.create_observable_gauge(
            "kafka.consumer_group.offset",
            [self._committed],
            "1",
            "Current offset of the consumer group at partition of topic",
        )
        kafka.create_observable_gauge(
            "kafka.consumer_group.lag",
            [self._lag],
            "1",
            "Current approximate lag of consumer group at partition of topic",
        )
        kafka.create_observable_gauge(
            "kafka.consumer_group.lag_sum",
            [self._lag_sum],
            "1",
            "Current approximate sum of consumer group lag across all partitions of topic",
        )
        kafka.create_observable_up_down_counter(
            "kafka.consumer_group.members",
            [self._members],
            "{members}",
            "Count of members in the consumer group",
        )
        rabbitmq = self.rabbitmq.get_meter(self.RABBITMQ_SCOPE, VERSION)
        rabbitmq.create_observable_up_down_counter(
            "rabbitmq.message.current",
            [self._queue_depth],
            "{messages}",
            "The total number of messages currently in the queue.",
        )
        rabbitmq.create_observable_up_down_counter(
            "rabbitmq.consumer.count",
            [self._queue_consumers],
            "{consumers}",
            "The number of consumers currently reading from the queue.",
        )
        for name, field, description in (
            ("published", "queue_published", "The number of messages published to a queue."),
            ("delivered", "queue_delivered", "The number of messages delivered to consumers."),
            (
                "acknowledged",
                "queue_acknowledged",
                "The number of messages acknowledged by consumers.",
            ),
        ):
            rabbitmq.create_observable_counter(
                f"rabbitmq.message.{name}",
                [self._queue_counter(field)],
                "{messages}",
                description,
            )

    @classmethod
    def otlp(
        cls, endpoint: str, headers: dict | None = None, interval_s: float = METRICS_INTERVAL_S
    ):
        """Export to `{endpoint}/v1/metrics` every `interval_s` seconds."""
        url = f"{endpoint.rstrip('/')}/v1/metrics"
        return cls(
            lambda: PeriodicExportingMetricReader(
                OTLPMetricExporter(
                    endpoint=url, headers=dict(headers or {}), timeout=EXPORT_TIMEOUT_S
                ),
                export_interval_millis=interval_s * 1000,
                export_timeout_millis=EXPORT_TIMEOUT_S * 1000,
            )
        )

    def update(self, figures: BrokerFigures) -> None:
        with self._lock:
            self._figures = figures

    def _latest(self) -> BrokerFigures | None:
        with self._lock:
            return self._figures

    # The callbacks run on the readers' export threads.

    def _end_offsets(self, options: CallbackOptions):
        figures = self._latest()
        if figures is None:
            return []
        return [
            Observation(end, {"topic": ORDERS_TOPIC, "partition": partition})
            for partition, end in figures.end_offsets.items()
        ]

    def _group_partitions(self):
        figures = self._latest()
        if figures is None:
            return
        for group, offsets in figures.committed.items():
            for partition, end in figures.end_offsets.items():
                committed = offsets.get(partition)
                yield group, partition, committed, end

    def _committed(self, options: CallbackOptions):
        # -1 is what the receiver reports for a group with no committed offset yet.
        return [
            Observation(-1 if committed is None else committed, _group_attributes(group, partition))
            for group, partition, committed, _ in self._group_partitions()
        ]

    def _lag(self, options: CallbackOptions):
        return [
            Observation(
                -1 if committed is None else end - committed, _group_attributes(group, partition)
            )
            for group, partition, committed, end in self._group_partitions()
        ]

    def _lag_sum(self, options: CallbackOptions):
        sums: dict[str, int] = {}
        for group, _, committed, end in self._group_partitions():
            if committed is not None:
                sums[group] = sums.get(group, 0) + end - committed
        return [
            Observation(lag, {"group": group, "topic": ORDERS_TOPIC}) for group, lag in sums.items()
        ]

    def _members(self, options: CallbackOptions):
        figures = self._latest()
        if figures is None:
            return []
        return [Observation(1, {"group": group}) for group in figures.committed]

    def _queue_depth(self, options: CallbackOptions):
        figures = self._latest()
        if figures is None:
            return []
        return [
            Observation(figures.queue_ready, {"state": "ready"}),
            Observation(figures.queue_unacknowledged, {"state": "unacknowledged"}),
        ]

    def _queue_consumers(self, options: CallbackOptions):
        return [] if self._latest() is None else [Observation(1)]

    def _queue_counter(self, field: str):
        def observe(options: CallbackOptions):
            figures = self._latest()
            return [] if figures is None else [Observation(getattr(figures, field))]

        return observe

    def shutdown(self) -> None:
        """Export the last figures and stop, both brokers at once."""
        stopping = [
            threading.Thread(target=provider.shutdown, name=f"demo-stop-{name}")
            for name, provider in (("kafka", self.kafka), ("rabbitmq", self.rabbitmq))
        ]
        for thread in stopping:
            thread.start()
        for thread in stopping:
            thread.join()


def _group_attributes(group: str, partition: int) -> dict:
    return {"group": group, "topic": ORDERS_TOPIC, "partition": partition}


# ---- the simulation ---------------------------------------------------------------


@dataclasses.dataclass
class Order:
    number: int
    id: str
    customer: str
    total: float
    items: int
    out_of_stock: bool
    gateway_timeout: bool
    bad_address: bool
    bounced_email: bool

    def body(self) -> bytes:
        """The OrderPlaced payload as it would go on the wire."""
        return json.dumps(
            {"order": self.id, "customer": self.customer, "total": self.total, "items": self.items}
        ).encode()


@dataclasses.dataclass
class Message:
    """A record on the simulated broker: the body plus the headers that carry
    the producer's trace context, as Kafka and AMQP headers do."""

    order: Order
    id: str
    destination: str
    headers: dict = dataclasses.field(default_factory=dict)
    published_ns: int = 0
    available_ns: int = 0
    partition: int = 0
    offset: int = 0

    def context(self):
        return PROPAGATOR.extract(self.headers)

    def span_context(self):
        return trace.get_current_span(self.context()).get_span_context()


@dataclasses.dataclass
class Consumer:
    """One consumer-group member: handles one message at a time, in order."""

    service: str
    group: str
    busy_until_ns: int = 0


@dataclasses.dataclass
class Attempt:
    start_ns: int
    end_ns: int
    error: Exception | None = None
    retried: bool = False
    dead_letter: bool = False


@dataclasses.dataclass
class Tally:
    """What the shop did, for the command's closing line and for tests."""

    orders: int = 0
    published: int = 0
    processed: int = 0
    failed: int = 0
    retried: int = 0
    dead_lettered: int = 0
    cloudevents: int = 0
    archived: int = 0


class Scheduler:
    """Actions due at simulated times, run in time order (ties in the order added)."""

    def __init__(self):
        self._heap: list = []
        self._sequence = itertools.count()
        self.current_ns = 0

    def at(self, due_ns: int, action: Callable, *args) -> None:
        heapq.heappush(self._heap, (due_ns, next(self._sequence), action, args))

    def next_due(self) -> int | None:
        return self._heap[0][0] if self._heap else None

    def run_until(self, now_ns: int) -> int:
        """Run every action due by `now_ns` (including ones they schedule); returns how many."""
        ran = 0
        while self._heap and self._heap[0][0] <= now_ns:
            self.current_ns, _, action, args = heapq.heappop(self._heap)
            action(*args)
            ran += 1
        return ran


class Shop:
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

    @property
    def _current(self) -> int:
        """The simulated time of the action being run."""
        return self.scheduler.current_ns


def _rfc3339(time_ns: int) -> str:
    moment = dt.datetime.fromtimestamp(time_ns // 1000 / 1e6, dt.UTC)
    return moment.isoformat(timespec="microseconds").replace("+00:00", "Z")


# ---- entry point --------------------------------------------------------------------


def run(
    endpoint: str,
    stop: threading.Event,
    headers: dict | None = None,
    *,
    rate: float = DEFAULT_RATE,
    seed: int | None = None,
    cycle_s: float = ANALYTICS_CYCLE_S,
    metrics_interval_s: float | None = None,
) -> Tally:
    """Run the shop against the collector at `endpoint` until `stop` is set.

    `headers` go with every export (e.g. `{"authorization": "Bearer …"}`).
    `cycle_s` is the length of analytics' slow/fast cycle (slow for three
    quarters of it); the broker figures are exported every
    `metrics_interval_s` (default: 5 s, or a 24th of a shorter cycle).
    Spans and figures still buffered are flushed before returning; returns
    the tally.
    """
    if metrics_interval_s is None:
        metrics_interval_s = metrics_interval(cycle_s)
    telemetry = Telemetry.otlp(endpoint, headers)
    brokers = BrokerMetrics.otlp(endpoint, headers, metrics_interval_s)
    events = CloudEventSender(endpoint, headers)
    try:
        shop = Shop(
            telemetry.tracer,
            start_ns=time.time_ns(),
            rate=rate,
            seed=seed,
            send_events=events.send,
            cycle_s=cycle_s,
        )
        log.info("demo shop: %.1f orders/s to %s", rate, endpoint)
        while not stop.is_set():
            now = time.time_ns()
            shop.advance(now)
            brokers.update(shop.broker_figures(now))
            wait = (shop.next_due() - time.time_ns()) / S
            stop.wait(min(max(wait, 0.0), 0.5))
        return shop.tally
    finally:
        events.close()
        # Together: with the collector gone, each waits out its export timeout.
        stopping = [
            threading.Thread(target=telemetry.shutdown, name="demo-stop-traces"),
            threading.Thread(target=brokers.shutdown, name="demo-stop-metrics"),
        ]
        for thread in stopping:
            thread.start()
        for thread in stopping:
            thread.join()


def metrics_interval(cycle_s: float) -> float:
    """How often the broker figures are exported for a slow/fast cycle of `cycle_s`."""
    return max(0.5, min(METRICS_INTERVAL_S, cycle_s / 24))


def lag_window(cycle_s: float) -> int:
    """A lag status window that fits analytics' slow phase: a third of it
    (30 s of the 90 s), so the group reads behind for most of the phase and
    ok again once it has caught up. Burrow's rules call a group ok when its
    lag was zero anywhere in the window, so a window longer than the slow
    phase would never see it fall behind."""
    return max(10, round(cycle_s * SLOW_SHARE / 3))
