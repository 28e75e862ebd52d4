"""Prometheus text exposition: a parser, and the lag figures of three exporters.

- kafka_exporter (danielqsj): kafka_consumergroup_lag / _current_offset per
  (consumergroup, topic, partition), kafka_topic_partition_current_offset;
- RabbitMQ's rabbitmq_prometheus plugin: /metrics/detailed
  (rabbitmq_detailed_queue_messages_ready, …) or per-object /metrics
  (rabbitmq_queue_messages_ready, …), labels vhost and queue, summed across
  the nodes a scrape covers. Depth comes from family queue_coarse_metrics,
  consumers from queue_consumer_count; the family queue_delivery_metrics
  (rabbitmq_detailed_queue_messages_acked_total, _messages_delivered_total
  and _get_total for automatic acknowledgement) gives the queue a position,
  so it is judged like a Kafka partition. Without it only the depth is known;
- prometheus-nats-exporter with -jsz=consumers: jetstream_consumer_num_pending
  and friends (any prefix), keeping only the consumer leader's series, keyed
  by account as well as stream and consumer.

Parsing is a pure function from text to samples, so it is easy to test with
captured exporter output. Both the classic text format and the quoted
UTF-8 names of Prometheus 3 (`{"name.with.dots", "label.x"="v"} 1`) are read.
"""

import math
import re
from collections import defaultdict
from dataclasses import dataclass

from collector.brokers.offsets import KafkaOffsets, jetstream_reading, rabbitmq_reading
from collector.brokers.samples import Report

_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
_LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
_QUOTED = re.compile(r'"((?:[^"\\]|\\.)*)"')
_ESCAPES = {"\\\\": "\\", '\\"': '"', "\\n": "\n"}


class ParseError(ValueError):
    """A line that is not Prometheus text format."""


@dataclass(frozen=True, slots=True)
class Sample:
    name: str
    labels: dict
    value: float
    timestamp_ms: int | None = None


def _unescape(value: str) -> str:
    return re.sub(r"\\[\\\"n]", lambda m: _ESCAPES[m.group(0)], value)


def _float(text: str) -> float:
    lowered = text.lower()
    if lowered in ("nan",):
        return math.nan
    if lowered in ("+inf", "inf"):
        return math.inf
    if lowered == "-inf":
        return -math.inf
    return float(text)


def parse_line(line: str) -> Sample | None:
    """One sample from one line; None for comments and blank lines."""
    line = line.strip()
    if not line or line.startswith("#"):
        return None
    match = _NAME.match(line)
    name = match.group(0) if match else None
    rest = line[match.end() :].lstrip() if match else line
    labels = {}
    if rest.startswith("{"):
        name, labels, position = _label_set(rest, name, line)
        rest = rest[position:]
    if not name:
        raise ParseError(f"no metric name in {line[:80]!r}")
    fields = rest.split()
    if not fields or len(fields) > 2:
        raise ParseError(f"expected a value (and a timestamp) in {line[:80]!r}")
    try:
        value = _float(fields[0])
        timestamp = int(fields[1]) if len(fields) == 2 else None
    except ValueError:
        raise ParseError(f"bad value in {line[:80]!r}") from None
    return Sample(name, labels, value, timestamp)


def _blanks(text: str, position: int) -> int:
    while position < len(text) and text[position] in " \t":
        position += 1
    return position


def _label_set(text: str, name: str | None, line: str) -> tuple[str | None, dict, int]:
    """(metric name, labels, end position) of a `{…}` at the start of `text`.

    Items are `label="value"`, with the label possibly quoted, or a lone
    quoted string: the metric name, when it was not written before the brace.
    """
    labels, position = {}, 1
    while True:
        position = _blanks(text, position)
        if text.startswith("}", position):
            return name, labels, position + 1
        quoted = _QUOTED.match(text, position)
        token = quoted or _LABEL_NAME.match(text, position)
        if not token:
            raise ParseError(f"bad labels in {line[:80]!r}")
        key = _unescape(quoted.group(1)) if quoted else token.group(0)
        position = _blanks(text, token.end())
        if text.startswith("=", position):
            value = _QUOTED.match(text, _blanks(text, position + 1))
            if not value:
                raise ParseError(f"bad labels in {line[:80]!r}")
            labels[key] = _unescape(value.group(1))
            position = _blanks(text, value.end())
        elif quoted and name is None:
            name = key
        else:
            raise ParseError(f"bad labels in {line[:80]!r}")
        if text.startswith(",", position):
            position += 1
        elif not text.startswith("}", position):
            raise ParseError(f"bad labels in {line[:80]!r}")


def parse(text: str) -> tuple[list[Sample], list[str]]:
    """(samples, errors): a malformed line is reported and skipped, not fatal."""
    found, errors = [], []
    for line in text.splitlines():
        try:
            sample = parse_line(line)
        except ParseError as exc:
            errors.append(str(exc))
            continue
        if sample is not None:
            found.append(sample)
    return found, errors


# ---- exporter mappings --------------------------------------------------------------


def _usable(sample: Sample) -> bool:
    return math.isfinite(sample.value)


def _time(sample: Sample, default: float | None) -> float | None:
    return sample.timestamp_ms / 1000 if sample.timestamp_ms else default


def kafka_readings(found: list[Sample], now: float | None = None):
    """kafka_exporter series → readings (the same assembly as OTLP kafkametrics)."""
    return kafka_offsets(found, now).readings()


