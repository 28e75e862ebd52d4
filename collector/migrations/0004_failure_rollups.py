"""Per-minute counts of failed and dead-lettered events per (service, channel,
system, consumer group, error), kept by the writer like the flow rollups.

Failure groups over a week would otherwise fold every failed stage of the
week (each on its own heap page); this reads one row per group and minute.
The group is keyed by a hash of its names, so long names never make the key
too large for the index. Existing failures are counted in once, here.
"""

from django.db import migrations

# The group key is md5 over the length-prefixed names; collector.rollups
# computes the same in Python, so rows from here and from the writer add up.
GROUP_KEY = (
    "decode(md5(length(service)::text || ':' || service || length(channel)::text || ':' "
    "|| channel || length(system)::text || ':' || system || length(consumer_group)::text "
    "|| ':' || consumer_group || length(coalesce(error, ''))::text || ':' "
    "|| coalesce(error, '')), 'hex')"
)

# Counts every failure stored in the stages table in (also the benchmark's fill).
BACKFILL = f"""
INSERT INTO collector_failurerollup
SELECT project_id, date_trunc('minute', time), {GROUP_KEY}, service, channel, system,
       consumer_group, coalesce(error, ''), count(*),
       count(*) FILTER (WHERE stage = 'deadlettered'), min(time), max(time)
FROM collector_stage
WHERE stage IN ('failed', 'deadlettered')
GROUP BY 1, 2, 3, 4, 5, 6, 7, 8;
"""

SQL = f"""
CREATE TABLE collector_failurerollup (
    project_id      integer     NOT NULL,
    minute          timestamptz NOT NULL,
    group_key       bytea       NOT NULL,
    service         text        NOT NULL,
    channel         text        NOT NULL,
    system          text        NOT NULL,
    consumer_group  text        NOT NULL,
    error           text        NOT NULL,
    count           bigint      NOT NULL DEFAULT 0,
    deadlettered    bigint      NOT NULL DEFAULT 0,
    first_time      timestamptz NOT NULL,
    last_time       timestamptz NOT NULL,
    PRIMARY KEY (project_id, minute, group_key)
);
{BACKFILL}"""


class Migration(migrations.Migration):
    dependencies = [("collector", "0003_logs")]

    operations = [migrations.RunSQL(SQL, "DROP TABLE collector_failurerollup;")]
