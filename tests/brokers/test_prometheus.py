"""Prometheus text: the parser, and exporter output giving the same lag as OTLP."""

from pathlib import Path

import pytest
from google.protobuf import json_format
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)

from collector.brokers import prometheus
from collector.brokers.otlp_metrics import readings_from_request

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "brokers"


def _figures(readings):
    return {
        (r.system, r.channel, r.group, r.partition): (r.end_offset, r.committed_offset, r.lag)
        for r in readings
    }


def test_it_parses_labels_escapes_timestamps_and_special_values():
    sample = prometheus.parse_line(
        r'm{a="x\"y",b="line\nnext", c="back\\slash"} 1.5e3 1700000000000'
    )
    assert sample.name == "m"
    assert sample.labels == {"a": 'x"y', "b": "line\nnext", "c": "back\\slash"}
    assert sample.value == 1500.0 and sample.timestamp_ms == 1700000000000
    assert prometheus.parse_line("up 1").labels == {}
    assert prometheus.parse_line("m{} NaN").value != prometheus.parse_line("m{} NaN").value
    assert prometheus.parse_line("# HELP m help") is None


def test_a_malformed_line_is_reported_and_the_rest_kept():
    samples, errors = prometheus.parse('good 1\nbad{a="1" 2\nalso_good{x="y"} 3\n')
    assert [s.name for s in samples] == ["good", "also_good"]
    assert len(errors) == 1 and "bad labels" in errors[0]


def test_kafka_exporter_text_gives_the_same_lag_as_the_otlp_kafkametrics_payload():
    scraped, errors = prometheus.readings((FIXTURES / "kafka_exporter.txt").read_text(), 1e9)
    assert errors == []
    request = json_format.Parse(
        (FIXTURES / "kafkametrics.json").read_text(), ExportMetricsServiceRequest()
    )
    pushed, rejected, _ = readings_from_request(request)
    assert rejected == 0
    assert _figures(scraped) == _figures(pushed)
    assert _figures(scraped)[("kafka", "orders", "billing", "0")] == (1500, 1200, 300)
    assert _figures(scraped)[("kafka", "orders", "billing", "2")] == (40, None, None)
    # a group with members is an active consumer, in both forms
    for readings in (scraped, pushed):
        active = {r.group: r.active_at is not None for r in readings}
        assert active == {"billing": True, "shipping": False}


def test_rabbitmq_prometheus_detailed_gives_queue_depths():
    readings, errors = prometheus.readings(
        (FIXTURES / "rabbitmq_prometheus_detailed.txt").read_text(), now=1000.0
    )
    assert errors == []
    depth = {(r.namespace, r.channel): r.lag for r in readings}
    assert depth == {("/", "payments"): 150, ("/", "emails"): 0, ("shop", "shipping"): 10}
    consumers = {r.channel: r.active_at is not None for r in readings}
    # a queue with consumers attached counts as an active consumer
    assert consumers == {"payments": True, "emails": True, "shipping": False}


def test_rabbitmq_series_from_several_nodes_are_summed():
    text = (
        'rabbitmq_queue_messages_ready{vhost="/",queue="q",instance="n1"} 3\n'
        'rabbitmq_queue_messages_ready{vhost="/",queue="q",instance="n2"} 4\n'
    )
    (reading,) = prometheus.readings(text)[0]
    assert reading.lag == 7


def test_nats_exporter_keeps_consumer_leaders_only():
    readings, errors = prometheus.readings((FIXTURES / "nats_exporter.txt").read_text())
    assert errors == []
    figures = {(r.channel, r.group): (r.lag, r.committed_offset) for r in readings}
    # mailer: 42 pending + 8 awaiting ack, counted once though two servers report it
    assert figures == {("ORDERS", "mailer"): (50, 950), ("ORDERS", "audit"): (0, 1000)}


@pytest.mark.parametrize("prefix", ["jetstream", "nats"])
def test_nats_exporter_prefix_does_not_matter(prefix):
    text = f'{prefix}_consumer_num_pending{{stream_name="S",consumer_name="c"}} 9\n'
    (reading,) = prometheus.readings(text)[0]
    assert (reading.system, reading.channel, reading.group, reading.lag) == ("nats", "S", "c", 9)
