"""OTLP broker metrics: kafkametrics and rabbitmq receiver payloads become lag."""

import asyncio
import json
import time
from pathlib import Path

import pytest
from asgiref.sync import async_to_sync
from google.protobuf import json_format
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
)

from collector.batch import StorageUnavailable
from collector.brokers import lag
from collector.brokers.otlp_metrics import ingest_metrics, readings_from_request

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "brokers"


def kafkametrics() -> ExportMetricsServiceRequest:
    return json_format.Parse(
        (FIXTURES / "kafkametrics.json").read_text(), ExportMetricsServiceRequest()
    )


def _gauge(name, points, resource=None):
    return {
        "resourceMetrics": [
            {
                "resource": {"attributes": resource or []},
                "scopeMetrics": [{"metrics": [{"name": name, "gauge": {"dataPoints": points}}]}],
            }
        ]
    }


def _attr(key, value):
    kind = "intValue" if isinstance(value, int) else "stringValue"
    return {"key": key, "value": {kind: str(value)}}


def test_kafkametrics_gives_lag_per_partition_and_minus_one_is_unknown():
    readings, rejected, _ = readings_from_request(kafkametrics())
    assert rejected == 0
    by_key = {(r.group, r.partition): r for r in readings}
    assert set(by_key) == {("billing", "0"), ("billing", "1"), ("billing", "2"), ("shipping", "0")}
    assert (by_key["billing", "0"].end_offset, by_key["billing", "0"].committed_offset) == (
        1500,
        1200,
    )
    assert by_key["billing", "0"].lag == 300
    assert by_key["billing", "1"].lag == 0
    # -1: no committed offset yet; unknown, never a negative lag
    assert by_key["billing", "2"].lag is None
    assert by_key["billing", "2"].committed_offset is None
    assert all(r.system == "kafka" and r.channel == "orders" for r in readings)


def test_it_rejects_points_it_cannot_place_and_keeps_the_good_ones():
    request = json_format.ParseDict(
        _gauge(
            "kafka.consumer_group.lag",
            [
                {
                    "attributes": [_attr("group", "g"), _attr("topic", "t"), _attr("partition", 0)],
                    "asInt": "5",
                },
                {"attributes": [_attr("topic", "t"), _attr("partition", 1)], "asInt": "7"},
                {
                    "attributes": [
                        _attr("group", "g"),
                        _attr("topic", "t"),
                        _attr("partition", "zero"),
                    ],
                    "asInt": "7",
                },
            ],
        ),
        ExportMetricsServiceRequest(),
    )
    readings, rejected, reasons = readings_from_request(request)
    assert rejected == 2
    assert [(r.group, r.partition) for r in readings] == [("g", "0")]
    assert "without attribute 'group'" in " ".join(reasons)


def test_other_metrics_are_ignored_not_rejected():
    request = json_format.ParseDict(
        _gauge("process.cpu.utilization", [{"asDouble": 0.5}]), ExportMetricsServiceRequest()
    )
    assert readings_from_request(request)[:2] == ([], 0)


def test_rabbitmq_receiver_metrics_give_queue_depth():
    resource = [_attr("rabbitmq.queue.name", "payments"), _attr("rabbitmq.vhost.name", "shop")]
    payload = _gauge(
        "rabbitmq.message.current",
        [
            {"attributes": [_attr("state", "ready")], "asInt": "120"},
            {"attributes": [_attr("state", "unacknowledged")], "asInt": "30"},
        ],
        resource,
    )
    metrics = payload["resourceMetrics"][0]["scopeMetrics"][0]["metrics"]
    metrics.append(
        {
            "name": "rabbitmq.message.acknowledged",
            "sum": {
                "aggregationTemporality": 2,
                "isMonotonic": True,
                "dataPoints": [{"asInt": "4000"}],
            },
        }
    )
    metrics.append({"name": "rabbitmq.consumer.count", "sum": {"dataPoints": [{"asInt": "2"}]}})
    readings, rejected, _ = readings_from_request(
        json_format.ParseDict(payload, ExportMetricsServiceRequest())
    )
    assert rejected == 0
    (reading,) = readings
    assert (reading.system, reading.namespace, reading.channel) == ("rabbitmq", "shop", "payments")
    assert reading.group == ""
    assert reading.lag == 150
    assert (reading.committed_offset, reading.end_offset) == (4000, 4150)
    assert reading.active_at is not None and reading.depth_based


