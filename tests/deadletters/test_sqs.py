"""SQS dead letters through moto's server: queues named by a RedrivePolicy are
found, peeked, and redriven to their source queue; a FIFO source receives each
exactly once even when the worker is killed mid-redrive, a standard one loses
none and repeats at most the one message in flight."""

import collections
import json

import pytest

from dashboard.deadletters.models import Redrive
from tests.deadletters.conftest import TRACE, redrive, run_jobs, traceparent
from tests.deadletters.test_worker_crash import start_worker, wait_for

pytestmark = pytest.mark.django_db(transaction=True)


class SqsWorld:
    def __init__(self, aws, fifo: bool = False):
        self.sqs = aws.client("sqs")
        self.fifo = fifo
        end = ".fifo" if fifo else ""
        self.source, self.dlq = f"orders{end}", f"orders-dlq{end}"
        extra = {"FifoQueue": "true"} if fifo else {}
        self.dlq_url = self.sqs.create_queue(QueueName=self.dlq, Attributes=extra)["QueueUrl"]
        arn = self.sqs.get_queue_attributes(QueueUrl=self.dlq_url, AttributeNames=["QueueArn"])
        policy = {"deadLetterTargetArn": arn["Attributes"]["QueueArn"], "maxReceiveCount": 1}
        self.source_url = self.sqs.create_queue(
            QueueName=self.source, Attributes={**extra, "RedrivePolicy": json.dumps(policy)}
        )["QueueUrl"]
        self.url = f"sqs://eu-west-1?endpoint_url={aws.endpoint_url}"

    def dead_letter(self, n: int) -> list[str]:
        ids = [f"evt-{i}" for i in range(n)]
        for i, event in enumerate(ids):
            extra = (
                {"MessageGroupId": f"g{i}", "MessageDeduplicationId": event} if self.fifo else {}
            )
            self.sqs.send_message(
                QueueUrl=self.source_url,
                MessageBody=json.dumps({"order": i, "token": "s3cret"}),
                MessageAttributes={
                    k: {"DataType": "String", "StringValue": v}
                    for k, v in (
                        ("ce-id", event),
                        ("traceparent", traceparent(i)),
                        ("error", f"payment {i} declined"),
                    )
                },
                **extra,
            )
        # Received once and not deleted: moto moves each to the DLQ on the next receive.
        while True:
            got = self.sqs.receive_message(
                QueueUrl=self.source_url, MaxNumberOfMessages=10, VisibilityTimeout=0
            ).get("Messages", [])
            if not got and self.depth(self.dlq_url) == n:
                return ids

    def depth(self, url) -> int:
        attributes = self.sqs.get_queue_attributes(
            QueueUrl=url,
            AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
        )["Attributes"]
        return int(attributes["ApproximateNumberOfMessages"]) + int(
            attributes["ApproximateNumberOfMessagesNotVisible"]
        )

    def consumed(self) -> list[dict]:
        got = []
        while True:
            batch = self.sqs.receive_message(
                QueueUrl=self.source_url,
                MaxNumberOfMessages=10,
                MessageAttributeNames=["All"],
                VisibilityTimeout=300,
            ).get("Messages", [])
            if not batch:
                return got
            got.extend(
                {k: v["StringValue"] for k, v in m["MessageAttributes"].items()} for m in batch
            )


@pytest.fixture
def sqs_world(aws, settings):
    world = SqsWorld(aws)
    settings.BROKERS = [f"{world.url}&project=shop"]
    return world


def test_a_queue_named_by_a_redrive_policy_is_found_and_peeked(sqs_world, viewer_client):
    ids = sqs_world.dead_letter(3)
    items = viewer_client.get("/api/dead-letters?project=shop").json()["items"]
    assert [(q["name"], q["source_channel"], q["depth"]) for q in items] == [
        ("orders-dlq", "orders", 3)
    ]
    body = viewer_client.get("/api/dead-letters/aws_sqs/orders-dlq/messages?project=shop").json()
    assert sorted(m["event_id"] for m in body["items"]) == ids
    first = body["items"][0]
    assert first["original_channel"] == "orders"
    assert json.loads(first["payload"])["token"] == "[REDACTED]"
    assert first["traceparent"].startswith(f"00-{TRACE[:-6]}")
    assert "ApproximateReceiveCount" in body["peek_side_effect"]
    assert sqs_world.depth(sqs_world.dlq_url) == 3


def test_a_redrive_sends_each_dead_letter_back_to_its_source_once(sqs_world, editor_client):
    ids = sqs_world.dead_letter(15)
    job = redrive(editor_client, system="aws_sqs", dead_letter="orders-dlq", rate_per_s=500)
    run_jobs()
    done = Redrive.objects.get(pk=job)
    assert (done.state, done.total, done.moved, done.failed) == ("done", 15, 15, 0)
    assert sqs_world.depth(sqs_world.dlq_url) == 0
    got = sqs_world.consumed()
    assert sorted(m["ce-id"] for m in got) == sorted(ids)
    assert {m["eventscope-redrive-count"] for m in got} == {"1"}


def test_a_dry_run_moves_nothing(sqs_world, editor_client):
    sqs_world.dead_letter(2)
    job = redrive(editor_client, system="aws_sqs", dead_letter="orders-dlq", dry_run=True)
    run_jobs()
    assert Redrive.objects.get(pk=job).total == 2
    assert sqs_world.depth(sqs_world.dlq_url) == 2


@pytest.mark.timeout(300)
@pytest.mark.parametrize("fifo", [True, False], ids=["fifo", "standard"])
def test_a_killed_worker_loses_nothing(aws, settings, editor_client, tmp_path, fifo):
    world = SqsWorld(aws, fifo=fifo)
    settings.BROKERS = [f"{world.url}&project=shop"]
    # moto's FIFO receive stops handing out fresh messages past about 70 received.
    n = 60 if fifo else 120
    ids = world.dead_letter(n)
    job = redrive(editor_client, system="aws_sqs", dead_letter=world.dlq, rate_per_s=20)
    worker = start_worker(tmp_path / "worker.log", settings.BROKERS[0])
    try:
        wait_for(lambda: Redrive.objects.get(pk=job).moved >= 20, 60, "no progress")
        worker.kill()
        worker.wait(10)
        assert Redrive.objects.get(pk=job).state == "running"
        worker = start_worker(tmp_path / "worker.log", settings.BROKERS[0])
        finished = wait_for(
            lambda: (r := Redrive.objects.get(pk=job)).finished and r, 120, "no finish"
        )
    finally:
        worker.kill()
        worker.wait(10)
    assert (finished.state, finished.moved, finished.failed) == ("done", n, 0)
    assert world.depth(world.dlq_url) == 0
    counts = collections.Counter(m["ce-id"] for m in world.consumed())
    assert sorted(counts) == sorted(ids), "none lost"
    repeated = sum(c - 1 for c in counts.values())
    # FIFO: deduplicated by the dead letter's id. Standard: at most the one in flight.
    assert repeated == 0 if fifo else repeated <= 1
