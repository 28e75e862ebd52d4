"""Direct pollers against the real RabbitMQ, NATS JetStream and Redis on this machine.

Each test builds a backlog with a consumer that does not consume, polls,
sees the lag with the right numbers, consumes, polls, and sees it fall and
the status return to ok; a consumer that takes messages but acknowledges
none, over several polls, is reported as stalled. Names are unique per test
and everything is deleted afterwards.
"""

import asyncio
import time
import uuid

import nats
import pika
import psycopg
import pytest
import redis
from nats.js.api import AckPolicy, ConsumerConfig

from collector.brokers.poller import parse_broker, poll_broker
from collector.db import conninfo
from tests.brokers.conftest import group_item, poll_until

RABBITMQ_URL = "rabbitmq+http://guest:guest@127.0.0.1:15672"
NATS_URL = "nats://127.0.0.1:4222"
REDIS_URL = "redis://127.0.0.1:6379/0"
WINDOW = 600


def unique(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:10]}"


# ---- RabbitMQ ------------------------------------------------------------------------------


@pytest.fixture
def rabbit_queue():
    connection = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1"))
    channel = connection.channel()
    name = unique("es-lag-")
    channel.queue_declare(name)
    yield connection, channel, name
    if channel.is_open:
        channel.queue_delete(name)
    if connection.is_open:
        connection.close()


async def test_rabbitmq_backlog_rises_then_drains_back_to_ok(lag_db, project, rabbit_queue):
    connection, channel, queue = rabbit_queue
    broker = parse_broker(RABBITMQ_URL)

    async def poll():
        assert await poll_broker(broker, project.id, window=WINDOW)

    for n in range(25):
        channel.basic_publish("", queue, f"order {n}".encode())
    backlog = await poll_until(
        poll, lambda: (i := group_item(project.id, "rabbitmq", queue)) and i["lag"] == 25 and i
    )
    assert backlog["partitions"][0]["committed_offset"] == 0

    # Nobody consumes: the acknowledgement counter does not move. A short
    # window leaves out the polls from before the management plugin's
    # statistics showed the messages; it is judged once polls fill half of it.
    async def poll_short():
        assert await poll_broker(broker, project.id, window=1.0)

    def stopped():
        item = group_item(project.id, "rabbitmq", queue)
        return item if item["status"] == "stopped" else None

    stuck = await poll_until(poll_short, stopped)
    assert "no consumer activity" in stuck["reason"]

    for _ in range(25):
        method, _, _ = channel.basic_get(queue)
        channel.basic_ack(method.delivery_tag)
    # The management API counts a queue's depth and its channels' acks in
    # separate statistics events: the depth may read 0 a poll before the
    # acknowledgements show.
    drained = await poll_until(
        poll,
        lambda: (
            (i := group_item(project.id, "rabbitmq", queue))
            and i["lag"] == 0
            and i["partitions"][0]["committed_offset"] == 25
            and i
        ),
    )
    assert drained["status"] == "ok"
    assert drained["lag_seconds"] == 0


async def test_rabbitmq_consumer_holding_messages_without_acks_is_stalled(
    lag_db, project, rabbit_queue
):
    connection, channel, queue = rabbit_queue
    for n in range(10):
        channel.basic_publish("", queue, f"payment {n}".encode())
    holder = connection.channel()
    holder.basic_qos(prefetch_count=4)
    held = []
    holder.basic_consume(queue, lambda ch, method, props, body: held.append(method))
    deadline = time.monotonic() + 10
    while len(held) < 4 and time.monotonic() < deadline:
        connection.process_data_events(time_limit=0.1)
    assert len(held) == 4
    broker = parse_broker(RABBITMQ_URL)

    async def poll():
        # The window is short so polls from before the statistics caught up
        # (lag 0 then) soon fall out of it.
        assert await poll_broker(broker, project.id, window=2.0)

    def stalled():
        item = group_item(project.id, "rabbitmq", queue)
        return item if item and item["status"] == "stalled" else None

    item = await poll_until(poll, stalled)
    assert item["lag"] == 10
    assert "stayed at 0" in item["reason"]
    holder.close()


# ---- NATS JetStream --------------------------------------------------------------------------


async def _jetstream():
    nc = await nats.connect(NATS_URL)
    return nc, nc.jetstream()