@pytest.mark.django_db(transaction=True)
def test_ingest_stores_and_current_reports_the_groups(project):
    rejected, message = async_to_sync(ingest_metrics)(project.id, kafkametrics())
    assert (rejected, message) == (0, "")
    items = lag.current(project.id)
    billing = next(i for i in items if i["group"] == "billing")
    assert billing["lag"] == 300
    assert billing["system"] == "kafka" and billing["channel"] == "orders"
    assert [p["lag"] for p in billing["partitions"]] == [300, 0, None]
    assert billing["status"] == "ok"
    assert billing["updated_at"].endswith("Z")
    json.dumps(items)  # the API serialises this as it is


@pytest.mark.django_db(transaction=True)
async def test_it_answers_storage_unavailable_when_the_database_is_down(project):
    from django.db import connections

    # Port 1 on loopback refuses at once: a database that is down.
    settings_dict = connections["default"].settings_dict
    original = settings_dict["PORT"]
    settings_dict["PORT"] = "1"
    try:
        with pytest.raises(StorageUnavailable):
            await ingest_metrics(project.id, kafkametrics())
    finally:
        settings_dict["PORT"] = original


def _fresh_kafkametrics(lag_value: int, age: float = 0.0) -> ExportMetricsServiceRequest:
    """The fixture with its data points moved to `age` seconds ago and one lag changed."""
    request = kafkametrics()
    now_ns = time.time_ns() - int(age * 1e9)
    for resource_metrics in request.resource_metrics:
        for scope_metrics in resource_metrics.scope_metrics:
            for metric in scope_metrics.metrics:
                for point in getattr(metric, metric.WhichOneof("data")).data_points:
                    point.time_unix_nano = now_ns
                    if metric.name == "kafka.consumer_group.lag" and point.as_int == 300:
                        point.as_int = lag_value
    return request


async def test_post_v1_metrics_stores_lag_and_a_retry_is_stored_once(lag_db, project, ingest_token):
    import httpx

    from tests.brokers.conftest import read_current
    from tests.collector.receiver_harness import http_receiver, running_writer

    request = _fresh_kafkametrics(300)
    bad = request.resource_metrics[0].scope_metrics[0].metrics.add()
    bad.name = "kafka.consumer_group.lag"
    point = bad.gauge.data_points.add()
    point.as_int = 4  # no group, topic or partition: rejected, the rest kept
    body = request.SerializeToString()
    headers = {
        "Content-Type": "application/x-protobuf",
        "Authorization": f"Bearer {ingest_token}",
    }
    async with running_writer() as writer, http_receiver(writer) as url:
        async with httpx.AsyncClient() as client:
            for _ in range(2):  # the exporter retried
                response = await client.post(f"{url}/v1/metrics", content=body, headers=headers)
                assert response.status_code == 200
    answer = ExportMetricsServiceResponse.FromString(response.content)
    assert answer.partial_success.rejected_data_points == 1
    assert "without attribute 'group'" in answer.partial_success.error_message
    items = await asyncio.to_thread(read_current, project.id)
    assert next(i for i in items if i["group"] == "billing")["lag"] == 300

    def sample_count():
        import psycopg

        from collector.db import conninfo

        with psycopg.connect(conninfo()) as conn:
            return conn.execute("SELECT count(*) FROM brokers_lagsample").fetchone()[0]

    assert await asyncio.to_thread(sample_count) == 4  # 3 billing partitions + shipping


async def test_a_late_export_does_not_rewrite_the_present(lag_db, project):
    from tests.brokers.conftest import group_item

    await ingest_metrics(project.id, _fresh_kafkametrics(300))
    before = await asyncio.to_thread(group_item, project.id, "kafka", "orders", "billing")
    # An export collected a minute ago arrives late (a retry, another collector).
    await ingest_metrics(project.id, _fresh_kafkametrics(999, age=60))
    after = await asyncio.to_thread(group_item, project.id, "kafka", "orders", "billing")
    assert after["lag"] == 300
    assert after["updated_at"] == before["updated_at"]
    assert [p["lag"] for p in after["partitions"]] == [300, 0, None]
