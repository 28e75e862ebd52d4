"""OTLP metrics from the OpenTelemetry Collector's kafkametrics and rabbitmq receivers.

`ingest_metrics()` is what POST /v1/metrics and the gRPC MetricsService call.
It reads the lag figures it understands (names and attributes as the
receivers document them), stores them as lag samples and answers how many
data points it had to reject. Metrics it does not know are ignored, not
rejected: an OTel Collector pipeline may well send host or runtime metrics
along.
"""

import logging
import math
import time as clock
from collections import Counter

import psycopg
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)

from collector.batch import StorageUnavailable
from collector.brokers import samples
from collector.brokers.offsets import KafkaOffsets, rabbitmq_reading

log = logging.getLogger(__name__)

SOURCE = "otlp"

KAFKA_GROUP_METRICS = {"kafka.consumer_group.lag", "kafka.consumer_group.offset"}
KAFKA_MEMBERS = "kafka.consumer_group.members"
KAFKA_PARTITION_METRICS = {"kafka.partition.current_offset"}
RABBITMQ_METRICS = {
    "rabbitmq.message.current",
    "rabbitmq.consumer.count",
    "rabbitmq.message.acknowledged",
    "rabbitmq.message.delivered",
    "rabbitmq.message.published",
}


class Rejected(ValueError):
    """A data point of a metric we understand that cannot be used; the message says why."""


def _any_value(value):
    kind = value.WhichOneof("value")
    return getattr(value, kind) if kind else None


def _attributes(key_values) -> dict:
    return {kv.key: _any_value(kv.value) for kv in key_values}


def _number(point) -> float:
    kind = point.WhichOneof("value")
    if kind is None:
        raise Rejected("data point without a value")
    value = getattr(point, kind)
    if isinstance(value, float) and not math.isfinite(value):
        raise Rejected(f"value {value} is not a finite number")
    return value


def _points(metric):
    kind = metric.WhichOneof("data")
    if kind in ("gauge", "sum"):
        return getattr(metric, kind).data_points
    return ()


def _text(attributes: dict, name: str, metric: str) -> str:
    value = attributes.get(name)
    if value is None or value == "":
        raise Rejected(f"{metric} without attribute {name!r}")
    return str(value)


def _partition(attributes: dict, metric: str) -> str:
    # Newer receivers send an int, older generated code a string.
    value = attributes.get("partition")
    if isinstance(value, bool) or value is None:
        raise Rejected(f"{metric} without attribute 'partition'")
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str) and value.strip().isdigit():
        return str(int(value))
    raise Rejected(f"{metric}: partition {value!r} is not a partition number")


def readings_from_request(request: ExportMetricsServiceRequest):
    """(readings, rejected count, reasons) from one export request."""
    kafka = KafkaOffsets()
    queues: dict[tuple[str, str], dict] = {}
    rejected: Counter = Counter()
    now = clock.time()
    for resource_metrics in request.resource_metrics:
        resource = _attributes(resource_metrics.resource.attributes)
        for scope_metrics in resource_metrics.scope_metrics:
            for metric in scope_metrics.metrics:
                name = metric.name
                if not (
                    name in KAFKA_GROUP_METRICS
                    or name in KAFKA_PARTITION_METRICS
                    or name in RABBITMQ_METRICS
                    or name == KAFKA_MEMBERS
                ):
                    continue
                for point in _points(metric):
                    try:
                        attributes = _attributes(point.attributes)
                        value = _number(point)
                        when = point.time_unix_nano / 1e9 if point.time_unix_nano else now
                        if name == KAFKA_MEMBERS:
                            kafka.add_members(_text(attributes, "group", name), value)
                        elif name in KAFKA_PARTITION_METRICS:
                            topic = _text(attributes, "topic", name)
                            kafka.add_end(topic, _partition(attributes, name), value, when)
                        elif name in KAFKA_GROUP_METRICS:
                            group = _text(attributes, "group", name)
                            topic = _text(attributes, "topic", name)
                            partition = _partition(attributes, name)
                            add = kafka.add_lag if name.endswith(".lag") else kafka.add_committed
                            add(group, topic, partition, value, when)
                        else:
                            _rabbitmq_point(queues, name, resource, attributes, value, when)
                    except Rejected as exc:
                        rejected[str(exc)] += 1
    readings = kafka.readings()
    for (vhost, queue), figures in sorted(queues.items()):
        if "ready" not in figures and "unacknowledged" not in figures:
            continue  # counters alone say nothing about a backlog
        readings.append(
            rabbitmq_reading(
                vhost,
                queue,
                figures.get("ready"),
                figures.get("unacknowledged"),
                consumers=figures.get("consumers"),
                # No ack counter yet means no message was ever acknowledged.
                acked=figures.get("acknowledged", 0),
                time=figures.get("time"),
            )
        )
    return readings, sum(rejected.values()), rejected


def _rabbitmq_point(queues, name, resource, attributes, value, when):
    queue = resource.get("rabbitmq.queue.name") or attributes.get("rabbitmq.queue.name")
    if not queue:
        raise Rejected(f"{name} without resource attribute 'rabbitmq.queue.name'")
    vhost = resource.get("rabbitmq.vhost.name") or attributes.get("rabbitmq.vhost.name") or "/"
    figures = queues.setdefault((str(vhost), str(queue)), {})
    figures["time"] = max(figures.get("time", 0.0), when)
    if value < 0:
        raise Rejected(f"{name}: negative value {value}")
    if name == "rabbitmq.message.current":
        state = attributes.get("state")
        if state not in ("ready", "unacknowledged"):
            raise Rejected(f"{name}: state {state!r} is neither 'ready' nor 'unacknowledged'")
        figures[state] = int(value)
    elif name == "rabbitmq.consumer.count":
        figures["consumers"] = int(value)
    else:
        figures[name.rsplit(".", 1)[1]] = int(value)


def _message(rejected: int, reasons: Counter) -> str:
    if not rejected:
        return ""
    parts = [f"{reason} ({count})" for reason, count in reasons.most_common(5)]
    return f"{rejected} data point(s) rejected: " + "; ".join(parts)


async def ingest_metrics(project_id: int, request: ExportMetricsServiceRequest) -> tuple[int, str]:
    """Store the broker lag figures of an OTLP export; (rejected data points, message).

    Returns after the samples are committed. Raises StorageUnavailable when
    the database cannot be reached, so the receiver answers 503 and the
    exporter retries the whole request.
    """
    readings, rejected, reasons = readings_from_request(request)
    if readings:
        try:
            await samples.store_async(project_id, readings, SOURCE)
        except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
            log.warning("broker metrics not stored: %s", exc)
            raise StorageUnavailable("the database is unreachable") from exc
    return rejected, _message(rejected, reasons)
