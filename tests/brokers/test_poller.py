"""EVENTSCOPE_BROKERS parsing and the worker loop."""

import asyncio
import uuid

import pytest
import redis
from django.core.exceptions import ImproperlyConfigured

from collector.brokers import samples
from collector.brokers.poller import parse_broker, run
from tests.brokers.conftest import FIXTURES, group_item, poll_until, read_current


@pytest.mark.parametrize(
    "url, kind, source",
    [
        (
            "rabbitmq+http://guest:secret@127.0.0.1:15672",
            "rabbitmq",
            "rabbitmq+http://127.0.0.1:15672",
        ),
        ("nats://user:pw@127.0.0.1:4222", "nats", "nats://127.0.0.1:4222"),
        ("redis://:pw@127.0.0.1:6379/0", "redis", "redis://127.0.0.1:6379/0"),
        (
            "prometheus+http://127.0.0.1:9308/metrics",
            "prometheus",
            "prometheus+http://127.0.0.1:9308/metrics",
        ),
    ],
)
def test_each_url_form_is_understood_and_its_credentials_never_shown(url, kind, source):
    broker = parse_broker(url, default_project="default")
    assert (broker.kind, broker.source, broker.project) == (kind, source, "default")
    assert broker.url.split("://")[1] == url.split("://")[1]


def test_a_project_can_be_named_in_the_url():
    broker = parse_broker(
        "prometheus+http://h:7777/metrics?family=queue_coarse_metrics&project=shop"
    )
    assert broker.project == "shop"
    assert broker.url == "prometheus+http://h:7777/metrics?family=queue_coarse_metrics"
    assert parse_broker("redis://h:6379/0#project=ops").project == "ops"


@pytest.mark.parametrize(
    "url, message",
    [
        ("kafka://h:9092", "has scheme 'kafka'"),
        ("redis://", "without a host"),
        ("nats://h:notaport", "bad port"),
    ],
)
def test_a_bad_url_says_what_is_wrong(url, message):
    with pytest.raises(ImproperlyConfigured, match=message):
        parse_broker(url)


def test_a_bad_url_error_does_not_echo_the_password():
    with pytest.raises(ImproperlyConfigured) as caught:
        parse_broker("amqp://guest:hunter2@h:5672")
    assert "hunter2" not in str(caught.value)


def test_groups_of_an_unreachable_broker_say_since_when(lag_db, project):
    source = "redis://10.0.0.9:6379/0"
    reading = samples.Reading("redis", "orders", "billing", lag=3, end_offset=9)
    samples.store_sync(project.id, [reading], source)
    assert group_item(project.id, "redis", "orders", "billing")["error"] is None
    import psycopg

    from collector.db import conninfo

    with psycopg.connect(conninfo()) as conn, conn.cursor() as cursor:
        samples.broker_failed(cursor, project.id, source, "redis", "ConnectionError: refused")
    item = group_item(project.id, "redis", "orders", "billing")
    assert item["error"].startswith("unreachable since 20")
    assert "ConnectionError: refused" in item["error"]
    assert item["lag"] == 3  # the last known figures stay visible


async def test_the_worker_loop_polls_configured_brokers_until_stopped(lag_db, project, settings):
    client = redis.Redis.from_url("redis://127.0.0.1:6379/0")
    key = f"es-lag-{uuid.uuid4().hex[:10]}"
    client.xgroup_create(key, "mailer", id="$", mkstream=True)
    client.xadd(key, {"n": "1"})
    settings.BROKERS = [f"redis://127.0.0.1:6379/0?project={project.slug}"]
    stop = asyncio.Event()
    task = asyncio.create_task(run(stop, interval=0.2))
    try:
        for _ in range(50):
            await asyncio.sleep(0.1)
            if await asyncio.to_thread(group_item, project.id, "redis", key, "mailer"):
                break
        item = await asyncio.to_thread(group_item, project.id, "redis", key, "mailer")
        assert item["lag"] == 1
        # a deleted stream's group disappears on the next poll
        client.delete(key)
        for _ in range(50):
            await asyncio.sleep(0.1)
            items = await asyncio.to_thread(read_current, project.id)
            if not any(i["channel"] == key for i in items):
                break
        assert not any(i["channel"] == key for i in items)
    finally:
        stop.set()
        await asyncio.wait_for(task, 5)
        client.delete(key)
        client.close()


