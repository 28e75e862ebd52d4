"""The real botocore instrumentation on Amazon's APIs (moto's server), exporting
to the real receivers: SQS, SNS and Kinesis calls become the right stages on
the right channels, and context carried in message attributes joins the
producer and the consumer for end-to-end latency.

What `opentelemetry-instrumentation-botocore` does, and so what these tests
lean on: every call is a span named `<Service>.<Operation>` with
`rpc.method`; SQS send and receive are CLIENT spans with
`messaging.system` = `aws.sqs`, the queue name in `messaging.destination`
and no operation, and nothing injected into the message; SNS Publish is a
PRODUCER span naming the topic by ARN and injects the context into the
message attributes itself; Kinesis calls carry no messaging attributes at all.
A producer that wants its SQS messages joined injects the context of the
send span into the message attributes (a request hook, as SNS's extension
does), and the consumer makes a process span per message under that context.
"""

import asyncio
import json
import uuid

import pytest
from opentelemetry import propagate
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.instrumentation.botocore import BotocoreInstrumentor
from opentelemetry.trace import SpanKind, Status, StatusCode

from collector import auth, semconv
from collector.batch import CONSUMER, PRODUCER
from tests.collector.receiver_harness import http_receiver, running_writer
from tests.collector.test_sdk_exporters import export, provider, stored

pytestmark = pytest.mark.django_db(transaction=True)

MESSAGES = 6
FAILING = {4}


@pytest.fixture(autouse=True)
def fresh_token_cache():
    auth.forget()
    yield
    auth.forget()


def inject_into_sqs_messages(span, service, operation, params):
    """A producer's request hook: the send span's context travels in the message."""
    if service == "sqs" and operation == "SendMessage":
        carrier: dict[str, str] = {}
        propagate.inject(carrier)
        attributes = params.setdefault("MessageAttributes", {})
        for key, value in carrier.items():
            attributes[key] = {"DataType": "String", "StringValue": value}


def context_of(message: dict):
    """The creation context a message carries (SQS attributes, or raw SNS delivery)."""
    carrier = {k: v["StringValue"] for k, v in (message.get("MessageAttributes") or {}).items()}
    return propagate.extract(carrier)


def process(tracer, queue: str, message: dict, fail: bool) -> None:
    """The consumer's handling of one message, under the context it carries."""
    with tracer.start_as_current_span(
        f"{queue} process",
        context=context_of(message),
        kind=SpanKind.CONSUMER,
        attributes={
            "messaging.system": "aws_sqs",
            "messaging.destination.name": queue,
            "messaging.operation.type": "process",
            "messaging.message.id": message["MessageId"],
        },
    ) as span:
        if fail:
            span.set_status(Status(StatusCode.ERROR, f"order {message['Body']} rejected"))


def instrumented(tracer_provider, **hooks):
    instrumentor = BotocoreInstrumentor()
    instrumentor.instrument(tracer_provider=tracer_provider, **hooks)
    return instrumentor


def receive_all(sqs, queue_url: str, expected: int) -> list[dict]:
    got: list[dict] = []
    while len(got) < expected:
        response = sqs.receive_message(
            QueueUrl=queue_url,
            MaxNumberOfMessages=10,
            MessageAttributeNames=["All"],
            WaitTimeSeconds=1,
        )
        got.extend(response.get("Messages") or [])
    return got


def run_sqs_shop(aws, queue: str, orders, payments) -> list[str]:
    """orders sends MESSAGES orders to `queue`; payments receives and processes
    them, rejecting the FAILING ones. Returns the message ids sent."""
    sqs = aws.client("sqs")
    queue_url = sqs.create_queue(QueueName=queue)["QueueUrl"]
    instrumentor = instrumented(orders, request_hook=inject_into_sqs_messages)
    try:
        sent = [
            sqs.send_message(QueueUrl=queue_url, MessageBody=str(n))["MessageId"]
            for n in range(MESSAGES)
        ]
    finally:
        instrumentor.uninstrument()
    instrumentor = instrumented(payments)
    tracer = payments.get_tracer("shop.payments")
    try:
        for message in receive_all(sqs, queue_url, MESSAGES):
            process(tracer, queue, message, int(message["Body"]) in FAILING)
            sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])
    finally:
        instrumentor.uninstrument()
    return sent


def exporter_for(url: str, token: str):
    return OTLPSpanExporter(
        endpoint=f"{url}/v1/traces", headers={"authorization": f"Bearer {token}"}, timeout=10
    )


