"""Amazon's services read by the pollers, against moto's server (a real HTTP
endpoint): queues with known depths and a redrive policy, an SNS fan-out,
an EventBridge rule, a Kinesis consumer behind by a known number of records
and Lambda event source mappings."""

import datetime as dt
import json

import pytest

from collector.brokers.poller import parse_broker, poll_broker
from tests.brokers.conftest import group_item

WINDOW = 600


def broker(aws, scheme: str):
    return parse_broker(f"{scheme}://eu-west-1?endpoint_url={aws.endpoint_url}")


async def poll(aws, project, scheme: str):
    assert await poll_broker(broker(aws, scheme), project.id, window=WINDOW)


def flow(client, viewer) -> dict:
    from django.db import connections

    try:
        client.force_login(viewer)
        response = client.get("/api/flow?window=1h")
        assert response.status_code == 200
        return response.json()
    finally:
        connections.close_all()  # this thread's connection, not left open


def declared_edges(graph: dict) -> set[tuple]:
    return {
        (e["source"], e["target"], e["kind"], e["group"])
        for e in graph["edges"]
        if e["declared"] is not None
    }


# ---- SQS ----------------------------------------------------------------------------------


@pytest.fixture
def shop_queues(aws):
    """orders (dead-letters into orders-dlq after 2 receives) and orders-dlq."""
    sqs = aws.client("sqs")
    dlq_url = sqs.create_queue(QueueName="orders-dlq")["QueueUrl"]
    dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    url = sqs.create_queue(
        QueueName="orders",
        Attributes={
            "RedrivePolicy": json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": "2"})
        },
    )["QueueUrl"]
    return sqs, url, dlq_url


async def test_sqs_queue_depth_in_flight_delayed_and_its_dead_letter_queue(
    lag_db, project, aws, shop_queues, client, viewer
):
    sqs, url, dlq_url = shop_queues
    for n in range(7):
        sqs.send_message(QueueUrl=url, MessageBody=f"order {n}")
    sqs.send_message(QueueUrl=url, MessageBody="later", DelaySeconds=600)
    # A consumer holds 3 messages (in flight, not deleted).
    held = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=3, VisibilityTimeout=600)
    assert len(held["Messages"]) == 3
    # A poison message is received twice without being deleted: on the next
    # receive SQS moves it to the dead-letter queue.
    poison_queue = sqs.create_queue(QueueName="poison-src")["QueueUrl"]
    del poison_queue  # an unrelated queue: it must show with depth 0 and no link
    sqs.send_message(QueueUrl=dlq_url, MessageBody="dead 1")
    sqs.send_message(QueueUrl=dlq_url, MessageBody="dead 2")

    await poll(aws, project, "sqs")

    orders = group_item(project.id, "aws_sqs", "orders")
    assert orders["lag"] == 7  # 4 waiting + 3 in flight; the delayed one is apart
    (queue,) = orders["partitions"]
    assert (queue["visible"], queue["in_flight"], queue["delayed"]) == (4, 3, 1)
    assert queue["dead_letter_queue"] == "orders-dlq"
    assert queue["max_receive_count"] == 2
    assert queue["dead_letter_depth"] == 2
    dead = group_item(project.id, "aws_sqs", "orders-dlq")
    assert dead["lag"] == 2
    assert dead["partitions"][0]["dead_letter_for"] == ["orders"]
    assert group_item(project.id, "aws_sqs", "poison-src")["lag"] == 0

    graph = await _flow(client, viewer)
    edge = _edge(graph, "channel:aws_sqs:orders", "channel:aws_sqs:orders-dlq", "dead_letter")
    assert edge["declared"] == {"max_receive_count": 2}
    assert edge["count"] == 0
    node = next(n for n in graph["nodes"] if n["id"] == "channel:aws_sqs:orders-dlq")
    assert (node["system"], node["label"]) == ("aws_sqs", "orders-dlq")


async def test_sqs_dead_lettering_by_receive_count_shows_in_the_figures(
    lag_db, project, aws, shop_queues
):
    sqs, url, dlq_url = shop_queues
    sqs.send_message(QueueUrl=url, MessageBody="poison")
    for _ in range(2):  # received and given up on twice: maxReceiveCount is 2
        got = sqs.receive_message(QueueUrl=url, VisibilityTimeout=0)
        assert len(got["Messages"]) == 1
    sqs.receive_message(QueueUrl=url, VisibilityTimeout=0)  # the third moves it
    await poll(aws, project, "sqs")
    assert group_item(project.id, "aws_sqs", "orders")["lag"] == 0
    assert group_item(project.id, "aws_sqs", "orders-dlq")["lag"] == 1
    assert group_item(project.id, "aws_sqs", "orders")["partitions"][0]["dead_letter_depth"] == 1


