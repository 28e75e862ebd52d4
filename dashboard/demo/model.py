"""The shop's constants and errors, and the simulation's plain types and scheduler."""

import dataclasses
import datetime as dt
import heapq
import itertools
import json
from collections.abc import Callable

from opentelemetry import trace
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

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
    "warehouse",
    "tracking",
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


def _rfc3339(time_ns: int) -> str:
    moment = dt.datetime.fromtimestamp(time_ns // 1000 / 1e6, dt.UTC)
    return moment.isoformat(timespec="microseconds").replace("+00:00", "Z")
