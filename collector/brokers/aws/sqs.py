"""Amazon SQS: every queue of the region, its depth and its dead-letter queue.

A queue has no consumer groups: its lag (group '') is what waits plus what
is in flight (ApproximateNumberOfMessages + …NotVisible); delayed messages
are not yet deliverable and are shown apart. SQS gives no write times, so
the time lag is CloudWatch's ApproximateAgeOfOldestMessage where it is
published (exact), else a drain estimate from the depth's fall. A queue
with messages in flight has a consumer holding them: it counts as active.

`RedrivePolicy` names the dead-letter queue (by ARN) and the receive count
after which a message goes there: each such link is a `dead_letter` route
from the queue to its dead-letter queue, and both queues carry the other's
name (and the source the dead-letter depth) in their details. FIFO queues
say so; their message groups are not visible through the API without
receiving messages, which a poller must not do.
"""

import datetime as dt
import json
import time

from collector.brokers import aws, topology
from collector.brokers.samples import Reading, Report

SYSTEM = "aws_sqs"
ATTRIBUTES = [
    "QueueArn",
    "ApproximateNumberOfMessages",
    "ApproximateNumberOfMessagesNotVisible",
    "ApproximateNumberOfMessagesDelayed",
    "RedrivePolicy",
    "FifoQueue",
]


def queue_name(queue_url: str) -> str:
    return queue_url.rstrip("/").rsplit("/", 1)[-1]


def redrive_target(attributes: dict) -> tuple[str, int | None] | None:
    """(dead-letter queue name, maxReceiveCount) of a queue's RedrivePolicy, if any."""
    text = attributes.get("RedrivePolicy")
    if not text:
        return None
    try:
        policy = json.loads(text)
        target = policy["deadLetterTargetArn"]
    except (ValueError, KeyError, TypeError):
        return None
    count = policy.get("maxReceiveCount")  # a number or a string, depending on who set it
    try:
        count = int(count) if count is not None else None
    except (TypeError, ValueError):
        count = None
    return topology.arn_name(target), count


def queue_reading(name: str, attributes: dict, now: float, oldest_age: float | None) -> Reading:
    visible = int(attributes.get("ApproximateNumberOfMessages") or 0)
    in_flight = int(attributes.get("ApproximateNumberOfMessagesNotVisible") or 0)
    delayed = int(attributes.get("ApproximateNumberOfMessagesDelayed") or 0)
    details = {"visible": visible, "in_flight": in_flight, "delayed": delayed}
    if attributes.get("FifoQueue") == "true":
        details["fifo"] = True
    lag = visible + in_flight
    return Reading(
        system=SYSTEM,
        channel=name,
        group="",
        lag=lag,
        # CloudWatch's age lags the attributes by a minute or so: an empty
        # queue is not timed by a message that has since gone.
        oldest_at=now - oldest_age if oldest_age is not None and lag else None,
        active_at=now if in_flight else None,
        time=now,
        depth_based=True,
        details=details,
    )


def read(url: str, timeout: float) -> Report:
    """Readings for every queue of the region, and their dead-letter routes."""
    sqs = aws.client(url, "sqs", timeout)
    urls = aws.pages(sqs.list_queues, "QueueUrls", MaxResults=1000)
    queues: dict[str, dict] = {}
    for queue_url in urls:
        try:
            response = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=ATTRIBUTES)
        except sqs.exceptions.QueueDoesNotExist:
            continue  # deleted between the listing and now
        queues[queue_name(queue_url)] = response.get("Attributes") or {}
    now_dt = dt.datetime.now(dt.UTC)
    names = sorted(queues)
    ages = aws.latest_metrics(
        aws.client(url, "cloudwatch", timeout),
        "AWS/SQS",
        [
            (aws.metric_id("age", i), "ApproximateAgeOfOldestMessage", {"QueueName": n}, "Maximum")
            for i, n in enumerate(names)
        ],
        now_dt,
    ) if names else {}  # fmt: skip
    now = time.time()
    readings = {
        name: queue_reading(name, queues[name], now, ages.get(aws.metric_id("age", i)))
        for i, name in enumerate(names)
    }
    routes = []
    for name in names:
        target = redrive_target(queues[name])
        if target is None:
            continue
        dead_letter, max_receives = target
        routes.append(
            topology.Route(
                topology.channel(SYSTEM, name),
                topology.channel(SYSTEM, dead_letter),
                topology.DEAD_LETTER,
                details={"max_receive_count": max_receives},
            )
        )
        source = readings[name].details
        source["dead_letter_queue"] = dead_letter
        source["max_receive_count"] = max_receives
        target_reading = readings.get(dead_letter)
        if target_reading is not None:
            source["dead_letter_depth"] = target_reading.lag
            target_reading.details.setdefault("dead_letter_for", []).append(name)
    return Report(list(readings.values()), routes=routes)


poll = aws.poller(read)
