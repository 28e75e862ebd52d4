"""Dead-letter tests share: the project's brokers in EVENTSCOPE_BROKERS, real
dead-letter queues on the running RabbitMQ (unique names, deleted after), a
signed-in client per role, and running redrive jobs the way the worker does."""

import threading
import time
import uuid

import pika
import pytest
from django.test import Client

from dashboard.deadletters import jobs
from dashboard.deadletters.models import FINISHED, Redrive

RABBIT_API = "rabbitmq+http://guest:guest@127.0.0.1:15672"
TRACE = "0af7651916cd43dd8448eb211c80319c"


def traceparent(i: int) -> str:
    return f"00-{TRACE[:-6]}{i:06x}-b7ad6b71692033{i % 256:02x}-01"


@pytest.fixture
def brokers(settings):
    settings.BROKERS = [f"{RABBIT_API}?project=shop"]
    return settings


class RabbitWorld:
    """Queues of one test: `orders-<id>` dead-lettering into `orders-<id>.dlq`."""

    def __init__(self):
        self.suffix = uuid.uuid4().hex[:10]
        self.source = f"orders-{self.suffix}"
        self.dlq = f"{self.source}.dlq"
        self.connection = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1"))
        self.channel = self.connection.channel()
        self.channel.queue_declare(self.dlq)
        self.channel.queue_declare(
            self.source,
            arguments={"x-dead-letter-exchange": "", "x-dead-letter-routing-key": self.dlq},
        )

    def dead_letter(self, n: int, start: int = 0) -> list[str]:
        """Publish n messages to the source queue and reject each: n dead letters."""
        ids = []
        for i in range(start, start + n):
            ids.append(f"evt-{self.suffix}-{i}")
            self.channel.basic_publish(
                "",
                self.source,
                f'{{"order": {i}, "card_number": "4111111111111111"}}'.encode(),
                pika.BasicProperties(
                    message_id=ids[-1],
                    content_type="application/json",
                    headers={"traceparent": traceparent(i), "error": f"payment {i} declined"},
                ),
            )
        self.wait_depth(self.source, n)
        last, got = None, 0
        self.channel.basic_qos(prefetch_count=n)
        for method, _, _ in self.channel.consume(self.source, inactivity_timeout=5):
            assert method is not None, "the source queue did not deliver every message"
            last, got = method.delivery_tag, got + 1
            if got == n:
                break
        # One nack of them all, not requeued: RabbitMQ dead-letters each one.
        self.channel.basic_nack(last, multiple=True, requeue=False)
        self.channel.cancel()
        self.wait_depth(self.dlq, n + start)
        return ids

    def depth(self, queue: str) -> int:
        return self.channel.queue_declare(queue, passive=True).method.message_count

    def wait_depth(self, queue: str, n: int, timeout: float = 10) -> None:
        deadline = time.monotonic() + timeout
        while self.depth(queue) != n:
            if time.monotonic() > deadline:
                raise AssertionError(f"{queue} holds {self.depth(queue)}, not {n}")
            time.sleep(0.05)

    def consume_all(self, queue: str) -> list:
        """Every message in `queue`, acknowledged: (properties, body) each."""
        got = []
        while True:
            method, properties, body = self.channel.basic_get(queue, auto_ack=True)
            if method is None:
                return got
            got.append((properties, body))

    def close(self):
        for queue in (self.source, self.dlq):
            self.channel.queue_delete(queue)
        self.connection.close()


@pytest.fixture
def rabbit():
    world = RabbitWorld()
    yield world
    world.close()


@pytest.fixture
def editor_client(editor):
    client = Client()
    client.force_login(editor)
    return client


@pytest.fixture
def viewer_client(viewer):
    client = Client()
    client.force_login(viewer)
    return client


