"""Amazon SQS dead letters: queues named by another queue's RedrivePolicy
(`deadLetterTargetArn`), and queues named like dead-letter queues.

Broker URL: `sqs://<region>` (optionally `?endpoint_url=http://host:port`),
credentials from the standard AWS chain.

Peek: SQS cannot read without receiving. A peek receives with a short
visibility timeout and makes the messages visible again at once; each one's
ApproximateReceiveCount goes up by one (the page says so).

Move: receive (hidden for VISIBILITY seconds), send to the destination, then
delete from the dead-letter queue. To a FIFO queue the send carries the dead
letter's MessageId as MessageDeduplicationId, so a send retried after a crash
is dropped by SQS (within its 5-minute deduplication interval): exactly once.
A standard queue has no deduplication: a worker killed between the send and
the delete sends that one message again when the job resumes (at least once).
Server-side message move tasks (StartMessageMoveTask) are not used: they
cannot pick messages, add the redrive headers or continue the trace.
"""

import datetime as dt
import json
import time
from urllib.parse import parse_qsl, urlsplit

from django.conf import settings

from dashboard.deadletters.systems import (
    ERROR_HEADERS,
    EVENT_ID_HEADERS,
    ORIGIN_HEADERS,
    DeadLetterQueue,
    Hooks,
    Message,
    Planned,
    header,
    looks_like_dead_letters,
    shown_headers,
    shown_payload,
)

SYSTEM = "aws_sqs"
# Seconds a received dead letter stays hidden while it is being moved (or peeked).
VISIBILITY = 15
PEEK_VISIBILITY = 30
MAX_ATTRIBUTES = 10  # SQS's limit on message attributes
EXACTLY_ONCE = (
    "Each message is sent to the destination, then deleted from the dead-letter queue. "
    "To a FIFO queue the send is deduplicated by the dead letter's MessageId, so none is "
    "lost or sent twice; to a standard queue a crash between send and delete sends that "
    "one message again when the redrive resumes (at least once)."
)
PEEK_SIDE_EFFECT = (
    "SQS cannot read a queue without receiving: a peek hides the messages while it reads (at most 30 s) "
    "and raises their ApproximateReceiveCount by one."
)


def _client(broker):
    import boto3
    from botocore.config import Config

    parts = urlsplit(broker.url)
    options = dict(parse_qsl(parts.query))
    timeout = settings.BROKER_TIMEOUT_SECONDS
    return boto3.client(
        "sqs",
        region_name=parts.hostname,
        endpoint_url=options.get("endpoint_url") or None,
        config=Config(connect_timeout=timeout, read_timeout=timeout, retries={"max_attempts": 2}),
    )