async def test_nats_backlog_has_exact_time_lag_and_drains_to_ok(lag_db, project):
    nc, js = await _jetstream()
    stream, subject = unique("ESLAG"), unique("eslag.")
    await js.add_stream(name=stream, subjects=[subject])
    try:
        await js.add_consumer(
            stream, ConsumerConfig(durable_name="mailer", ack_policy=AckPolicy.EXPLICIT)
        )
        await js.publish(subject, b"first")
        await asyncio.sleep(1.2)
        for n in range(29):
            await js.publish(subject, f"order {n}".encode())
        broker = parse_broker(NATS_URL)
        assert await poll_broker(broker, project.id, window=WINDOW)
        item = group_item(project.id, "nats", stream, "mailer")
        assert item["lag"] == 30
        # The oldest waiting message was written 1.2 s before the others.
        assert item["lag_seconds_method"] == "exact"
        assert 1.2 <= item["lag_seconds"] < 10

        subscription = await js.pull_subscribe(subject, durable="mailer", stream=stream)
        for message in await subscription.fetch(30, timeout=5):
            await message.ack_sync()
        assert await poll_broker(broker, project.id, window=WINDOW)
        item = group_item(project.id, "nats", stream, "mailer")
        assert (item["lag"], item["lag_seconds"], item["status"]) == (0, 0, "ok")
        assert item["partitions"][0]["committed_offset"] == 30
    finally:
        await js.delete_stream(stream)
        await nc.close()


async def test_nats_exact_time_lag_survives_a_deleted_message(lag_db, project):
    nc, js = await _jetstream()
    stream, subject = unique("ESLAG"), unique("eslag.")
    await js.add_stream(name=stream, subjects=[subject])
    try:
        await js.add_consumer(
            stream, ConsumerConfig(durable_name="mailer", ack_policy=AckPolicy.EXPLICIT)
        )
        await js.publish(subject, b"done")
        subscription = await js.pull_subscribe(subject, durable="mailer", stream=stream)
        for message in await subscription.fetch(1, timeout=5):
            await message.ack_sync()  # the ack floor is now 1
        for n in range(2):
            await js.publish(subject, f"first {n}".encode())
        await asyncio.sleep(1.2)
        for n in range(8):
            await js.publish(subject, f"order {n}".encode())
        # The message right after the ack floor is gone (deleted, or expired).
        await js.delete_msg(stream, 2)
        assert await poll_broker(parse_broker(NATS_URL), project.id, window=WINDOW)
        item = group_item(project.id, "nats", stream, "mailer")
        assert item["lag"] == 9
        # the third message, written 1.2 s before the others, is the oldest waiting
        assert item["lag_seconds_method"] == "exact"
        assert 1.2 <= item["lag_seconds"] < 10
    finally:
        await js.delete_stream(stream)
        await nc.close()


async def test_nats_consumer_filtered_to_several_subjects_is_timed_on_them(lag_db, project):
    import dataclasses

    from collector.brokers import nats as nats_poller
    from collector.brokers import samples

    nc, js = await _jetstream()
    stream, subject = unique("ESLAG"), unique("eslag.")
    await js.add_stream(name=stream, subjects=[f"{subject}.>"])
    try:
        await js.add_consumer(
            stream, ConsumerConfig(durable_name="billing", ack_policy=AckPolicy.EXPLICIT)
        )
        await js.publish(f"{subject}.audit", b"not for billing")
        await asyncio.sleep(1.5)
        await js.publish(f"{subject}.invoices", b"for billing")
        info = await js.consumer_info(stream, "billing")
        # As a NATS 2.10 server reports a consumer with `filter_subjects`
        # (the server here, 2.9, knows only the single `filter_subject`).
        config = dataclasses.replace(
            info.config,
            filter_subject=None,
            filter_subjects=[f"{subject}.invoices", f"{subject}.refunds"],
        )
        info = dataclasses.replace(info, config=config, num_pending=1)
        stream_info = await js.stream_info(stream)
        oldest = await nats_poller._oldest_waiting(js, stream, info, stream_info.state.first_seq)
        reading = nats_poller.consumer_reading(info, time.time(), oldest)
        await asyncio.to_thread(samples.store_sync, project.id, [reading], "test")
        item = group_item(project.id, "nats", stream, "billing")
        # timed on its own subjects' message, not on the older one it never gets
        assert item["lag_seconds_method"] == "exact"
        assert item["lag_seconds"] < 1.0
    finally:
        await js.delete_stream(stream)
        await nc.close()


