"""Storing readings: lag filled in, time lag chosen, state per group, hints, retention."""

import datetime as dt

import psycopg
import pytest

from collector import notify
from collector.brokers import samples
from collector.brokers.offsets import rabbitmq_reading
from collector.brokers.samples import Reading
from collector.db import conninfo
from tests.brokers.conftest import group_item

T0 = dt.datetime.now(dt.UTC).replace(microsecond=0) - dt.timedelta(minutes=5)


def at(seconds: float) -> dt.datetime:
    return T0 + dt.timedelta(seconds=seconds)


def store(project, readings, seconds, **kwargs):
    for reading in readings:
        reading.time = at(seconds).timestamp()
    return samples.store_sync(project.id, readings, "test", now=at(seconds), **kwargs)


def test_lag_comes_from_offsets_and_time_lag_is_interpolated(lag_db, project):
    # 10 messages/s written; the consumer sits at offset 1050.
    for second, end in ((0, 1000), (10, 1100), (20, 1200)):
        (state,) = store(project, [Reading("kafka", "t", "g", "0", end, 1050)], second)
    assert state["lag"] == 150
    # offset 1050 was the end offset at t=5: 15 s before the last sample
    assert state["lag_seconds"] == pytest.approx(15.0)
    assert (state["lag_seconds_method"], state["estimated"]) == ("interpolated", False)


def test_the_first_poll_does_not_claim_zero_seconds_behind(lag_db, project):
    (first,) = store(project, [Reading("kafka", "t", "g", "0", 1000, 10)], 0)
    assert first["lag"] == 990
    assert (first["lag_seconds"], first["lag_seconds_method"]) == (None, None)
    assert group_item(project.id, "kafka", "t", "g")["lag_seconds"] is None
    (second,) = store(project, [Reading("kafka", "t", "g", "0", 1100, 20)], 10)
    assert second["lag_seconds"] > 0 and second["estimated"]


def test_a_depth_only_queue_gets_a_drain_estimate(lag_db, project):
    store(project, [rabbitmq_reading("/", "q", 100, 0, consumers=1, acked=0)], 0)
    (state,) = store(project, [rabbitmq_reading("/", "q", 80, 0, consumers=1, acked=50)], 10)
    assert state["consume_rate"] == pytest.approx(5.0)
    assert state["lag_seconds"] == pytest.approx(16.0)  # 80 left at 5/s
    assert (state["lag_seconds_method"], state["estimated"]) == ("drain_estimate", True)


def test_a_restarted_statistics_counter_is_not_a_rewind(lag_db, project):
    store(project, [rabbitmq_reading("/", "q", 5, 0, consumers=1, acked=900)], 0)
    store(project, [rabbitmq_reading("/", "q", 5, 0, consumers=1, acked=950)], 10)
    # the broker restarted: its ack counter starts again from zero, with
    # messages still waiting (a caught-up queue would be ok whatever the counter)
    (state,) = store(project, [rabbitmq_reading("/", "q", 5, 0, consumers=1, acked=3)], 20)
    assert state["status"] == "ok"
    assert "went back" not in state["partitions"][0]["reason"]
    (kafka,) = store(project, [Reading("kafka", "t", "g", "0", 100, 90)], 0)
    (kafka,) = store(project, [Reading("kafka", "t", "g", "0", 120, 40)], 10)
    assert kafka["status"] == "rewind"  # offsets going back are a rewind


def _hand_made_history(project, now, seconds_ago, end, committed):
    """Insert one sample per second in `seconds_ago` (a range), figures from the age k."""
    with psycopg.connect(conninfo()) as conn, conn.cursor() as cursor:
        cursor.executemany(
            """
            INSERT INTO brokers_lagsample (project_id, time, system, channel, consumer_group,
                partition, end_offset, committed_offset, lag, lag_seconds_method, estimated,
                source)
            VALUES (%s, %s, 'kafka', 't', 'g', '0', %s, %s, %s, '', false, 'test')
            """,
            [
                (
                    project.id,
                    now - dt.timedelta(seconds=k),
                    end(k),
                    committed(k),
                    end(k) - committed(k),
                )
                for k in seconds_ago
            ],
        )