def _queues(client) -> list[tuple[str, dict]]:
    urls, token = [], None
    while True:
        page = client.list_queues(**({"NextToken": token} if token else {}), MaxResults=1000)
        urls.extend(page.get("QueueUrls", []))
        token = page.get("NextToken")
        if not token:
            break
    return [
        (url, client.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"])
        for url in urls
    ]


def _name(arn_or_url: str) -> str:
    return arn_or_url.rstrip("/").replace(":", "/").rsplit("/", 1)[-1]


def _sources(queues) -> dict[str, list[str]]:
    """Dead-letter queue name → the names of the queues whose RedrivePolicy targets it."""
    sources: dict[str, list[str]] = {}
    for url, attributes in queues:
        policy = attributes.get("RedrivePolicy")
        if not policy:
            continue
        try:
            target = json.loads(policy).get("deadLetterTargetArn", "")
        except ValueError:
            continue
        if target:
            sources.setdefault(_name(target), []).append(_name(url))
    return sources


def discover(broker) -> list[DeadLetterQueue]:
    client = _client(broker)
    queues = _queues(client)
    sources = _sources(queues)
    found = []
    for url, attributes in queues:
        name = _name(url)
        if name not in sources and not looks_like_dead_letters(name.removesuffix(".fifo")):
            continue
        depth = int(attributes.get("ApproximateNumberOfMessages") or 0) + int(
            attributes.get("ApproximateNumberOfMessagesNotVisible") or 0
        )
        found.append(
            DeadLetterQueue(
                system=SYSTEM,
                name=name,
                broker=broker.source,
                source_channel=", ".join(sorted(sources.get(name, []))) or None,
                depth=depth,
                # CloudWatch's ApproximateAgeOfOldestMessage is not read (yet).
                oldest_age_seconds=None,
                why="another queue's RedrivePolicy names it"
                if name in sources
                else "named like a dead-letter queue",
            )
        )
    return sorted(found, key=lambda q: q.name)


def _attributes(message: dict) -> dict:
    return {
        k: v.get("StringValue", v.get("BinaryValue"))
        for k, v in (message.get("MessageAttributes") or {}).items()
    }


def to_message(message: dict, origin: str | None) -> Message:
    attributes = _attributes(message)
    system = message.get("Attributes") or {}
    sent = system.get("SentTimestamp")
    headers = {**attributes, **{f"sqs:{k}": v for k, v in system.items()}}
    return Message(
        id=message["MessageId"],
        headers=shown_headers(headers),
        payload=shown_payload(message.get("Body")),
        error=header(attributes, ERROR_HEADERS),
        original_channel=header(attributes, ORIGIN_HEADERS) or origin,
        traceparent=header(attributes, ("traceparent",)),
        event_id=header(attributes, EVENT_ID_HEADERS) or message["MessageId"],
        time=dt.datetime.fromtimestamp(int(sent) / 1000, dt.UTC) if sent else None,
        raw=message,
    )


class Reader:
    """One dead-letter queue: receives, and the original queue its messages came from."""

    def __init__(self, broker, name: str):
        self.client = _client(broker)
        self.name = name
        self.url = self.client.get_queue_url(QueueName=name)["QueueUrl"]
        sources = self.client.list_dead_letter_source_queues(QueueUrl=self.url).get("queueUrls", [])
        self.origin = _name(sources[0]) if len(sources) == 1 else None

    def receive(self, visibility: int, count: int = 10) -> list[dict]:
        return self.client.receive_message(
            QueueUrl=self.url,
            MaxNumberOfMessages=max(1, min(10, count)),
            VisibilityTimeout=visibility,
            WaitTimeSeconds=0,
            AttributeNames=["All"],
            MessageAttributeNames=["All"],
        ).get("Messages", [])

    def release(self, messages: list[dict]) -> None:
        """Make received messages visible again at once."""
        for start in range(0, len(messages), 10):
            batch = messages[start : start + 10]
            self.client.change_message_visibility_batch(
                QueueUrl=self.url,
                Entries=[
                    {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"], "VisibilityTimeout": 0}
                    for i, m in enumerate(batch)
                ],
            )

    def peek(self, limit: int, ids=None) -> list[Message]:
        held, found, seen = [], [], set()
        try:
            while len(seen) < limit:
                batch = self.receive(PEEK_VISIBILITY, limit - len(seen))
                fresh = [m for m in batch if m["MessageId"] not in seen]
                held.extend(batch)
                if not fresh:
                    break
                for m in fresh:
                    seen.add(m["MessageId"])
                    if ids is None or m["MessageId"] in ids:
                        found.append(to_message(m, self.origin))
        finally:
            self.release(held)
        return found


def peek(broker, name: str, namespace: str = "", limit: int = 50, ids=None) -> list[Message]:
    return Reader(broker, name).peek(limit, ids)


class Mover:
    exactly_once = EXACTLY_ONCE

    def __init__(self, broker, name: str, namespace: str = ""):
        self.reader = Reader(broker, name)
        self.client = self.reader.client
        self.urls: dict[str, str] = {}

    def close(self):
        self.client.close()

    def idle(self, seconds: float) -> None:
        time.sleep(seconds)

    def plan(self, selection, limit):
        return self.reader.peek(limit, selection)

    def _url(self, destination: str) -> str:
        if destination not in self.urls:
            self.urls[destination] = self.client.get_queue_url(QueueName=destination)["QueueUrl"]
        return self.urls[destination]

    def check_destination(self, destination: str) -> str | None:
        try:
            self._url(destination)
        except self.client.exceptions.QueueDoesNotExist:
            return f"no SQS queue {destination!r}"
        return None

    def _in_flight(self) -> int:
        attributes = self.client.get_queue_attributes(
            QueueUrl=self.reader.url, AttributeNames=["ApproximateNumberOfMessagesNotVisible"]
        )["Attributes"]
        return int(attributes.get("ApproximateNumberOfMessagesNotVisible") or 0)

    def move(self, pending: list[Planned], hooks: Hooks) -> None:
        waiting = {p.message_id: p for p in pending}
        held: list[dict] = []
        # Dead letters a killed worker had received are hidden until their
        # visibility ends; a resumed job waits for them rather than miss them.
        patience = time.monotonic() + VISIBILITY + 5
        try:
            while waiting:
                # No more at once than can move before they show again.
                count = max(1, min(10, int(hooks.job.rate_per_s * VISIBILITY / 2)))
                batch = self.reader.receive(VISIBILITY, count)
                if not batch:
                    if self._in_flight() > len(held) and time.monotonic() < patience:
                        self.idle(1)
                        continue
                    return
                for index, message in enumerate(batch):
                    planned = waiting.pop(message["MessageId"], None)
                    if planned is None:
                        held.append(message)
                        continue
                    if not hooks.begin(planned):
                        held.extend(batch[index:])
                        return
                    error = self._send(planned, message, hooks)
                    if error:
                        held.append(message)  # stays a dead letter
                    else:
                        self.client.delete_message(
                            QueueUrl=self.reader.url, ReceiptHandle=message["ReceiptHandle"]
                        )
                    hooks.done(planned, error=error)
        finally:
            self.reader.release(held)

    def _send(self, planned: Planned, message: dict, hooks: Hooks) -> str:
        """Send one dead letter to its destination; "" when sent, else why not."""
        attributes = hooks.outgoing_headers(_attributes(message))
        if len(attributes) > MAX_ATTRIBUTES:
            return (
                f"with the redrive's own attributes it would carry {len(attributes)}; "
                f"SQS allows {MAX_ATTRIBUTES}"
            )
        url = self._url(planned.destination)
        request = {
            "QueueUrl": url,
            "MessageBody": message["Body"],
            "MessageAttributes": {
                k: {"DataType": "String", "StringValue": str(v)} for k, v in attributes.items()
            },
        }
        if url.endswith(".fifo"):
            system = message.get("Attributes") or {}
            request["MessageGroupId"] = system.get("MessageGroupId") or "eventscope-redrive"
            request["MessageDeduplicationId"] = message["MessageId"]
        self.client.send_message(**request)
        return ""


def open_mover(broker, name: str, namespace: str = "") -> Mover:
    return Mover(broker, name, namespace)