async def test_nats_consumer_fetching_without_acks_is_stalled(lag_db, project):
    nc, js = await _jetstream()
    stream, subject = unique("ESLAG"), unique("eslag.")
    await js.add_stream(name=stream, subjects=[subject])
    try:
        await js.add_consumer(
            stream,
            ConsumerConfig(durable_name="audit", ack_policy=AckPolicy.EXPLICIT, ack_wait=60),
        )
        for n in range(10):
            await js.publish(subject, f"event {n}".encode())
        subscription = await js.pull_subscribe(subject, durable="audit", stream=stream)
        broker = parse_broker(NATS_URL)
        await subscription.fetch(4, timeout=5)  # taken, never acknowledged
        # Three polls over more than half a two-second window: judged.
        for _ in range(2):
            assert await poll_broker(broker, project.id, window=2.0)
            await asyncio.sleep(0.6)
        await subscription.fetch(4, timeout=5)
        assert await poll_broker(broker, project.id, window=2.0)
        item = group_item(project.id, "nats", stream, "audit")
        assert item["lag"] == 10
        assert item["status"] == "stalled", item["reason"]
    finally:
        await js.delete_stream(stream)
        await nc.close()


# ---- Redis Streams ----------------------------------------------------------------------------


@pytest.fixture
def redis_stream():
    client = redis.Redis.from_url(REDIS_URL)
    key = unique("es-lag-")
    client.xgroup_create(key, "billing", id="$", mkstream=True)
    yield client, key
    client.delete(key)
    client.close()


async def test_redis_backlog_has_exact_time_lag_and_drains_to_ok(lag_db, project, redis_stream):
    client, key = redis_stream
    first_id = client.xadd(key, {"n": "0"})
    await asyncio.sleep(1.1)
    for n in range(1, 20):
        client.xadd(key, {"n": str(n)})
    broker = parse_broker(REDIS_URL)
    assert await poll_broker(broker, project.id, window=WINDOW)
    item = group_item(project.id, "redis", key, "billing")
    assert item["lag"] == 20
    assert item["lag_seconds_method"] == "exact"
    expected = time.time() - int(first_id.decode().split("-")[0]) / 1000
    assert item["lag_seconds"] == pytest.approx(expected, abs=0.5)

    entries = client.xreadgroup("billing", "worker-1", {key: ">"}, count=100)[0][1]
    client.xack(key, "billing", *[entry_id for entry_id, _ in entries])
    assert await poll_broker(broker, project.id, window=WINDOW)
    item = group_item(project.id, "redis", key, "billing")
    assert (item["lag"], item["lag_seconds"], item["status"]) == (0, 0, "ok")
    assert item["partitions"][0]["end_offset"] == 20


async def test_redis_reader_that_never_acks_is_stalled(lag_db, project, redis_stream):
    client, key = redis_stream
    for n in range(6):
        client.xadd(key, {"n": str(n)})
    client.xreadgroup("billing", "worker-1", {key: ">"}, count=3)
    broker = parse_broker(REDIS_URL)
    # Three polls over more than half a two-second window: judged.
    for _ in range(2):
        assert await poll_broker(broker, project.id, window=2.0)
        await asyncio.sleep(0.6)
    client.xreadgroup("billing", "worker-1", {key: ">"}, count=3)  # still reading, no acks
    assert await poll_broker(broker, project.id, window=2.0)
    item = group_item(project.id, "redis", key, "billing")
    assert item["lag"] == 6
    assert item["status"] == "stalled", item["reason"]
    # pending entries count toward the time lag: exact, from the oldest pending id
    assert item["lag_seconds_method"] == "exact"


# ---- a broker that is down or slow -----------------------------------------------------------


