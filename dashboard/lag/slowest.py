"""The slowest consumer-side stages of one channel and consumer group: where a
lagging group spends its time, each with a link to its trace."""

import datetime as dt

from django.db import connection

from dashboard.links import event_url, trace_url

LIMIT = 20
CONSUMER_STAGES = ("processed", "failed")


def slowest_stages(
    project_id: int,
    system: str,
    channel: str,
    group: str,
    since: dt.datetime,
    until: dt.datetime,
    limit: int = LIMIT,
) -> list[dict]:
    """The `limit` longest processed/failed stages of (channel, group) in [since, until).

    [{"time", "service", "stage", "duration_ms", "e2e_ms", "error", "trace_id",
    "url"}], longest first; `url` opens the stage's trace (or its event when
    it has no trace). A stage that names no messaging system (a CloudEvent
    without essystem) still counts for the channel.
    """
    with connection.cursor() as cursor:
        cursor.execute(
            """
            SELECT time, service, stage, duration_ms, e2e_ms, error, encode(trace_id, 'hex'),
                   event_id
            FROM collector_stage
            WHERE project_id = %s AND time >= %s AND time < %s
              AND role = 'consumer' AND stage = ANY(%s)
              AND channel = %s AND consumer_group = %s AND system IN (%s, '')
              AND duration_ms IS NOT NULL
            ORDER BY duration_ms DESC, time DESC
            LIMIT %s
            """,
            [project_id, since, until, list(CONSUMER_STAGES), channel, group, system, limit],
        )
        rows = cursor.fetchall()
    stages = []
    for time, service, stage, duration_ms, e2e_ms, error, trace_id, event_id in rows:
        if trace_id:
            url = trace_url(trace_id)
        elif event_id:
            url = event_url(event_id)
        else:
            url = None
        stages.append(
            {
                "time": time,
                "service": service,
                "stage": stage,
                "duration_ms": duration_ms,
                "e2e_ms": e2e_ms,
                "error": error,
                "trace_id": trace_id,
                "url": url,
            }
        )
    return stages