async def test_sqs_age_of_the_oldest_message_from_cloudwatch_is_an_exact_time_lag(
    lag_db, project, aws, shop_queues
):
    sqs, url, _ = shop_queues
    sqs.send_message(QueueUrl=url, MessageBody="waiting")
    aws.client("cloudwatch").put_metric_data(
        Namespace="AWS/SQS",
        MetricData=[
            {
                "MetricName": "ApproximateAgeOfOldestMessage",
                "Dimensions": [{"Name": "QueueName", "Value": "orders"}],
                "Timestamp": dt.datetime.now(dt.UTC) - dt.timedelta(seconds=30),
                "Value": 95.0,
                "Unit": "Seconds",
            }
        ],
    )
    await poll(aws, project, "sqs")
    orders = group_item(project.id, "aws_sqs", "orders")
    assert orders["lag_seconds_method"] == "exact"
    assert 95 <= orders["lag_seconds"] < 105
    # The empty dead-letter queue has no age, whatever CloudWatch last said.
    assert group_item(project.id, "aws_sqs", "orders-dlq")["lag_seconds"] == 0


async def test_a_deleted_queue_and_its_link_go_with_the_next_poll(
    lag_db, project, aws, shop_queues, client, viewer
):
    sqs, url, _ = shop_queues
    await poll(aws, project, "sqs")
    assert group_item(project.id, "aws_sqs", "orders") is not None
    sqs.delete_queue(QueueUrl=url)
    await poll(aws, project, "sqs")
    assert group_item(project.id, "aws_sqs", "orders") is None
    assert group_item(project.id, "aws_sqs", "orders-dlq") is not None
    assert not declared_edges(await _flow(client, viewer))


async def _flow(client, viewer) -> dict:
    import asyncio

    return await asyncio.to_thread(flow, client, viewer)


def _edge(graph, source, target, kind, group=""):
    for edge in graph["edges"]:
        if (edge["source"], edge["target"], edge["kind"], edge["group"]) == (
            source,
            target,
            kind,
            group,
        ):
            return edge
    raise AssertionError(f"no {kind} edge {source} → {target} [{group}] in {graph['edges']}")


# ---- SNS and EventBridge ------------------------------------------------------------------