def run_jobs(timeout: float = 60) -> None:
    """Claim and run redrives until none is left, as the worker's loop does."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        claimed = jobs.claim()
        if claimed is None:
            if not Redrive.objects.exclude(state__in=FINISHED).exists():
                return
            time.sleep(0.1)
            continue
        jobs.run_claimed(*claimed, threading.Event())
    raise AssertionError("redrives did not finish")


def redrive(client, **body):
    response = client.post("/api/redrives?project=shop", body, content_type="application/json")
    assert response.status_code == 202, response.content
    return response.json()["id"]


class RedisWorld:
    """`orders-<id>` (consumer group `billing`) and its dead-letter stream `orders-<id>:dlq`."""

    system = "redis"
    url = "redis://127.0.0.1:6379/0"

    def __init__(self):
        import redis

        self.suffix = uuid.uuid4().hex[:10]
        self.source = f"orders-{self.suffix}"
        self.dlq = f"{self.source}:dlq"
        self.client = redis.Redis(decode_responses=True)
        self.client.xgroup_create(self.source, "billing", id="$", mkstream=True)

    def dead_letter(self, n: int) -> list[str]:
        ids = []
        for i in range(n):
            ids.append(f"evt-{self.suffix}-{i}")
            self.client.xadd(
                self.dlq,
                {
                    "payload": f'{{"order": {i}, "password": "hunter2"}}',
                    "ce-id": ids[-1],
                    "traceparent": traceparent(i),
                    "error": f"payment {i} declined",
                },
            )
        return ids

    def depth(self) -> int:
        return self.client.xlen(self.dlq)

    def consumed(self) -> list[dict]:
        """Every entry the `billing` group reads from the original stream."""
        got = []
        while True:
            reply = self.client.xreadgroup("billing", "c1", {self.source: ">"}, count=1000)
            if not reply or not reply[0][1]:
                return got
            got.extend(fields for _, fields in reply[0][1])

    def close(self):
        self.client.delete(self.source, self.dlq)
        self.client.close()


class NatsWorld:
    """Stream `ORDERS_<id>` (orders.<id>.>) and its dead letters in `ORDERS_<id>_DLQ`."""

    system = "nats"
    url = "nats://127.0.0.1:4222"

    def __init__(self):
        import asyncio

        self.suffix = uuid.uuid4().hex[:10]
        self.source = f"ORDERS_{self.suffix}"
        self.dlq = f"{self.source}_DLQ"
        self.subject = f"orders.{self.suffix}.created"
        self.loop = asyncio.new_event_loop()
        self.run(self._setup())

    def run(self, coroutine):
        return self.loop.run_until_complete(coroutine)

    async def _setup(self):
        import nats

        self.nc = await nats.connect("nats://127.0.0.1:4222")
        self.js = self.nc.jetstream()
        await self.js.add_stream(name=self.source, subjects=[f"orders.{self.suffix}.>"])
        await self.js.add_stream(name=self.dlq, subjects=[f"dlq.orders.{self.suffix}.>"])
        self.sub = await self.js.pull_subscribe(f"orders.{self.suffix}.>", durable="billing")

    def dead_letter(self, n: int) -> list[str]:
        ids = [f"evt-{self.suffix}-{i}" for i in range(n)]

        async def publish():
            for i, event in enumerate(ids):
                await self.js.publish(
                    f"dlq.{self.subject}",
                    f'{{"order": {i}, "password": "hunter2"}}'.encode(),
                    headers={
                        "ce-id": event,
                        "traceparent": traceparent(i),
                        "error": f"payment {i} declined",
                    },
                )

        self.run(publish())
        return ids

    def depth(self) -> int:
        return self.run(self.js.stream_info(self.dlq)).state.messages

    def consumed(self) -> list[dict]:
        from nats.errors import TimeoutError as NatsTimeout

        async def fetch():
            got = []
            while True:
                try:
                    batch = await self.sub.fetch(500, timeout=1)
                except (NatsTimeout, TimeoutError):  # both, depending on where it ran out
                    return got
                for message in batch:
                    await message.ack()
                    got.append(dict(message.headers or {}))

        return self.run(fetch())

    def close(self):
        async def teardown():
            for stream in (self.source, self.dlq):
                await self.js.delete_stream(stream)
            await self.nc.close()

        self.run(teardown())
        self.loop.close()


@pytest.fixture(params=["redis", "nats"])
def stream_world(request, settings):
    world = RedisWorld() if request.param == "redis" else NatsWorld()
    settings.BROKERS = [f"{world.url}?project=shop"]
    yield world
    world.close()
