"""Partition upkeep and retention, run by the worker leader every few minutes.

- creates today's and the next two days' partitions ahead of time, so the
  writer rarely runs DDL on the hot path;
- drops raw partitions older than EVENTSCOPE_RETENTION_DAYS whole (cheap, no
  bloat, unlike DELETE);
- deletes flow rollups older than EVENTSCOPE_ROLLUP_RETENTION_DAYS (a small
  table: about one row per edge per minute).
"""

import asyncio
import contextlib
import datetime as dt
import logging
from dataclasses import dataclass

import psycopg
from django.conf import settings

from collector import partitions
from collector.db import conninfo

log = logging.getLogger(__name__)

INTERVAL_SECONDS = 300
DAYS_AHEAD = 2


@dataclass
class Report:
    created_days: list[dt.date]
    dropped: list[str]
    rollups_deleted: int


def maintain(cursor, today: dt.date | None = None) -> Report:
    """One pass of partition creation and retention, in the cursor's transaction."""
    today = today or dt.datetime.now(dt.UTC).date()
    ahead = [today + dt.timedelta(days=n) for n in range(DAYS_AHEAD + 1)]
    partitions.ensure(cursor, ahead)
    # Rows older than the window are refused by the writer, so day `cutoff`
    # is the oldest that may hold data; everything before it goes.
    cutoff = today - dt.timedelta(days=settings.RETENTION_DAYS)
    dropped = partitions.drop_older_than(cursor, cutoff)
    rollup_cutoff = dt.datetime.combine(
        today - dt.timedelta(days=settings.ROLLUP_RETENTION_DAYS), dt.time(), dt.UTC
    )
    cursor.execute("DELETE FROM collector_flowrollup WHERE minute < %s", (rollup_cutoff,))
    deleted = cursor.rowcount
    cursor.execute("DELETE FROM collector_failurerollup WHERE minute < %s", (rollup_cutoff,))
    return Report(ahead, dropped, deleted + cursor.rowcount)


def run_once(today: dt.date | None = None) -> Report:
    """Connect, run one pass, commit."""
    with psycopg.connect(conninfo(), connect_timeout=10) as conn, conn.cursor() as cursor:
        report = maintain(cursor, today)
    if report.dropped or report.rollups_deleted:
        log.info(
            "retention: dropped %d partition(s), deleted %d rollup row(s)",
            len(report.dropped),
            report.rollups_deleted,
        )
    return report


async def run(stop: asyncio.Event, interval: float = INTERVAL_SECONDS) -> None:
    """The worker loop: one pass now, then every `interval` seconds until `stop`."""
    while not stop.is_set():
        try:
            await asyncio.to_thread(run_once)
        except psycopg.Error as exc:
            log.warning("maintenance pass failed, retrying later: %s", exc)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), interval)