async def test_a_down_broker_is_unreachable_since_its_first_failure_and_others_keep_working(
    lag_db, project, redis_stream
):
    client, key = redis_stream
    client.xadd(key, {"n": "1"})
    down = parse_broker("redis://127.0.0.1:1/0")
    healthy = parse_broker(REDIS_URL)

    # A TCP server that accepts and never answers: a slow broker.
    async def silent(reader, writer):
        await asyncio.sleep(30)

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    slow = parse_broker(f"prometheus+http://127.0.0.1:{port}/metrics")
    try:
        started = time.monotonic()
        results = await asyncio.gather(
            poll_broker(down, project.id, timeout=0.5),
            poll_broker(slow, project.id, timeout=0.5),
            poll_broker(healthy, project.id, timeout=5),
        )
        assert results == [False, False, True]
        assert time.monotonic() - started < 5
    finally:
        server.close()
    assert group_item(project.id, "redis", key, "billing")["lag"] == 1

    with psycopg.connect(conninfo()) as conn:
        states = dict(
            conn.execute(
                "SELECT source, error FROM brokers_brokerstate WHERE project_id = %s",
                [project.id],
            ).fetchall()
        )
        since = conn.execute(
            "SELECT error_since FROM brokers_brokerstate WHERE source = %s", [down.source]
        ).fetchone()[0]
    assert states[healthy.source] == ""
    assert "Connect" in states[down.source]
    assert "no answer within the timeout" in states[slow.source]
    # A second failure keeps the time it started failing.
    assert not await poll_broker(down, project.id, timeout=0.5)
    with psycopg.connect(conninfo()) as conn:
        again = conn.execute(
            "SELECT error_since FROM brokers_brokerstate WHERE source = %s", [down.source]
        ).fetchone()[0]
    assert again == since


async def test_rabbitmq_every_page_of_every_vhost_is_read(lag_db, project, monkeypatch):
    import httpx

    from collector.brokers import rabbitmq

    vhost = unique("es-lag-vhost-")
    api = httpx.Client(base_url="http://127.0.0.1:15672", auth=("guest", "guest"))
    assert api.put(f"/api/vhosts/{vhost}").status_code in (201, 204)
    assert api.put(
        f"/api/permissions/{vhost}/guest", json={"configure": ".*", "write": ".*", "read": ".*"}
    ).status_code in (201, 204)
    connection = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", virtual_host=vhost))
    channel = connection.channel()
    queues = [f"q{n}" for n in range(5)]
    try:
        for n, queue in enumerate(queues):
            channel.queue_declare(queue)
            for _ in range(n + 1):
                channel.basic_publish("", queue, b"x")
        monkeypatch.setattr(rabbitmq, "PAGE_SIZE", 2)  # 5 queues: three pages
        broker = parse_broker(RABBITMQ_URL)

        async def poll():
            assert await poll_broker(broker, project.id, window=WINDOW)

        def all_counted():
            depths = {
                q: (item or {}).get("lag")
                for q in queues
                for item in [group_item(project.id, "rabbitmq", q, vhost=vhost)]
            }
            return depths if depths == {q: n + 1 for n, q in enumerate(queues)} else None

        await poll_until(poll, all_counted)
    finally:
        connection.close()
        api.delete(f"/api/vhosts/{vhost}")
        api.close()


async def test_rabbitmq_queues_named_alike_in_two_vhosts_are_two_groups(
    lag_db, project, rabbit_queue
):
    import httpx

    # Queue "<vhost>/q" in the default vhost and queue "q" in vhost <vhost>
    # were both the channel "<vhost>/q".
    connection, channel, _ = rabbit_queue
    vhost = unique("es-lag-vhost-")
    api = httpx.Client(base_url="http://127.0.0.1:15672", auth=("guest", "guest"))
    assert api.put(f"/api/vhosts/{vhost}").status_code in (201, 204)
    assert api.put(
        f"/api/permissions/{vhost}/guest", json={"configure": ".*", "write": ".*", "read": ".*"}
    ).status_code in (201, 204)
    inner = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", virtual_host=vhost))
    slashed = f"{vhost}/q"
    try:
        inner.channel().queue_declare("q")
        inner.channel().basic_publish("", "q", b"x")
        channel.queue_declare(slashed)
        for _ in range(3):
            channel.basic_publish("", slashed, b"x")
        broker = parse_broker(RABBITMQ_URL)

        async def poll():
            assert await poll_broker(broker, project.id, window=WINDOW)

        def both():
            found = (
                group_item(project.id, "rabbitmq", slashed, vhost="/"),
                group_item(project.id, "rabbitmq", "q", vhost=vhost),
            )
            lags = tuple((item or {}).get("lag") for item in found)
            return lags if lags == (3, 1) else None

        await poll_until(poll, both)
    finally:
        channel.queue_delete(slashed)
        inner.close()
        api.delete(f"/api/vhosts/{vhost}")
        api.close()
