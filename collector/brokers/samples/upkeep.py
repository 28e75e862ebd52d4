"""Upkeep of the stored samples: retention and thinning."""

import datetime as dt


def prune(cursor, older_than: dt.datetime, batch: int = 50_000) -> int:
    """Delete samples older than `older_than`, in bounded batches; rows deleted."""
    total = 0
    while True:
        cursor.execute(
            """
            DELETE FROM brokers_lagsample WHERE id IN (
                SELECT id FROM brokers_lagsample WHERE time < %s LIMIT %s)
            """,
            [older_than, batch],
        )
        total += cursor.rowcount
        if cursor.rowcount < batch:
            return total


def thin(cursor, since: dt.datetime, until: dt.datetime, every_seconds: int = 60) -> int:
    """Keep only the newest sample per partition per `every_seconds` in [since, until).

    Old history is read for charts over days and for interpolation across
    long backlogs, neither of which needs every poll; thinning keeps a week
    of samples about as large as a day of them. Rows deleted.
    """
    cursor.execute(
        """
        DELETE FROM brokers_lagsample s USING (
            SELECT id, row_number() OVER (
                PARTITION BY project_id, system, namespace, channel, consumer_group, partition,
                             date_bin(make_interval(secs => %s), time, TIMESTAMPTZ 'epoch')
                ORDER BY time DESC
            ) AS n
            FROM brokers_lagsample WHERE time >= %s AND time < %s
        ) extra
        WHERE s.id = extra.id AND extra.n > 1
        """,
        [every_seconds, since, until],
    )
    return cursor.rowcount
