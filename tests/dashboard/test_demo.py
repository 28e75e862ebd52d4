"""The demo shop, seen from outside: what its OpenTelemetry SDK exports over OTLP/HTTP.

A small HTTP server here stands in for a collector (for the shop, it is the
outside world): it decodes the protobuf export requests with
opentelemetry-proto, exactly as sent on the wire.
"""

import asyncio
import gzip
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.trace.v1.trace_pb2 import Span as PbSpan
from opentelemetry.proto.trace.v1.trace_pb2 import Status as PbStatus
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from dashboard import demo
from tests.http_sink import LocalHttpServer, QuietHandler

ROOT = Path(__file__).resolve().parents[2]
SERVER, CLIENT, PRODUCER, CONSUMER = (
    PbSpan.SPAN_KIND_SERVER,
    PbSpan.SPAN_KIND_CLIENT,
    PbSpan.SPAN_KIND_PRODUCER,
    PbSpan.SPAN_KIND_CONSUMER,
)


class OtlpSink(LocalHttpServer):
    """Accepts OTLP/HTTP protobuf traces and CloudEvents batches, and keeps them."""

    def __init__(self):
        super().__init__(_SinkHandler)
        self.spans: list[dict] = []
        self.events: list[dict] = []
        self.metrics: list[ExportMetricsServiceRequest] = []
        self.authorizations: set[str] = set()

    @property
    def url(self):
        return self.base_url


