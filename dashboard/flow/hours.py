"""Hourly flow rollups, compacted from the per-minute rows by the worker.

A week-long flow graph summed from per-minute rollups reads ~10,000 rows per
edge (over a second for a hundred edges); from hourly rows it reads ~170.
The worker sums every complete hour into dashboard_flowhour and records how
far it got (`through`). Readers (dashboard.flow.queries) take whole hours
before `through` from here and the rest, at most a little over an hour at
each end of the window, from the minute rows, so the graph is always exact
up to the minute.

Late data: OTLP exporters retry for minutes, so an hour is compacted only
once it ended LATE ago, and the last REFRESH of compacted hours is summed
again on every pass. Rows arriving later than that for an hour already
compacted are in the minute rollups but not the hourly sum.
"""

import asyncio
import datetime as dt
import logging

from django.conf import settings

from collector import histogram

log = logging.getLogger(__name__)

LATE = dt.timedelta(minutes=5)
REFRESH = dt.timedelta(hours=1)
INTERVAL_SECONDS = 60


def _bucket_sums(column: str) -> str:
    return ", ".join(f"sum({column}[{i}])" for i in range(1, histogram.SIZE + 1))


COMPACT_SQL = f"""
INSERT INTO dashboard_flowhour (project_id, hour, source, target, kind, consumer_group, count,
    received, errors, deadlettered, retries, duration_hist, e2e_hist)
SELECT project_id, date_trunc('hour', minute), source, target, kind, consumer_group,
       sum(count), sum(received), sum(errors), sum(deadlettered), sum(retries),
       ARRAY[{_bucket_sums("duration_hist")}]::bigint[],
       ARRAY[{_bucket_sums("e2e_hist")}]::bigint[]
FROM collector_flowrollup
WHERE minute >= %s AND minute < %s
GROUP BY 1, 2, 3, 4, 5, 6
"""


def floor_hour(moment: dt.datetime) -> dt.datetime:
    return moment.replace(minute=0, second=0, microsecond=0)


def compact(cursor, now: dt.datetime | None = None) -> tuple[dt.datetime, dt.datetime] | None:
    """Sum the complete hours not yet compacted (and the last REFRESH again).

    Runs in the caller's transaction (a Django or psycopg cursor); returns
    the (from, to) range it summed, or None when there was nothing to do.
    """
    now = now or dt.datetime.now(dt.UTC)
    upto = floor_hour(now - LATE)
    cursor.execute("SELECT through FROM dashboard_flowhour_state WHERE id = 1 FOR UPDATE")
    row = cursor.fetchone()
    if row is not None:
        start = min(row[0], upto) - REFRESH
    else:
        cursor.execute("SELECT min(minute) FROM collector_flowrollup")
        oldest = cursor.fetchone()[0]
        start = floor_hour(oldest) if oldest is not None else upto
    if start >= upto and row is not None:
        return None
    cursor.execute("DELETE FROM dashboard_flowhour WHERE hour >= %s AND hour < %s", [start, upto])
    cursor.execute(COMPACT_SQL, [start, upto])
    cursor.execute(
        "DELETE FROM dashboard_flowhour WHERE hour < %s",
        [now - dt.timedelta(days=settings.ROLLUP_RETENTION_DAYS)],
    )
    cursor.execute(
        """INSERT INTO dashboard_flowhour_state (id, through) VALUES (1, %s)
           ON CONFLICT (id) DO UPDATE SET through = excluded.through""",
        [upto],
    )
    return start, upto


def compacted_through(cursor) -> dt.datetime | None:
    """The hour before which dashboard_flowhour is complete, or None if never compacted."""
    cursor.execute("SELECT through FROM dashboard_flowhour_state WHERE id = 1")
    row = cursor.fetchone()
    return row[0] if row else None


def compact_now() -> tuple[dt.datetime, dt.datetime] | None:
    """One compaction pass in its own transaction (worker, bench, tests)."""
    from django.db import connection, transaction

    with transaction.atomic(), connection.cursor() as cursor:
        return compact(cursor)


def _compact_in_thread() -> tuple[dt.datetime, dt.datetime] | None:
    from django.db import connection

    try:
        return compact_now()
    finally:
        # Hand the pooled connection back: this thread idles for a minute.
        connection.close()


async def run(stop: asyncio.Event) -> None:
    """Worker loop: compact once a minute until `stop` is set."""
    from asgiref.sync import sync_to_async

    while not stop.is_set():
        try:
            done = await sync_to_async(_compact_in_thread, thread_sensitive=False)()
            if done:
                log.debug("flow hours compacted %s .. %s", *done)
        except Exception:
            log.exception("flow hour compaction failed; retrying in %ss", INTERVAL_SECONDS)
        try:
            await asyncio.wait_for(stop.wait(), INTERVAL_SECONDS)
        except TimeoutError:
            pass