async def test_a_slow_broker_does_not_hold_back_the_others(lag_db, project, settings):
    import time

    client = redis.Redis.from_url("redis://127.0.0.1:6379/0")
    key = f"es-lag-{uuid.uuid4().hex[:10]}"
    client.xgroup_create(key, "mailer", id="$", mkstream=True)
    client.xadd(key, {"n": "1"})

    # A broker that accepts connections and never answers.
    async def silent(reader, writer):
        await asyncio.sleep(60)

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    settings.BROKER_TIMEOUT_SECONDS = 10  # the slow one holds its poll for up to 30 s
    settings.BROKERS = [
        f"prometheus+http://127.0.0.1:{port}/metrics?project={project.slug}",
        f"redis://127.0.0.1:6379/0?project={project.slug}",
    ]

    def polls() -> int:
        import psycopg

        from collector.db import conninfo

        with psycopg.connect(conninfo()) as conn:
            return conn.execute(
                "SELECT count(*) FROM brokers_lagsample WHERE channel = %s", [key]
            ).fetchone()[0]

    stop = asyncio.Event()
    task = asyncio.create_task(run(stop, interval=0.2))
    try:
        await asyncio.sleep(2.0)
        # the healthy broker kept its 0.2 s cadence while the other hung
        assert await asyncio.to_thread(polls) >= 4
    finally:
        stop.set()
        started = time.monotonic()
        await asyncio.wait_for(task, 5)
        assert time.monotonic() - started < 2  # stopping does not wait for the hung poll
        server.close()
        client.delete(key)
        client.close()


@pytest.fixture
def exporter(scrape_target):
    """kafka_exporter's captured output, served (see `scrape_target`)."""
    scrape_target.text = (FIXTURES / "kafka_exporter.txt").read_text()
    return scrape_target


async def test_a_scraped_kafka_exporter_gives_the_lag_it_reports(lag_db, project, exporter):
    from collector.brokers.poller import poll_broker

    assert await poll_broker(parse_broker(f"prometheus+{exporter.url}/metrics"), project.id)
    billing = await asyncio.to_thread(group_item, project.id, "kafka", "orders", "billing")
    assert billing["lag"] == 300
    assert [(p["partition"], p["lag"]) for p in billing["partitions"]] == [
        ("0", 300),
        ("1", 0),
        ("2", None),
    ]
    # a wrong path is an unreachable broker with the HTTP status, not a crash
    assert not await poll_broker(parse_broker(f"prometheus+{exporter.url}/nope"), project.id)


END_0 = 'kafka_topic_partition_current_offset{partition="0",topic="orders"} 1500'


def _growing(text: str):
    """A poll that first moves partition 0's end offset on by 50 in the served `text`."""
    end = 1500

    def advance():
        nonlocal end
        end += 50
        return end, text.replace(END_0, END_0.replace("1500", str(end)))

    return advance


async def test_a_kafka_group_whose_members_left_is_kept_and_turns_stopped(
    lag_db, project, exporter, client, viewer
):
    from collector.brokers.poller import poll_broker

    broker = parse_broker(f"prometheus+{exporter.url}/metrics")
    assert await poll_broker(broker, project.id, window=1.0)
    # Its members leave: kafka_exporter lists billing no more, the topic keeps growing.
    unlisted = "\n".join(
        line for line in exporter.text.splitlines() if 'consumergroup="billing"' not in line
    )
    advance, lags = _growing(unlisted), []

    async def poll():
        end, exporter.text = advance()
        assert await poll_broker(broker, project.id, window=1.0)
        lags.append((end, group_item(project.id, "kafka", "orders", "billing")["lag"]))

    def stopped():
        item = group_item(project.id, "kafka", "orders", "billing")
        return item if item["status"] == "stopped" else None

    item = await poll_until(poll, stopped)
    # held at its last committed offset (1200 of partition 0; 900 of 900 on 1)
    assert all(lag == end - 1200 for end, lag in lags)
    assert lags[-1][1] > lags[0][1]
    assert "no progress and no consumer activity" in item["reason"]
    assert [p["partition"] for p in item["partitions"]] == ["0", "1"]
    assert item["reported_at"] < item["updated_at"]
    await asyncio.to_thread(client.force_login, viewer)
    page = (await asyncio.to_thread(client.get, "/lag/kafka/orders/billing/")).content.decode()
    assert 'id="group-unlisted">Not listed by the broker since' in page
    # Once its topic is gone too, so is the group.
    exporter.text = "\n".join(
        line for line in unlisted.splitlines() if 'topic="orders"' not in line
    )
    assert await poll_broker(broker, project.id, window=1.0)
    assert group_item(project.id, "kafka", "orders", "billing") is None


async def test_a_kafka_group_with_members_that_does_not_commit_is_stalled(
    lag_db, project, exporter
):
    from collector.brokers.poller import poll_broker

    broker = parse_broker(f"prometheus+{exporter.url}/metrics")
    advance = _growing(exporter.text)

    async def poll():
        _, exporter.text = advance()
        assert await poll_broker(broker, project.id, window=1.0)

    def stalled():
        item = group_item(project.id, "kafka", "orders", "billing")
        return item if item["status"] == "stalled" else None

    item = await poll_until(poll, stalled)
    # two members are connected; the committed offset stays at 1200
    assert "consumer active" in item["reason"] and "stayed at 1200" in item["reason"]
