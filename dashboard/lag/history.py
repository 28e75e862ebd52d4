"""Lag over time for charts: the samples of one group, bucketed to a few hundred points."""

import datetime as dt

from django.db import connection

# Charts stay readable (and cheap to send) at about this many points.
TARGET_POINTS = 240
SPARK_WINDOW = dt.timedelta(hours=1)
SPARK_POINTS = 60


def _bucket_seconds(since: dt.datetime, until: dt.datetime, points: int) -> int:
    return max(5, int((until - since).total_seconds() // points) or 1)


def group_series(
    project_id: int,
    system: str,
    channel: str,
    group: str,
    since: dt.datetime,
    until: dt.datetime,
    partition: str | None = None,
    points: int = TARGET_POINTS,
    namespace: str = "",
) -> dict:
    """{"t": [unix s], "lag": [messages], "lag_seconds": [s]} for one group (or partition).

    Within a bucket each partition counts with its largest lag; the group's
    lag is their sum and its time lag the largest, as for the present state.
    """
    bucket = _bucket_seconds(since, until, points)
    sql = """
        SELECT b, sum(lag)::bigint, max(lag_seconds)
        FROM (
            SELECT date_bin(make_interval(secs => %s), time, TIMESTAMPTZ 'epoch') AS b,
                   partition, max(lag) AS lag, max(lag_seconds) AS lag_seconds
            FROM brokers_lagsample
            WHERE project_id = %s AND system = %s AND channel = %s AND consumer_group = %s
              AND namespace = %s AND time >= %s AND time < %s {partition}
            GROUP BY 1, 2
        ) per_partition
        GROUP BY b ORDER BY b
    """
    params = [bucket, project_id, system, channel, group, namespace, since, until]
    if partition is not None:
        params.append(partition)
    with connection.cursor() as cursor:
        cursor.execute(
            sql.format(partition="AND partition = %s" if partition is not None else ""), params
        )
        rows = cursor.fetchall()
    return {
        "t": [int(b.timestamp()) for b, _, _ in rows],
        "lag": [lag for _, lag, _ in rows],
        "lag_seconds": [round(s, 3) if s is not None else None for _, _, s in rows],
    }


def sparklines(project_id: int, now: dt.datetime | None = None) -> dict[tuple, list]:
    """The last hour of lag per (system, namespace, channel, group): [[unix s…], [messages…]]."""
    now = now or dt.datetime.now(dt.UTC)
    since = now - SPARK_WINDOW
    bucket = _bucket_seconds(since, now, SPARK_POINTS)
    with connection.cursor() as cursor:
        cursor.execute(
            """
            SELECT system, namespace, channel, consumer_group, b, sum(lag)::bigint
            FROM (
                SELECT system, namespace, channel, consumer_group, partition,
                       date_bin(make_interval(secs => %s), time, TIMESTAMPTZ 'epoch') AS b,
                       max(lag) AS lag
                FROM brokers_lagsample
                WHERE project_id = %s AND time >= %s AND time <= %s
                GROUP BY 1, 2, 3, 4, 5, 6
            ) per_partition
            GROUP BY 1, 2, 3, 4, 5 ORDER BY 5
            """,
            [bucket, project_id, since, now],
        )
        rows = cursor.fetchall()
    series: dict[tuple, list] = {}
    for system, namespace, channel, group, b, lag in rows:
        times, values = series.setdefault((system, namespace, channel, group), [[], []])
        times.append(int(b.timestamp()))
        values.append(lag)
    return series
