"""Consume stages still waiting for their publish, indexed by trace.

When a publish is stored, the writer looks for consume stages of its trace
that were stored before it and have no end-to-end latency yet (see
collector.writer.joins). Probed through the index of all stages by trace,
each publish read the heap for its own stage and for every consumer already
joined; this index holds only the consume stages that wait, which are few
when producers are exported before their consumers and at most every
consume stage otherwise, so the probe of a publish whose consumers are all
joined reads one index page and no heap. Setting a stage's latency takes it
out of the index.
"""

from django.db import migrations

SQL = """
CREATE INDEX collector_stage_unsettled ON collector_stage (project_id, trace_id)
    WHERE role = 'consumer' AND e2e_ms IS NULL AND linked_trace_ids IS NOT NULL;
"""

REVERSE = "DROP INDEX collector_stage_unsettled;"


class Migration(migrations.Migration):
    dependencies = [("collector", "0008_failure_group_index")]

    operations = [migrations.RunSQL(SQL, REVERSE)]
