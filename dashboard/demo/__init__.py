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

The parts: constants and plain types (`model`), the simulation (`shop`, with
`outcomes`), the span exporters (`telemetry`), the broker figures (`metrics`)
and the CloudEvents reporter (`cloudevents`); `run()` here ties them together.
"""

import logging
import threading
import time

from dashboard.demo.cloudevents import CloudEventSender
from dashboard.demo.metrics import BrokerFigures, BrokerMetrics
from dashboard.demo.model import (
    ANALYTICS_CYCLE_S,
    ANALYTICS_SLOW_S,
    BAD_ADDRESS,
    BOUNCED_EMAIL,
    CAPTURED_QUEUE,
    DEAD_LETTER_TOPIC,
    DEFAULT_RATE,
    DLQ_ARCHIVE,
    EMAIL_MAX_BATCH,
    EMAIL_POLL_S,
    EXPORT_TIMEOUT_S,
    GATEWAY_TIMEOUT,
    MAX_ATTEMPTS,
    METRICS_INTERVAL_S,
    MS,
    NOTIFICATIONS_SUBJECT,
    ORDERS_TOPIC,
    OUT_OF_STOCK,
    PARTITIONS,
    PROPAGATOR,
    RABBITMQ_VHOST,
    SERVICES,
    SLOW_SHARE,
    VERSION,
    Attempt,
    Consumer,
    InvalidShippingAddress,
    MailboxUnavailable,
    Message,
    Order,
    OutOfStock,
    PaymentGatewayTimeout,
    S,
    Scheduler,
    Tally,
)
from dashboard.demo.shop import MAX_BACKLOG_S, Shop
from dashboard.demo.telemetry import Telemetry

log = logging.getLogger(__name__)

__all__ = [
    "ANALYTICS_CYCLE_S",
    "ANALYTICS_SLOW_S",
    "Attempt",
    "BAD_ADDRESS",
    "BOUNCED_EMAIL",
    "BrokerFigures",
    "BrokerMetrics",
    "CAPTURED_QUEUE",
    "CloudEventSender",
    "Consumer",
    "DEAD_LETTER_TOPIC",
    "DEFAULT_RATE",
    "DLQ_ARCHIVE",
    "EMAIL_MAX_BATCH",
    "EMAIL_POLL_S",
    "EXPORT_TIMEOUT_S",
    "GATEWAY_TIMEOUT",
    "InvalidShippingAddress",
    "MAX_ATTEMPTS",
    "MAX_BACKLOG_S",
    "METRICS_INTERVAL_S",
    "MS",
    "MailboxUnavailable",
    "Message",
    "NOTIFICATIONS_SUBJECT",
    "ORDERS_TOPIC",
    "OUT_OF_STOCK",
    "Order",
    "OutOfStock",
    "PARTITIONS",
    "PROPAGATOR",
    "PaymentGatewayTimeout",
    "RABBITMQ_VHOST",
    "S",
    "SERVICES",
    "SLOW_SHARE",
    "Scheduler",
    "Shop",
    "Tally",
    "Telemetry",
    "VERSION",
    "lag_window",
    "metrics_interval",
    "run",
]


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
