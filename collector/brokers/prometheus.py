"""Prometheus text exposition: a parser, and the lag figures of three exporters.

- kafka_exporter (danielqsj): kafka_consumergroup_lag / _current_offset per
  (consumergroup, topic, partition), kafka_topic_partition_current_offset;
- RabbitMQ's rabbitmq_prometheus plugin: /metrics/detailed
  (rabbitmq_detailed_queue_messages_ready, …) or per-object /metrics
  (rabbitmq_queue_messages_ready, …), labels vhost and queue, summed across
  the nodes a scrape covers;
- prometheus-nats-exporter with -jsz=consumers: jetstream_consumer_num_pending
  and friends (any prefix), keeping only the consumer leader's series.

Parsing is a pure function from text to samples, so it is easy to test with
captured exporter output.
"""

import math
import re
from collections import defaultdict
from dataclasses import dataclass

from collector.brokers.offsets import KafkaOffsets, jetstream_reading, rabbitmq_reading
from collector.brokers.samples import Report

_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
_LABEL = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*=\s*"((?:[^"\\]|\\.)*)"\s*(,|(?=}))')
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
    if not match:
        raise ParseError(f"no metric name in {line[:80]!r}")
    name, rest = match.group(0), line[match.end() :]
    labels = {}
    if rest.startswith("{"):
        position = 1
        while True:
            if rest[position:].lstrip().startswith("}"):
                position = rest.index("}", position) + 1
                break
            label = _LABEL.match(rest, position)
            if not label:
                raise ParseError(f"bad labels in {line[:80]!r}")
            labels[label.group(1)] = _unescape(label.group(2))
            position = label.end()
        rest = rest[position:]
    fields = rest.split()
    if not fields or len(fields) > 2:
        raise ParseError(f"expected a value (and a timestamp) in {line[:80]!r}")
    try:
        value = _float(fields[0])
        timestamp = int(fields[1]) if len(fields) == 2 else None
    except ValueError:
        raise ParseError(f"bad value in {line[:80]!r}") from None
    return Sample(name, labels, value, timestamp)


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
    "messages_acked_total": "acked",
}
_RABBITMQ_NAME = re.compile(r"rabbitmq_(?:detailed_)?queue_(" + "|".join(RABBITMQ_FIGURES) + r")$")


def rabbitmq_readings(found: list[Sample], now: float | None = None):
    """rabbitmq_prometheus per-queue series → readings; node-local values are summed."""
    queues: dict[tuple[str, str], dict] = defaultdict(lambda: defaultdict(float))
    for s in found:
        match = _RABBITMQ_NAME.match(s.name)
        if not match or not _usable(s) or "queue" not in s.labels:
            continue
        key = (s.labels.get("vhost", "/"), s.labels["queue"])
        queues[key][RABBITMQ_FIGURES[match.group(1)]] += s.value
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
                acked=figures.get("acked"),
                time=now,
            )
        )
    return readings


_NATS_NAME = re.compile(
    r"(?:[a-zA-Z0-9]+_)?consumer_(num_pending|num_ack_pending|ack_floor_stream_seq)$"
)


def nats_readings(found: list[Sample], now: float | None = None):
    """prometheus-nats-exporter JetStream consumer series → readings (leaders only)."""
    consumers: dict[tuple[str, str], dict] = defaultdict(dict)
    for s in found:
        match = _NATS_NAME.match(s.name)
        if not match or not _usable(s):
            continue
        labels = s.labels
        if labels.get("is_consumer_leader", "true") != "true":
            continue  # replicas repeat the leader's figures
        if "stream_name" not in labels or "consumer_name" not in labels:
            continue
        consumers[(labels["stream_name"], labels["consumer_name"])][match.group(1)] = s.value
    return [
        jetstream_reading(
            stream,
            consumer,
            figures.get("num_pending"),
            figures.get("num_ack_pending"),
            figures.get("ack_floor_stream_seq"),
            time=now,
        )
        for (stream, consumer), figures in sorted(consumers.items())
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