def kafka_offsets(found: list[Sample], now: float | None = None) -> KafkaOffsets:
    """kafka_exporter series assembled per partition and group."""
    kafka = KafkaOffsets()
    for s in found:
        if not _usable(s):
            continue
        labels = s.labels
        if s.name == "kafka_topic_partition_current_offset":
            if "topic" in labels and "partition" in labels:
                kafka.add_end(labels["topic"], labels["partition"], s.value, _time(s, now))
        elif s.name in ("kafka_consumergroup_lag", "kafka_consumergroup_current_offset"):
            if not all(k in labels for k in ("consumergroup", "topic", "partition")):
                continue
            add = kafka.add_lag if s.name.endswith("_lag") else kafka.add_committed
            add(
                labels["consumergroup"],
                labels["topic"],
                labels["partition"],
                s.value,
                _time(s, now),
            )
        elif s.name == "kafka_consumergroup_members" and "consumergroup" in labels:
            kafka.add_members(labels["consumergroup"], s.value)
    return kafka


RABBITMQ_FIGURES = {
    "messages_ready": "ready",
    "messages_unacked": "unacked",
    "consumers": "consumers",
    # family queue_delivery_metrics: what left the queue for good
    "messages_acked_total": "acked",
    "messages_delivered_total": "delivered_no_ack",
    "get_total": "get_no_ack",
}
RABBITMQ_PROGRESS = ("acked", "delivered_no_ack", "get_no_ack")
_RABBITMQ_NAME = re.compile(r"rabbitmq_(?:detailed_)?queue_(" + "|".join(RABBITMQ_FIGURES) + r")$")


def rabbitmq_readings(found: list[Sample], now: float | None = None):
    """rabbitmq_prometheus per-queue series → readings; node-local values are summed.

    A queue's position is its acknowledgements plus its deliveries and gets
    in automatic acknowledgement mode, as for the management API. When the
    scrape carries those counters for any queue, the family was requested
    and a queue without them has had none yet (position 0); when it carries
    none, positions are unknown and queues are judged on depth alone.
    """
    queues: dict[tuple[str, str], dict] = defaultdict(lambda: defaultdict(float))
    for s in found:
        match = _RABBITMQ_NAME.match(s.name)
        if not match or not _usable(s) or "queue" not in s.labels:
            continue
        key = (s.labels.get("vhost", "/"), s.labels["queue"])
        queues[key][RABBITMQ_FIGURES[match.group(1)]] += s.value
    with_progress = any(f in figures for figures in queues.values() for f in RABBITMQ_PROGRESS)
    readings = []
    for (vhost, queue), figures in sorted(queues.items()):
        if "ready" not in figures and "unacked" not in figures:
            continue
        readings.append(
            rabbitmq_reading(
                vhost,
                queue,
                figures.get("ready"),
                figures.get("unacked"),
                consumers=figures.get("consumers"),
                acked=sum(figures.get(f, 0) for f in RABBITMQ_PROGRESS) if with_progress else None,
                time=now,
            )
        )
    return readings


_NATS_NAME = re.compile(
    r"(?:[a-zA-Z0-9]+_)?consumer_(num_pending|num_ack_pending|ack_floor_stream_seq"
    r"|last_delivery_seconds|last_ack_seconds)$"
)
# Past this a "seconds" figure is a Unix time, not an age (31 years).
_EPOCH_FLOOR = 1e9


def _activity(figures: dict, now: float | None) -> float | None:
    """When the consumer last took a delivery or acknowledged, from the exporter's figures."""
    moments = []
    for name in ("last_delivery_seconds", "last_ack_seconds"):
        value = figures.get(name)
        if value is None or value < 0:
            continue
        if value >= _EPOCH_FLOOR:
            moments.append(value)
        elif now is not None:
            moments.append(now - value)  # an age
    return max(moments) if moments else None


def nats_readings(found: list[Sample], now: float | None = None):
    """prometheus-nats-exporter JetStream consumer series → readings (leaders only)."""
    consumers: dict[tuple[str, str, str], dict] = defaultdict(dict)
    for s in found:
        match = _NATS_NAME.match(s.name)
        if not match or not _usable(s):
            continue
        labels = s.labels
        if labels.get("is_consumer_leader", "true") != "true":
            continue  # replicas repeat the leader's figures
        if "stream_name" not in labels or "consumer_name" not in labels:
            continue
        key = (labels.get("account", ""), labels["stream_name"], labels["consumer_name"])
        consumers[key][match.group(1)] = s.value
    return [
        jetstream_reading(
            stream,
            consumer,
            figures.get("num_pending"),
            figures.get("num_ack_pending"),
            figures.get("ack_floor_stream_seq"),
            active_at=_activity(figures, now),
            time=now,
            account=account,
        )
        for (account, stream, consumer), figures in sorted(consumers.items())
        if "num_pending" in figures
    ]


def report(text: str, now: float | None = None) -> tuple[Report, list[str]]:
    """(what one scrape says, parse errors), whichever exporters it holds."""
    found, errors = parse(text)
    kafka = kafka_offsets(found, now)
    found_readings = kafka.readings() + rabbitmq_readings(found, now) + nats_readings(found, now)
    return Report(found_readings, kafka.ends()), errors


def readings(text: str, now: float | None = None):
    """(readings, parse errors) from one scrape."""
    scraped, errors = report(text, now)
    return scraped.readings, errors