async def test_sns_fan_out_to_queues_functions_and_endpoints_are_edges(
    lag_db, project, aws, shop_queues, client, viewer
):
    sqs, url, dlq_url = shop_queues
    sns = aws.client("sns")
    topic = sns.create_topic(Name="order-placed")["TopicArn"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    sns.subscribe(
        TopicArn=topic,
        Protocol="sqs",
        Endpoint=arn,
        Attributes={"RawMessageDelivery": "true", "FilterPolicy": '{"country": ["fr"]}'},
    )
    function = "arn:aws:lambda:eu-west-1:123456789012:function:send-receipt"
    subscription = sns.subscribe(TopicArn=topic, Protocol="lambda", Endpoint=function)
    sns.set_subscription_attributes(
        SubscriptionArn=subscription["SubscriptionArn"],
        AttributeName="RedrivePolicy",
        AttributeValue=json.dumps({"deadLetterTargetArn": dlq_arn}),
    )
    sns.subscribe(TopicArn=topic, Protocol="https", Endpoint="https://crm.example.com/hooks/sns")
    sns.create_topic(Name="unsubscribed")

    await poll(aws, project, "sns")
    graph = await _flow(client, viewer)
    topic_node = "channel:aws_sns:order-placed"
    assert declared_edges(graph) == {
        (topic_node, "channel:aws_sqs:orders", "publish", ""),
        (topic_node, "service:send-receipt", "consume", ""),
        (topic_node, "service:crm.example.com", "consume", ""),
        (topic_node, "channel:aws_sqs:orders-dlq", "dead_letter", ""),
    }
    to_queue = _edge(graph, topic_node, "channel:aws_sqs:orders", "publish")
    assert to_queue["declared"] == {
        "protocol": "sqs",
        "filter_policy": '{"country": ["fr"]}',
        "raw_delivery": True,
    }
    to_function = _edge(graph, topic_node, "service:send-receipt", "consume")
    assert to_function["declared"]["dead_letter_queue"] == "orders-dlq"
    # The queue's own figures come from the SQS poller; both sources agree on nodes.
    await poll(aws, project, "sqs")
    graph = await _flow(client, viewer)
    assert len(declared_edges(graph)) == 5  # the queue's dead-letter route joined
    assert [n["id"] for n in graph["nodes"]].count("channel:aws_sqs:orders") == 1


async def test_eventbridge_rule_targets_and_dead_letter_queue_are_edges(
    lag_db, project, aws, shop_queues, client, viewer
):
    sqs, url, dlq_url = shop_queues
    events = aws.client("events")
    events.create_event_bus(Name="shop")
    pattern = json.dumps({"source": ["shop.orders"], "detail-type": ["OrderPlaced"]})
    events.put_rule(Name="orders-to-billing", EventBusName="shop", EventPattern=pattern)
    queue_arn, dlq_arn = (
        sqs.get_queue_attributes(QueueUrl=u, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        for u in (url, dlq_url)
    )
    events.put_targets(
        Rule="orders-to-billing",
        EventBusName="shop",
        Targets=[
            {
                "Id": "billing-queue",
                "Arn": queue_arn,
                "DeadLetterConfig": {"Arn": dlq_arn},
                "RetryPolicy": {"MaximumRetryAttempts": 4, "MaximumEventAgeInSeconds": 600},
            },
            {
                "Id": "audit",
                "Arn": "arn:aws:lambda:eu-west-1:123456789012:function:audit-trail",
            },
        ],
    )
    events.put_rule(Name="nightly", ScheduleExpression="rate(1 day)", State="DISABLED")
    aws.client("cloudwatch").put_metric_data(
        Namespace="AWS/Events",
        MetricData=[
            {
                "MetricName": "FailedInvocations",
                "Dimensions": [
                    {"Name": "RuleName", "Value": "orders-to-billing"},
                    {"Name": "EventBusName", "Value": "shop"},
                ],
                "Value": 3.0,
            }
        ],
    )

    await poll(aws, project, "eventbridge")
    graph = await _flow(client, viewer)
    bus = "channel:aws_eventbridge:shop"
    group = "orders-to-billing"
    assert declared_edges(graph) == {
        (bus, "channel:aws_sqs:orders", "publish", group),
        (bus, "service:audit-trail", "consume", group),
        (bus, "channel:aws_sqs:orders-dlq", "dead_letter", group),
    }
    target = _edge(graph, bus, "channel:aws_sqs:orders", "publish", group)["declared"]
    assert target["event_pattern"] == pattern
    assert target["retry_policy"] == {"MaximumRetryAttempts": 4, "MaximumEventAgeInSeconds": 600}
    assert target["FailedInvocations"] == 3.0
    assert target["state"] == "ENABLED"


# ---- Kinesis ------------------------------------------------------------------------------


def kcl_lease_table(aws, name: str, leases: dict[str, str]) -> None:
    """A lease table as the Kinesis Client Library keeps it: one item per shard."""
    dynamodb = aws.client("dynamodb")
    dynamodb.create_table(
        TableName=name,
        KeySchema=[{"AttributeName": "leaseKey", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "leaseKey", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    for shard, checkpoint in leases.items():
        dynamodb.put_item(
            TableName=name,
            Item={
                "leaseKey": {"S": shard},
                "checkpoint": {"S": checkpoint},
                "checkpointSubSequenceNumber": {"N": "0"},
                "leaseCounter": {"N": "42"},
                "leaseOwner": {"S": "worker-1"},
            },
        )


async def test_kinesis_consumer_behind_by_known_records_shows_that_lag(lag_db, project, aws):
    kinesis = aws.client("kinesis")
    kinesis.create_stream(StreamName="clicks", ShardCount=2)
    shards = [s["ShardId"] for s in kinesis.list_shards(StreamName="clicks")["Shards"]]
    sequence = {shard: [] for shard in shards}
    for n in range(40):
        put = kinesis.put_record(
            StreamName="clicks",
            Data=f"click {n}".encode(),
            PartitionKey=str(n),
            ExplicitHashKey="0" if n < 30 else str(2**127 + 1),  # 30 on the first shard
        )
        sequence[put["ShardId"]].append(put["SequenceNumber"])
    first, second = shards
    assert (len(sequence[first]), len(sequence[second])) == (30, 10)
    # "sessions" processed 12 of the first shard's records and all of the second's.
    kcl_lease_table(aws, "sessions", {first: sequence[first][11], second: sequence[second][-1]})
    # "archive" has not started on the first shard.
    kcl_lease_table(aws, "archive", {first: "TRIM_HORIZON", second: "SHARD_END"})
    aws.client("dynamodb").create_table(  # not a lease table
        TableName="orders",
        KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )

    await poll(aws, project, "kinesis")
    sessions = group_item(project.id, "aws_kinesis", "clicks", "sessions")
    assert sessions["lag"] == 18
    assert [(p["partition"], p["lag"]) for p in sessions["partitions"]] == [
        (first, 18),
        (second, 0),
    ]
    assert sessions["lag_seconds_method"] == "exact"
    assert 0 <= sessions["lag_seconds"] < 60
    archive = group_item(project.id, "aws_kinesis", "clicks", "archive")
    assert [(p["partition"], p["lag"]) for p in archive["partitions"]] == [(first, 30)]
    assert group_item(project.id, "aws_kinesis", "orders", "") is None


async def test_kinesis_lease_table_is_tied_to_its_stream_by_the_url(lag_db, project, aws):
    kinesis = aws.client("kinesis")
    for name in ("clicks", "views"):
        kinesis.create_stream(StreamName=name, ShardCount=1)
    for n in range(5):
        kinesis.put_record(StreamName="views", Data=b"v", PartitionKey=str(n))
    (shard,) = [s["ShardId"] for s in kinesis.list_shards(StreamName="views")["Shards"]]
    kcl_lease_table(aws, "view-counter", {shard: "TRIM_HORIZON"})
    # Two streams: without the URL saying which, the table cannot be placed.
    await poll(aws, project, "kinesis")
    assert group_item(project.id, "aws_kinesis", "views", "view-counter") is None
    url = f"kinesis://eu-west-1?endpoint_url={aws.endpoint_url}&kcl=view-counter@views"
    assert await poll_broker(parse_broker(url), project.id, window=WINDOW)
    assert group_item(project.id, "aws_kinesis", "views", "view-counter")["lag"] == 5


# ---- Lambda -------------------------------------------------------------------------------


def lambda_function(aws, name: str) -> str:
    import io
    import zipfile

    role = aws.client("iam").create_role(
        RoleName=f"{name}-role",
        AssumeRolePolicyDocument=json.dumps({"Version": "2012-10-17", "Statement": []}),
    )["Role"]["Arn"]
    code = io.BytesIO()
    with zipfile.ZipFile(code, "w") as archive:
        archive.writestr("handler.py", "def handle(event, context):\n    return None\n")
    return aws.client("lambda").create_function(
        FunctionName=name,
        Runtime="python3.12",
        Role=role,
        Handler="handler.handle",
        Code={"ZipFile": code.getvalue()},
    )["FunctionArn"]


async def test_lambda_event_source_mappings_are_consume_edges_with_their_lag(
    lag_db, project, aws, shop_queues, client, viewer
):
    sqs, url, dlq_url = shop_queues
    queue_arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    kinesis = aws.client("kinesis")
    kinesis.create_stream(StreamName="clicks", ShardCount=1)
    stream_arn = kinesis.describe_stream_summary(StreamName="clicks")["StreamDescriptionSummary"][
        "StreamARN"
    ]
    topic_arn = aws.client("sns").create_topic(Name="click-failures")["TopicArn"]
    functions = aws.client("lambda")
    functions.create_event_source_mapping(
        EventSourceArn=queue_arn, FunctionName=lambda_function(aws, "charge-card"), BatchSize=5
    )
    functions.create_event_source_mapping(
        EventSourceArn=stream_arn,
        FunctionName=lambda_function(aws, "count-clicks"),
        BatchSize=100,
        StartingPosition="TRIM_HORIZON",
        DestinationConfig={"OnFailure": {"Destination": topic_arn}},
    )
    aws.client("cloudwatch").put_metric_data(
        Namespace="AWS/Lambda",
        MetricData=[
            {
                "MetricName": "IteratorAge",
                "Dimensions": [{"Name": "FunctionName", "Value": "count-clicks"}],
                "Value": 42_000.0,
                "Unit": "Milliseconds",
            }
        ],
    )

    await poll(aws, project, "lambda")
    graph = await _flow(client, viewer)
    assert declared_edges(graph) == {
        ("channel:aws_sqs:orders", "service:charge-card", "consume", ""),
        ("channel:aws_kinesis:clicks", "service:count-clicks", "consume", "count-clicks"),
        ("channel:aws_kinesis:clicks", "channel:aws_sns:click-failures", "dead_letter",
         "count-clicks"),
    }  # fmt: skip
    charge = _edge(graph, "channel:aws_sqs:orders", "service:charge-card", "consume")
    assert charge["declared"]["batch_size"] == 5
    assert charge["declared"]["state"] in ("Enabled", "Creating")
    clicks = group_item(project.id, "aws_kinesis", "clicks", "count-clicks")
    assert clicks["lag_seconds_method"] == "exact"
    assert 42 <= clicks["lag_seconds"] < 60
    counting = _edge(graph, "channel:aws_kinesis:clicks", "service:count-clicks", "consume",
                     "count-clicks")  # fmt: skip
    assert counting["lag_seconds"] == clicks["lag_seconds"]