async def test_sqs_send_and_receive_give_publish_and_consume_edges_joined_end_to_end(
    aws, project, ingest_token, telemetry_db
):
    queue = f"orders-{uuid.uuid4().hex[:8]}"
    async with running_writer() as writer, http_receiver(writer) as url:
        orders = provider("orders", exporter_for(url, ingest_token))
        payments = provider("payments", exporter_for(url, ingest_token))
        sent = await asyncio.to_thread(run_sqs_shop, aws, queue, orders, payments)
        await export(orders, payments)

    spans, stages, rollups = await stored(project.pk)
    channel = f"channel:aws_sqs:{queue}"
    assert rollups == [
        ("service:orders", channel, "publish", "", MESSAGES, 0),
        (channel, "service:payments", "consume", "", MESSAGES, len(FAILING)),
    ]
    published = [s for s in stages if s[2] == PRODUCER]
    processed = [s for s in stages if s[2] == CONSUMER and s[1] in ("processed", "failed")]
    received = [s for s in stages if s[2] == CONSUMER and s[1] == "received"]
    # botocore's SendMessage spans are the publishes, with SQS's message ids.
    assert sorted(s[0] for s in published) == sorted(sent)
    assert {(s[3], s[4]) for s in published} == {("orders", queue)}
    # Its ReceiveMessage spans are receipts on the same channel, by the consumer.
    assert received and {(s[3], s[4]) for s in received} == {("payments", queue)}
    assert sorted(s[0] for s in processed) == sorted(sent)
    # Every processing joined its send through the context in the message attributes.
    assert all(s[7] is not None and s[7] >= 0 for s in processed)
    assert sorted(s[1] for s in processed) == ["failed"] + ["processed"] * (MESSAGES - 1)


def run_sns_fan_out(aws, topic: str, queue: str, orders, payments) -> None:
    """orders publishes to an SNS topic; a raw-delivery SQS subscription takes the
    message (and the context SNS's instrumentation injected) to payments."""
    sns, sqs = aws.client("sns"), aws.client("sqs")
    topic_arn = sns.create_topic(Name=topic)["TopicArn"]
    queue_url = sqs.create_queue(QueueName=queue)["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])[
        "Attributes"
    ]["QueueArn"]
    sns.subscribe(
        TopicArn=topic_arn,
        Protocol="sqs",
        Endpoint=queue_arn,
        Attributes={"RawMessageDelivery": "true"},
    )
    instrumentor = instrumented(orders)
    try:
        for n in range(3):
            sns.publish(TopicArn=topic_arn, Message=json.dumps({"order": n}))
        # Kinesis calls are traced too, but name no stream: no stage, no channel.
        kinesis = aws.client("kinesis")
        kinesis.create_stream(StreamName=f"{topic}-clicks", ShardCount=1)
        kinesis.put_record(StreamName=f"{topic}-clicks", Data=b"x", PartitionKey="k")
    finally:
        instrumentor.uninstrument()
    tracer = payments.get_tracer("shop.payments")
    for message in receive_all(sqs, queue_url, 3):
        process(tracer, queue, message, fail=False)


async def test_sns_publish_is_a_publish_on_the_topic_joined_through_the_fan_out(
    aws, project, ingest_token, telemetry_db
):
    topic, queue = f"orders-{uuid.uuid4().hex[:8]}", f"billing-{uuid.uuid4().hex[:8]}"
    async with running_writer() as writer, http_receiver(writer) as url:
        orders = provider("orders", exporter_for(url, ingest_token))
        payments = provider("payments", exporter_for(url, ingest_token))
        await asyncio.to_thread(run_sns_fan_out, aws, topic, queue, orders, payments)
        await export(orders, payments)

    spans, stages, rollups = await stored(project.pk)
    # The topic is named by its bare name, not its ARN, on the aws_sns system.
    assert rollups == [
        ("service:orders", f"channel:aws_sns:{topic}", "publish", "", 3, 0),
        (f"channel:aws_sqs:{queue}", "service:payments", "consume", "", 3, 0),
    ]
    processed = [s for s in stages if s[2] == CONSUMER]
    assert len(processed) == 3
    # The context SNS injected crossed the subscription: each joins its publish.
    assert all(s[7] is not None and s[7] >= 0 for s in processed)
    # The Kinesis calls were exported (CreateStream, PutRecord) without a stage.
    assert len(spans) == 3 + 2 + 3
    assert not [r for r in rollups if "kinesis" in r[0] + r[1]]


def test_an_rpc_method_alone_does_not_make_a_messaging_span():
    # gRPC services have Publish and SendMessage methods too: only a span that
    # says it is messaging has its rpc.method read as an operation.
    grpc = {"rpc.system": "grpc", "rpc.service": "chat.Room", "rpc.method": "SendMessage"}
    assert not semconv.is_messaging(grpc, semconv.fields(grpc))
    assert semconv.operation_type(semconv.fields(grpc)) is None
    sqs = {**grpc, "rpc.system": "aws-api", "messaging.system": "aws.sqs"}
    assert semconv.operation_type(semconv.fields(sqs)) == "send"
    assert semconv.system(semconv.fields(sqs)) == "aws_sqs"
