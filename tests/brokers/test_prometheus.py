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


def test_it_reads_a_space_before_the_labels_and_quoted_utf8_names():
    spaced = prometheus.parse_line('kafka_consumergroup_lag {consumergroup="g"} 5')
    assert (spaced.name, spaced.labels, spaced.value) == (
        "kafka_consumergroup_lag",
        {"consumergroup": "g"},
        5,
    )
    dotted = prometheus.parse_line(
        '{"kafka.consumer_group.lag", "messaging.group"="g", b = "c",} 7 17'
    )
    assert dotted.name == "kafka.consumer_group.lag"
    assert dotted.labels == {"messaging.group": "g", "b": "c"}
    assert (dotted.value, dotted.timestamp_ms) == (7, 17)
    for bad in ('{a="b"} 1', '{"n" "m"} 1', "x{a=b} 1", 'x{"a"} 1', 'x{a="b"'):
        with pytest.raises(prometheus.ParseError):
            prometheus.parse_line(bad)


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


def test_rabbitmq_delivery_metrics_give_each_queue_a_position():
    readings, errors = prometheus.readings(
        (FIXTURES / "rabbitmq_prometheus_delivery.txt").read_text(), now=1000.0
    )
    assert errors == []
    position = {r.channel: r.committed_offset for r in readings}
    # acked + delivered and fetched without acks; manual-ack deliveries are not progress yet,
    # and a queue the family leaves out has delivered nothing so far
    assert position == {"payments": 4000, "emails": 75, "shipping": 0}
    assert {r.channel: r.end_offset for r in readings}["payments"] == 4150
    # without the family, the position is unknown: judged on depth alone
    coarse, _ = prometheus.readings(
        (FIXTURES / "rabbitmq_prometheus_detailed.txt").read_text(), now=1000.0
    )
    assert {r.committed_offset for r in coarse} == {None}


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


def test_nats_exporter_keeps_accounts_apart_and_reads_consumer_activity():
    readings, errors = prometheus.readings(
        (FIXTURES / "nats_exporter_accounts.txt").read_text(), now=10_000.0
    )
    assert errors == []
    by_account = {r.namespace: r for r in readings}
    # the default account ($G) is no account; ACME's ORDERS/mailer is another consumer
    assert set(by_account) == {"", "ACME"}
    assert (by_account[""].lag, by_account["ACME"].lag) == (5, 42)
    # the latest of the last delivery and the last acknowledgement (ages in seconds)
    assert by_account[""].active_at == 10_000.0 - 1
    assert by_account["ACME"].active_at == 10_000.0 - 600


# ---- scraped over time: the status a user sees ---------------------------------------------


async def _scrape_until(scrape_target, project, channel, status, **where):
    from collector.brokers.poller import parse_broker, poll_broker
    from tests.brokers.conftest import group_item, poll_until

    broker = parse_broker(f"prometheus+{scrape_target.url}/metrics")

    # A few polls must fall inside the window however slow this machine is
    # at the moment (a poll and its store took about 1 s under load).
    async def poll():
        assert await poll_broker(broker, project.id, window=3.0)

    def reached():
        item = group_item(project.id, "rabbitmq", channel, **where)
        return item if item and item["status"] == status else None

    return await poll_until(poll, reached, timeout=30)


async def test_a_scraped_queue_with_an_ack_counter_that_does_not_move_is_stalled(
    lag_db, project, scrape_target
):
    scrape_target.text = (FIXTURES / "rabbitmq_prometheus_delivery.txt").read_text()
    item = await _scrape_until(scrape_target, project, "payments", "stalled", vhost="/")
    assert "stayed at 4000" in item["reason"]


async def test_a_scraped_queue_without_ack_counters_is_judged_on_its_depth(
    lag_db, project, scrape_target
):
    scrape_target.text = (FIXTURES / "rabbitmq_prometheus_detailed.txt").read_text()
    # no consumer on shop/shipping, and its depth never falls: stopped
    shipping = await _scrape_until(scrape_target, project, "shipping", "stopped", vhost="shop")
    assert "no consumer is attached" in shipping["reason"]
    # two consumers on payments, and its depth never falls either: an error
    payments = await _scrape_until(scrape_target, project, "payments", "error", vhost="/")
    assert "though consumers are attached" in payments["reason"]