def test_a_long_window_sees_an_offset_that_stopped_before_it(lag_db, project):
    # Polled every second for 40 minutes; the consumer kept up until 2000 s
    # ago and has not moved since. The 30-minute window holds 1800 samples,
    # more than are read one by one: the rest of it is thinned, not cut off.
    now = dt.datetime.now(dt.UTC)
    end = lambda k: 100_000 - k  # noqa: E731 - one message a second
    committed = lambda k: end(k) - 5 if k > 2000 else end(2001) - 5  # noqa: E731
    _hand_made_history(project, now, range(2400, 0, -1), end, committed)
    reading = Reading("kafka", "t", "g", "0", end(0), committed(0), time=now.timestamp())
    (state,) = samples.store_sync(project.id, [reading], "test", now=now, window=1800)
    assert state["status"] == "stopped", state["reason"]
    assert "no progress and no consumer activity for 33m" in state["reason"]


def test_a_backlog_older_than_the_window_is_interpolated_not_guessed(lag_db, project):
    # 15-second polls for two hours; the consumer sits where the log ended 90 minutes ago.
    now = dt.datetime.now(dt.UTC)
    end = lambda k: 100_000 - k  # noqa: E731
    committed = lambda k: end(5400)  # noqa: E731
    _hand_made_history(project, now, range(7200, 0, -15), end, committed)
    reading = Reading("kafka", "t", "g", "0", end(0), committed(0), time=now.timestamp())
    (state,) = samples.store_sync(project.id, [reading], "test", now=now)
    assert state["lag_seconds"] == pytest.approx(5400, abs=1)
    assert (state["lag_seconds_method"], state["estimated"]) == ("interpolated", False)


def test_a_complete_poll_removes_groups_that_are_gone(lag_db, project):
    store(project, [Reading("redis", "a", "g", lag=1), Reading("redis", "b", "g", lag=2)], 0)
    store(project, [Reading("redis", "a", "g", lag=1)], 10, complete=True)
    assert group_item(project.id, "redis", "a", "g") is not None
    assert group_item(project.id, "redis", "b", "g") is None


def test_storing_sends_one_lag_hint_after_commit(lag_db, project):
    with psycopg.connect(conninfo(), autocommit=True) as listener:
        listener.execute(f"LISTEN {notify.CHANNEL}")
        store(project, [Reading("nats", "S", "c", lag=3)], 0)
        hints = [n.payload for n in listener.notifies(timeout=2, stop_after=1)]
    assert hints == [notify.payload(project.id, notify.LAG)]


def test_old_samples_are_pruned_in_batches(lag_db, project):
    for second in range(5):
        store(project, [Reading("nats", "S", "c", lag=second)], second)
    with psycopg.connect(conninfo()) as conn, conn.cursor() as cursor:
        deleted = samples.prune(cursor, at(3), batch=2)
        left = cursor.execute("SELECT count(*) FROM brokers_lagsample").fetchone()[0]
    assert (deleted, left) == (3, 2)


def test_old_history_is_thinned_to_one_sample_a_minute(lag_db, project):
    for second in range(0, 180, 15):  # 12 polls over three minutes
        store(project, [Reading("nats", "S", "c", lag=second)], second)
    start = T0 - dt.timedelta(seconds=T0.timestamp() % 60)
    with psycopg.connect(conninfo()) as conn, conn.cursor() as cursor:
        samples.thin(cursor, start, start + dt.timedelta(minutes=10))
        kept = cursor.execute(
            "SELECT extract(epoch FROM time)::bigint / 60 FROM brokers_lagsample ORDER BY time"
        ).fetchall()
    minutes = [m for (m,) in kept]
    assert len(minutes) == len(set(minutes)) in (3, 4)
