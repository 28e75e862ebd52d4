"""Lag from every kind of system in one run: SQS and Kinesis (moto's server),
Service Bus, Pub/Sub and Pulsar (local servers answering their documented
shapes) polled together, then read back the way users read it: /api/lag,
the lag page, a group's page and an alert rule."""

import asyncio
import json

from collector.brokers.poller import parse_broker, poll_broker
from dashboard.alerts.evaluate import evaluate_rule
from dashboard.alerts.models import Alert, AlertRule
from tests.brokers.conftest import cloud_fixture
from tests.brokers.test_aws import kcl_lease_table
from tests.brokers.test_cloud_readers import (
    SAS_KEY,
    pubsub_routes,
    pulsar_routes,
    sas_checked,
    servicebus_url,
)

WINDOW = 600


def aws_world(aws) -> None:
    """orders (7 waiting) and a KCL application 4 records behind on clicks."""
    sqs = aws.client("sqs")
    url = sqs.create_queue(QueueName="orders")["QueueUrl"]
    for n in range(7):
        sqs.send_message(QueueUrl=url, MessageBody=json.dumps({"order": n}))
    kinesis = aws.client("kinesis")
    kinesis.create_stream(StreamName="clicks", ShardCount=1)
    puts = [kinesis.put_record(StreamName="clicks", Data=b"c", PartitionKey="k") for _ in range(10)]
    kcl_lease_table(aws, "sessions", {puts[0]["ShardId"]: puts[5]["SequenceNumber"]})


def read(client, viewer, path: str):
    from django.db import connections

    try:
        client.force_login(viewer)
        return client.get(path)
    finally:
        connections.close_all()


async def test_lag_of_every_system_in_one_run(
    lag_db,
    project,
    aws,
    documented_api,
    service_account,
    client,
    viewer,  # noqa: F811
):
    await asyncio.to_thread(aws_world, aws)
    pulsar_routes(documented_api)
    pubsub_routes(documented_api)
    for path, name in (
        ("/$Resources/queues", "queues.xml"),
        ("/$Resources/topics", "topics.xml"),
        ("/orders/Subscriptions", "subscriptions-orders.xml"),
    ):
        documented_api.routes[path] = sas_checked(
            cloud_fixture("servicebus", name), "shop.servicebus.windows.net"
        )
    host = documented_api.url.removeprefix("http://")
    urls = [
        f"sqs://eu-west-1?endpoint_url={aws.endpoint_url}",
        f"kinesis://eu-west-1?endpoint_url={aws.endpoint_url}",
        servicebus_url(documented_api),
        f"pubsub://shop-prod?endpoint_url={documented_api.url}",
        f"pulsar+http://:s3cret@{host}",
    ]
    brokers = [parse_broker(url) for url in urls]
    assert all(await asyncio.gather(*(poll_broker(b, project.id, window=WINDOW) for b in brokers)))

    response = await asyncio.to_thread(read, client, viewer, "/api/lag?limit=500")
    assert response.status_code == 200
    items = {(i["system"], i["channel"], i["group"]): i for i in response.json()["items"]}
    assert items[("aws_sqs", "orders", "")]["lag"] == 7
    assert items[("aws_kinesis", "clicks", "sessions")]["lag"] == 4
    assert items[("servicebus", "payments", "")]["lag"] == 42
    assert items[("servicebus", "orders", "billing")]["namespace"] == "shop"
    assert items[("gcp_pubsub", "orders", "billing")]["lag"] == 240
    assert items[("pulsar", "orders", "billing")]["lag"] == 150
    assert {i["system"] for i in items.values()} == {
        "aws_sqs", "aws_kinesis", "servicebus", "gcp_pubsub", "pulsar",
    }  # fmt: skip
    filtered = await asyncio.to_thread(read, client, viewer, "/api/lag?namespace=public/default")
    assert {i["system"] for i in filtered.json()["items"]} == {"pulsar"}

    page = (await asyncio.to_thread(read, client, viewer, "/lag/")).content.decode()
    for name in ("aws_sqs", "aws_kinesis", "servicebus", "gcp_pubsub", "pulsar", "sessions"):
        assert name in page
    detail = await asyncio.to_thread(
        read, client, viewer, "/lag/pulsar/orders/billing/?namespace=public/default"
    )
    assert detail.status_code == 200 and "billing" in detail.content.decode()

    def alert_on_sqs():
        from django.db import connections

        try:
            rule = AlertRule.objects.create(
                project=project,
                name="orders backlog",
                kind="lag",
                params={"threshold": 5, "system": "aws_sqs", "channel": "", "group": ""},
                for_seconds=0,
            )
            evaluate_rule(rule.pk)
            return list(Alert.objects.filter(rule=rule).values_list("state", "labels"))
        finally:
            connections.close_all()

    (alert,) = await asyncio.to_thread(alert_on_sqs)
    assert alert[0] == "firing"
    assert (alert[1]["system"], alert[1]["channel"]) == ("aws_sqs", "orders")
    assert SAS_KEY not in json.dumps(response.json())
