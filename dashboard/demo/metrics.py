"""The brokers' figures, exported over OTLP metrics as the Collector's receivers do."""

import dataclasses
import threading
from collections.abc import Callable

from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
from opentelemetry.metrics import CallbackOptions, Observation
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import MetricReader, PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource

from dashboard.demo.model import (
    CAPTURED_QUEUE,
    EXPORT_TIMEOUT_S,
    METRICS_INTERVAL_S,
    ORDERS_TOPIC,
    RABBITMQ_VHOST,
    VERSION,
)


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
