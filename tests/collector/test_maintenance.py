"""Partition upkeep and retention against the real PostgreSQL."""

import asyncio
import datetime as dt

import psycopg
import pytest
from django.db import connection

from collector import maintenance, partitions
from collector.db import conninfo


def _days(table="collector_stage"):
    with connection.cursor() as cursor:
        return set(partitions.existing(cursor, table))


def _days_own_connection():
    # Django connections opened in worker threads would outlive the test database.
    with psycopg.connect(conninfo()) as conn, conn.cursor() as cursor:
        return set(partitions.existing(cursor, "collector_stage"))


def _rollup(minute):
    with connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO collector_flowrollup (project_id, minute, source, target, kind, "
            "duration_hist, e2e_hist) VALUES (1, %s, 'service:a', 'channel:k:o', 'publish', "
            "'{}', '{}')",
            (minute,),
        )
        cursor.execute(
            "INSERT INTO collector_failurerollup VALUES (1, %s, '\\x01', 'a', 'o', 'k', '', "
            "'boom', 1, 0, %s, %s)",
            (minute, minute, minute),
        )


def test_it_creates_partitions_ahead_and_drops_expired_days(telemetry_db, settings):
    settings.RETENTION_DAYS = 7
    settings.ROLLUP_RETENTION_DAYS = 90
    today = dt.date(2031, 3, 20)
    with connection.cursor() as cursor:
        partitions.ensure(cursor, [dt.date(2031, 3, 12), dt.date(2031, 3, 13)])
        cursor.execute(
            "INSERT INTO collector_stage (project_id, time, dedupe_key, stage, role, service, "
            "origin) VALUES (1, '2031-03-13T08:00:00Z', '\\x01', 'published', 'producer', 'a', 1)"
        )
    _rollup(dt.datetime(2030, 12, 1, tzinfo=dt.UTC))  # older than 90 days
    _rollup(dt.datetime(2031, 3, 1, tzinfo=dt.UTC))

    report = maintenance.run_once(today)

    days = _days()
    assert {dt.date(2031, 3, 20), dt.date(2031, 3, 21), dt.date(2031, 3, 22)} <= days
    assert dt.date(2031, 3, 12) not in days  # 8 days old: dropped whole
    assert dt.date(2031, 3, 13) in days  # 7 days old: still inside the window
    assert "collector_span_p20310312" in report.dropped
    assert report.rollups_deleted == 2  # a flow and a failure rollup row
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM collector_stage")
        assert cursor.fetchone()[0] == 1
        cursor.execute("SELECT count(*) FROM collector_flowrollup")
        assert cursor.fetchone()[0] == 1
        cursor.execute("SELECT count(*) FROM collector_failurerollup")
        assert cursor.fetchone()[0] == 1
        for day in days:
            if day >= dt.date(2031, 3, 12):
                for table in partitions.PARTITIONED:
                    cursor.execute(
                        f'DROP TABLE IF EXISTS "{partitions.partition_name(table, day)}"'
                    )


@pytest.mark.asyncio
async def test_the_loop_runs_a_pass_and_stops_when_asked(telemetry_db):
    stop = asyncio.Event()
    task = asyncio.create_task(maintenance.run(stop, interval=60))
    today = dt.datetime.now(dt.UTC).date()
    for _ in range(100):
        if today + dt.timedelta(days=2) in await asyncio.to_thread(_days_own_connection):
            break
        await asyncio.sleep(0.05)
    else:
        raise AssertionError("the maintenance pass did not create the partitions ahead")
    stop.set()
    await asyncio.wait_for(task, 5)