class _SinkHandler(QuietHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("content-length", 0)))
        if self.headers.get("content-encoding") == "gzip":
            body = gzip.decompress(body)
        with self.server.lock:
            self.server.authorizations.add(self.headers.get("authorization", ""))
            if self.path == "/v1/traces":
                assert self.headers["content-type"] == "application/x-protobuf"
                request = ExportTraceServiceRequest.FromString(body)
                self.server.spans.extend(_flatten(request))
                answer = ExportTraceServiceResponse().SerializeToString()
                content_type = "application/x-protobuf"
            elif self.path == "/v1/metrics":
                assert self.headers["content-type"] == "application/x-protobuf"
                self.server.metrics.append(ExportMetricsServiceRequest.FromString(body))
                answer = ExportMetricsServiceResponse().SerializeToString()
                content_type = "application/x-protobuf"
            elif self.path == "/v1/events":
                self.server.events.extend(json.loads(body))
                answer, content_type = b'{"accepted": 2, "rejected": []}', "application/json"
            else:
                self.send_error(404)
                return
        self.send_response(200)
        self.send_header("content-type", content_type)
        self.send_header("content-length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)


def _value(any_value):
    which = any_value.WhichOneof("value")
    return getattr(any_value, which) if which else None


def _flatten(request) -> list[dict]:
    spans = []
    for resource_spans in request.resource_spans:
        resource = {kv.key: _value(kv.value) for kv in resource_spans.resource.attributes}
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                spans.append(
                    {
                        "service": resource["service.name"],
                        "name": span.name,
                        "kind": span.kind,
                        "trace_id": span.trace_id.hex(),
                        "span_id": span.span_id.hex(),
                        "parent": span.parent_span_id.hex(),
                        "start": span.start_time_unix_nano,
                        "end": span.end_time_unix_nano,
                        "error": span.status.code == PbStatus.STATUS_CODE_ERROR,
                        "attributes": {kv.key: _value(kv.value) for kv in span.attributes},
                        "events": [event.name for event in span.events],
                        "links": [(link.trace_id.hex(), link.span_id.hex()) for link in span.links],
                    }
                )
    return spans


@pytest.fixture(scope="module")
def shop_run():
    """Three seconds of the shop at 25 orders/s, exported to a local sink."""
    with OtlpSink() as sink:
        stop = threading.Event()
        result = {}
        thread = threading.Thread(
            target=lambda: result.update(
                tally=demo.run(
                    sink.url,
                    stop,
                    {"authorization": "Bearer es_demo"},
                    rate=25,
                    seed=7,
                    metrics_interval_s=0.5,
                )
            )
        )
        thread.start()
        time.sleep(3)
        stop.set()
        thread.join(timeout=30)
        assert not thread.is_alive(), "run() did not return after stop was set"
        yield sink, result["tally"]


@pytest.fixture(scope="module")
def spans(shop_run):
    return shop_run[0].spans


def by_id(spans):
    return {span["span_id"]: span for span in spans}


def test_every_service_exports_spans_under_its_own_name(spans):
    assert set(demo.SERVICES) <= {span["service"] for span in spans}


def test_headers_go_with_every_export(shop_run):
    sink, _ = shop_run
    assert sink.authorizations == {"Bearer es_demo"}


def test_spans_still_buffered_at_stop_are_flushed(shop_run):
    sink, tally = shop_run
    publishes = [s for s in sink.spans if s["kind"] == PRODUCER and "dlq" not in s["name"]]
    assert len(publishes) == tally.published > 0
    assert tally.orders >= 40


def test_storefront_calls_orders_over_http(spans):
    spans_by_id = by_id(spans)
    servers = [s for s in spans if s["service"] == "orders" and s["kind"] == SERVER]
    assert servers
    for server in servers:
        client = spans_by_id[server["parent"]]
        assert (client["service"], client["kind"]) == ("storefront", CLIENT)
        assert client["trace_id"] == server["trace_id"]
        assert server["attributes"]["http.route"] == "/orders"
    statuses = Counter(s["attributes"]["http.response.status_code"] for s in servers)
    assert statuses[201] > 0


def test_orders_publish_with_the_current_kafka_conventions(spans):
    spans_by_id = by_id(spans)
    publishes = [s for s in spans if s["service"] == "orders" and s["kind"] == PRODUCER]
    assert publishes
    for span in publishes:
        attributes = span["attributes"]
        assert attributes["messaging.system"] == "kafka"
        assert attributes["messaging.destination.name"] == "shop.orders"
        assert attributes["messaging.operation.type"] == "send"
        assert attributes["messaging.operation.name"] == "send"
        assert attributes["messaging.message.id"]
        assert attributes["messaging.kafka.message.key"].startswith("cus-")
        assert attributes["messaging.destination.partition.id"] in {"0", "1", "2"}
        assert attributes["messaging.message.body.size"] > 20
        assert spans_by_id[span["parent"]]["kind"] == SERVER


def test_single_message_consumers_are_children_of_the_producer(spans):
    spans_by_id = by_id(spans)
    for service in ("payments", "shipping", "analytics"):
        consumed = [s for s in spans if s["service"] == service and s["kind"] == CONSUMER]
        assert consumed, service
        for span in consumed:
            producer = spans_by_id[span["parent"]]
            assert producer["kind"] == PRODUCER and producer["service"] == "orders"
            assert producer["trace_id"] == span["trace_id"]
            assert span["attributes"]["messaging.consumer.group.name"] == service
            assert span["attributes"]["messaging.operation.type"] == "process"
            assert (
                span["attributes"]["messaging.message.id"]
                == producer["attributes"]["messaging.message.id"]
            )
            assert span["start"] >= producer["end"]


def test_email_receives_batches_linking_each_producer_with_legacy_names(spans):
    spans_by_id = by_id(spans)
    receives = [s for s in spans if s["service"] == "email" and s["name"].endswith("receive")]
    assert receives
    assert max(len(s["links"]) for s in receives) >= 3
    for receive in receives:
        attributes = receive["attributes"]
        assert attributes["messaging.operation"] == "receive"
        assert attributes["messaging.destination"] == "shop.orders"
        assert attributes["messaging.kafka.consumer_group"] == "email"
        assert "messaging.destination.name" not in attributes
        assert attributes["messaging.batch.message_count"] == len(receive["links"])
        for trace_id, span_id in receive["links"]:
            assert spans_by_id[span_id]["trace_id"] == trace_id
            assert spans_by_id[span_id]["kind"] == PRODUCER
    processes = [s for s in spans if s["service"] == "email" and s["name"].endswith("process")]
    assert processes
    for process in processes:
        assert process["attributes"]["messaging.operation"] == "process"
        assert spans_by_id[process["parent"]] in receives
        [(trace_id, span_id)] = process["links"]
        assert spans_by_id[span_id]["service"] == "orders"


def test_payments_publish_to_rabbitmq_for_the_ledger(spans):
    spans_by_id = by_id(spans)
    ledger = [s for s in spans if s["service"] == "ledger"]
    assert ledger
    for span in ledger:
        producer = spans_by_id[span["parent"]]
        assert producer["service"] == "payments"
        assert producer["attributes"]["messaging.system"] == "rabbitmq"
        assert producer["attributes"]["messaging.destination.name"] == "payments.captured"
        assert span["attributes"]["messaging.destination.name"] == "payments.captured"
        assert spans_by_id[producer["parent"]]["service"] == "payments"


def test_failures_carry_an_error_type_and_an_exception_event(spans):
    failed = [s for s in spans if s["error"] and s["kind"] == CONSUMER]
    assert failed
    for span in failed:
        assert span["attributes"]["error.type"]
        assert "exception" in span["events"]
    assert {"payments", "email", "shipping"} & {s["service"] for s in failed}


def test_messages_that_keep_failing_are_retried_then_dead_lettered(spans):
    spans_by_id = by_id(spans)
    dead_letters = [s for s in spans if s["name"] == "send shop.orders.dlq"]
    assert dead_letters
    for dead_letter in dead_letters:
        assert dead_letter["kind"] == PRODUCER
        assert dead_letter["attributes"]["messaging.destination.name"] == "shop.orders.dlq"
        last_attempt = spans_by_id[dead_letter["parent"]]
        assert last_attempt["error"] and last_attempt["service"] == "shipping"
        message_id = last_attempt["attributes"]["messaging.message.id"]
        attempts = [
            s
            for s in spans
            if s["service"] == "shipping"
            and s["kind"] == CONSUMER
            and s["attributes"].get("messaging.message.id") == message_id
        ]
        assert len(attempts) == demo.MAX_ATTEMPTS
        retried = [s for s in attempts if s["attributes"].get("eventscope.stage") == "retried"]
        assert len(retried) == demo.MAX_ATTEMPTS - 1


def test_notifications_are_reported_as_cloudevents_on_the_order_trace(shop_run):
    sink, _ = shop_run
    notifications = [e for e in sink.events if e["source"] == "/shop/notifications"]
    assert notifications
    trace_ids = {span["trace_id"] for span in sink.spans}
    stages = Counter(event["esstage"] for event in notifications)
    assert stages["published"] == stages["processed"] > 0
    for event in notifications:
        assert event["specversion"] == "1.0" and event["id"].startswith("ntf-ord-")
        assert event["traceparent"].split("-")[1] in trace_ids


def test_dead_letters_are_archived_as_cloudevents_with_their_payload(shop_run):
    sink, tally = shop_run
    archived = [e for e in sink.events if e["source"] == "/shop/orders"]
    assert len(archived) == tally.archived == tally.dead_lettered > 0
    dead_letters = {
        s["attributes"]["messaging.message.id"]: s
        for s in sink.spans
        if s["name"] == "send shop.orders.dlq"
    }
    for event in archived:
        # The id is the message's: the dead-lettered stage and this payload are one event.
        dead_letter = dead_letters[event["id"]]
        _, trace_id, span_id, _ = event["traceparent"].split("-")
        assert (trace_id, span_id) == (dead_letter["trace_id"], dead_letter["span_id"])
        assert event["esservice"] == "dlq-archive" and event["eschannel"] == "shop.orders.dlq"
        assert event["type"] == "com.example.shop.OrderPlaced"
        assert event["data"]["order"] == event["subject"]
        assert set(event["data"]) == {"order", "customer", "total", "items"}


def test_the_brokers_report_in_the_receivers_shape(shop_run):
    """kafkametrics' names and attributes for shop.orders and its groups,
    rabbitmq's for payments.captured, read by Eventscope's own OTLP reader."""
    from collector.brokers.otlp_metrics import readings_from_request

    sink, _ = shop_run
    assert len(sink.metrics) >= 4  # two receivers, several exports
    names = {
        metric.name
        for request in sink.metrics
        for resource in request.resource_metrics
        for scope in resource.scope_metrics
        for metric in scope.metrics
    }
    assert {
        "kafka.partition.current_offset",
        "kafka.consumer_group.offset",
        "kafka.consumer_group.lag",
        "rabbitmq.message.current",
        "rabbitmq.message.acknowledged",
    } <= names
    readings = []
    for request in sink.metrics:
        found, rejected, reasons = readings_from_request(request)
        assert rejected == 0, reasons
        readings.extend(found)
    kafka = {(r.channel, r.group) for r in readings if r.system == "kafka"}
    assert kafka == {("shop.orders", g) for g in ("payments", "shipping", "analytics", "email")}
    partitions = {r.partition for r in readings if r.system == "kafka"}
    assert partitions == {"0", "1", "2"}
    queues = [r for r in readings if r.system == "rabbitmq"]
    assert queues and {(r.namespace, r.channel) for r in queues} == {("/", "payments.captured")}
    for reading in readings:
        if reading.system == "kafka" and reading.lag is not None:
            assert reading.lag == reading.end_offset - reading.committed_offset >= 0


# ---- the simulation over a longer stretch, without a network ----


def simulate(seconds, seed=3, rate=2.0):
    exporter = InMemorySpanExporter()
    telemetry = demo.Telemetry(lambda: SimpleSpanProcessor(exporter))
    events = []
    start = 1_700_000_000 * demo.S
    shop = demo.Shop(
        telemetry.tracer, start_ns=start, rate=rate, seed=seed, send_events=events.extend
    )
    shop.advance(start + int(seconds * demo.S))
    telemetry.shutdown()
    return shop, exporter.get_finished_spans(), start


def test_the_slow_consumer_falls_behind_and_catches_up():
    shop, spans, start = simulate(240)
    spans_by_id = {span.context.span_id: span for span in spans}
    # analytics' lag: how long each message waited after it was published
    lag = [
        (span.start_time - start, span.start_time - spans_by_id[span.parent.span_id].end_time)
        for span in spans
        if span.resource.attributes["service.name"] == "analytics"
    ]
    slow_end = demo.ANALYTICS_SLOW_S * demo.S
    worst = max(waited for at, waited in lag if at < slow_end)
    assert worst > 30 * demo.S
    # by the end of the fast phase it is back to near-real time
    caught_up = [waited for at, waited in lag if at > demo.ANALYTICS_CYCLE_S * demo.S - 5 * demo.S]
    assert caught_up and min(caught_up) < demo.S


def test_broker_figures_follow_the_orders_and_the_slow_consumer():
    exporter = InMemorySpanExporter()
    telemetry = demo.Telemetry(lambda: SimpleSpanProcessor(exporter))
    start = 1_700_000_000 * demo.S
    shop = demo.Shop(telemetry.tracer, start_ns=start, seed=3, send_events=lambda events: None)
    lag = {}
    for second in range(0, 241, 5):
        now = start + second * demo.S
        shop.advance(now)
        figures = shop.broker_figures(now)
        publishes = [
            s
            for s in exporter.get_finished_spans()
            if s.name == "send shop.orders" and s.resource.attributes["service.name"] == "orders"
        ]
        # Offsets advance with the orders published on the topic.
        assert sum(figures.end_offsets.values()) == len(publishes)
        lag[second] = {
            group: sum(end - offsets.get(p, 0) for p, end in figures.end_offsets.items())
            for group, offsets in figures.committed.items()
        }
        for offsets in figures.committed.values():
            assert all(offsets.get(p, 0) <= end for p, end in figures.end_offsets.items())
        assert figures.queue_ready + figures.queue_unacknowledged == (
            figures.queue_published - figures.queue_acknowledged
        )
    telemetry.shutdown()
    slow_end = int(demo.ANALYTICS_SLOW_S)
    # analytics falls behind through its slow phase, then catches up
    assert lag[slow_end - 5]["analytics"] > 50
    assert lag[slow_end - 5]["analytics"] > lag[30]["analytics"] > lag[10]["analytics"]
    assert lag[int(demo.ANALYTICS_CYCLE_S)]["analytics"] < 5
    # the others keep up
    for group in ("payments", "shipping", "email"):
        assert max(at[group] for at in lag.values()) < 10, group


def test_a_shorter_cycle_shortens_the_slow_phase():
    shop_short = demo.Shop(lambda service: None, start_ns=0, cycle_s=40)
    assert (shop_short.cycle_s, shop_short.slow_s) == (40, 30)
    assert demo.lag_window(demo.ANALYTICS_CYCLE_S) == 30
    assert demo.lag_window(40) == 10
    assert demo.metrics_interval(demo.ANALYTICS_CYCLE_S) == 5
    with pytest.raises(ValueError, match="cycle must be positive"):
        demo.Shop(lambda service: None, start_ns=0, cycle_s=0)


def test_failures_stay_a_few_percent_of_consumed_messages():
    shop, spans, _ = simulate(600)
    consumed = [s for s in spans if s.kind.name == "CONSUMER" and "receive" not in s.name]
    errors = [s for s in consumed if s.status.status_code.name == "ERROR"]
    assert 0.01 < len(errors) / len(consumed) < 0.05
    assert shop.tally.dead_lettered > 0 and shop.tally.retried > 0 and shop.tally.failed > 0


def test_a_seed_replays_the_same_story():
    def story(seed):
        _, spans, start = simulate(30, seed=seed)
        return [
            (
                s.resource.attributes["service.name"],
                s.name,
                s.start_time - start,
                s.status.status_code,
            )
            for s in spans
        ]

    assert story(11) == story(11)
    assert story(11) != story(12)


def test_it_refuses_a_rate_that_is_not_positive():
    with pytest.raises(ValueError, match="rate must be positive"):
        demo.Shop(lambda service: None, start_ns=0, rate=0)


# ---- manage.py demo ----


def test_the_command_runs_for_a_duration_with_a_token():
    with OtlpSink() as sink:
        output = subprocess.run(
            [
                sys.executable,
                "manage.py",
                "demo",
                "--endpoint",
                sink.url,
                "--rate",
                "20",
                "--duration",
                "1.5",
                "--token",
                "es_secret",
                "--seed",
                "1",
            ],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
            env=_env(),
        )
        assert output.returncode == 0, output.stderr
        assert "Demo shop stopped:" in output.stdout
        assert sink.authorizations == {"Bearer es_secret"}
        assert {"storefront", "orders"} <= {span["service"] for span in sink.spans}


def test_the_command_reads_its_token_from_a_file(tmp_path):
    token_file = tmp_path / "demo_token"
    token_file.write_text("es_from_a_file\n")
    with OtlpSink() as sink:
        output = subprocess.run(
            [
                sys.executable, "manage.py", "demo", "--endpoint", sink.url, "--rate", "20",
                "--duration", "1", "--token-file", str(token_file),
            ],
            cwd=ROOT, capture_output=True, text=True, timeout=60, env=_env(),
        )  # fmt: skip
        assert output.returncode == 0, output.stderr
        assert sink.authorizations == {"Bearer es_from_a_file"}
    missing = subprocess.run(
        [sys.executable, "manage.py", "demo", "--token-file", str(tmp_path / "none")],
        cwd=ROOT, capture_output=True, text=True, timeout=60, env=_env(),
    )  # fmt: skip
    assert missing.returncode != 0 and "--token-file" in missing.stderr


def test_the_command_stops_cleanly_on_sigterm():
    with OtlpSink() as sink:
        process = subprocess.Popen(
            [sys.executable, "manage.py", "demo", "--endpoint", sink.url, "--rate", "20"],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=_env(),
        )
        try:
            assert process.stdout.readline().startswith("Demo shop:")
            time.sleep(1)
            process.send_signal(signal.SIGTERM)
            stdout, stderr = process.communicate(timeout=30)
        finally:
            if process.poll() is None:
                process.kill()
        assert process.returncode == 0, stderr
        assert "Demo shop stopped:" in stdout
        assert sink.spans


@pytest.mark.parametrize(
    "arguments, problem",
    [
        (["--rate", "0"], "--rate must be a positive"),
        (["--duration", "-1"], "--duration must be a positive"),
        (["--cycle-seconds", "0"], "--cycle-seconds must be positive"),
        (["--endpoint", "collector:4318"], r"--endpoint must be an http\(s\) URL"),
    ],
)
def test_the_command_explains_bad_arguments(arguments, problem):
    with pytest.raises(CommandError, match=problem):
        call_command("demo", *arguments)


def _env():
    env = dict(os.environ)
    env["DJANGO_SETTINGS_MODULE"] = "dashboard.settings"
    return env


# ---- end to end, through the real receivers and writer ----


async def test_the_demo_through_the_collector_fills_the_flow_graph(
    project, ingest_token, telemetry_db
):
    from asgiref.sync import sync_to_async
    from django.db import connection

    from tests.collector.receiver_harness import http_receiver, running_writer

    def everyone_consumed() -> bool:
        try:
            with connection.cursor() as cursor:
                cursor.execute(
                    "SELECT count(DISTINCT consumer_group) FROM collector_flowrollup"
                    " WHERE project_id = %s AND kind = 'consume' AND e2e_count > 0"
                    " AND consumer_group IN ('payments', 'shipping', 'analytics')",
                    [project.pk],
                )
                consumers = cursor.fetchone()[0]
                cursor.execute(
                    "SELECT coalesce(sum(deadlettered), 0) FROM collector_flowrollup"
                    " WHERE project_id = %s",
                    [project.pk],
                )
                return consumers == 3 and cursor.fetchone()[0] > 0
        finally:
            connection.close()

    stop = threading.Event()
    async with running_writer() as writer, http_receiver(writer) as url:
        headers = {"authorization": f"Bearer {ingest_token}"}
        running = asyncio.create_task(
            asyncio.to_thread(demo.run, url, stop, headers, rate=25, seed=7)
        )
        # At least 3 s, then until every consumer shows (the slow analytics
        # consumer may need longer on a loaded machine), at most 30 s.
        await asyncio.sleep(3)
        deadline = time.monotonic() + 27
        while time.monotonic() < deadline and not await sync_to_async(everyone_consumed)():
            await asyncio.sleep(0.5)
        stop.set()
        tally = await running

    def stored():
        try:
            with connection.cursor() as cursor:
                cursor.execute(
                    "SELECT source, target, kind, consumer_group, sum(count), sum(received),"
                    " sum(errors), sum(deadlettered), sum(retries), sum(e2e_count)"
                    " FROM collector_flowrollup WHERE project_id = %s"
                    " GROUP BY 1, 2, 3, 4",
                    [project.pk],
                )
                edges = {row[:4]: row[4:] for row in cursor.fetchall()}
                cursor.execute(
                    "SELECT service, stage, channel, consumer_group, count(*)"
                    " FROM collector_stage WHERE project_id = %s GROUP BY 1, 2, 3, 4",
                    [project.pk],
                )
                stages = {row[:4]: row[4] for row in cursor.fetchall()}
                cursor.execute(
                    "SELECT count(*) FROM collector_envelope WHERE project_id = %s"
                    " AND source = '/shop/notifications'",
                    [project.pk],
                )
                return edges, stages, cursor.fetchone()[0]
        finally:
            connection.close()

    edges, stages, envelopes = await sync_to_async(stored)()

    def edge(source, target, kind, group=""):
        assert (source, target, kind, group) in edges, sorted(edges)
        return edges[(source, target, kind, group)]

    orders_topic = "channel:kafka:shop.orders"
    assert edge("service:storefront", "service:orders", "call")[0] > 0
    assert (
        edge("service:orders", orders_topic, "publish")[0]
        == stages[("orders", "published", "shop.orders", "")]
    )
    for group in ("payments", "shipping", "analytics"):
        count, _, _, _, _, e2e_count = edge(orders_topic, f"service:{group}", "consume", group)
        assert count > 0 and e2e_count > 0, group
    # email: legacy attribute names, batch receives
    count, received, errors, *_ = edge(orders_topic, "service:email", "consume", "email")
    assert count > 0 and received > 0
    captured = "channel:rabbitmq:payments.captured"
    assert edge("service:payments", captured, "publish")[0] > 0
    assert edge(captured, "service:ledger", "consume")[0] > 0
    # retries and dead letters on shipping, failures on email
    _, _, errors, deadlettered, retries, _ = edge(
        orders_topic, "service:shipping", "consume", "shipping"
    )
    assert deadlettered == tally.dead_lettered > 0
    assert retries >= 2 * deadlettered and errors >= deadlettered
    assert stages[("shipping", "deadlettered", "shop.orders", "shipping")] == tally.dead_lettered
    assert stages[("shipping", "published", "shop.orders.dlq", "")] == tally.dead_lettered
    # Each notification is reported twice (published, then processed) and
    # keeps one envelope however many stages report it.
    assert 2 * envelopes + tally.archived == tally.cloudevents > 0


def test_an_overloaded_shop_keeps_a_bounded_backlog(monkeypatch):
    # The simulation reads the horizon where it lives, in dashboard.demo.shop.
    monkeypatch.setattr(demo.shop, "MAX_BACKLOG_S", 20.0)
    shop, _, start = simulate(90, rate=40)
    now = start + 90 * demo.S
    horizon = int(demo.shop.MAX_BACKLOG_S * demo.S)
    assert shop.email_inbox
    assert all(m.published_ns >= now - horizon - 2 * demo.S for m in shop.email_inbox)
    for consumer in (shop.payments, shop.shipping, shop.analytics):
        # nothing is planned further ahead than the longest allowed wait plus one message
        assert consumer.busy_until_ns - now < horizon + 10 * demo.S, consumer.service


def test_it_stops_promptly_when_the_collector_is_gone():
    with OtlpSink() as sink:
        url = sink.url
    # nothing listens there any more: every export fails and is retried
    stop = threading.Event()
    threading.Timer(1.0, stop.set).start()
    started = time.monotonic()
    tally = demo.run(url, stop, rate=20, seed=5)
    assert tally.orders > 0
    assert time.monotonic() - started < 1.0 + demo.EXPORT_TIMEOUT_S + 2


def test_the_demo_talks_to_eventscope_only_over_its_public_endpoints():
    import ast

    paths = [
        *sorted((ROOT / "dashboard/demo").glob("*.py")),
        ROOT / "dashboard/management/commands/demo.py",
    ]
    assert len(paths) > 2
    for path in paths:
        tree = ast.parse(path.read_text())
        imported = {
            name
            for node in ast.walk(tree)
            if isinstance(node, ast.Import | ast.ImportFrom)
            for name in (
                [node.module or ""]
                if isinstance(node, ast.ImportFrom)
                else [a.name for a in node.names]
            )
        }
        assert not {
            m for m in imported if m.split(".")[0] == "collector" or m.startswith("django.db")
        }, path
