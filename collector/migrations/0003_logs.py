"""OTLP log records, partitioned by day like the other raw telemetry.

Logs matter here for one reason: a consumer's error log carries the trace
and span of the event it failed on, so the journey view can show it.
"""

from django.db import migrations

SQL = """
CREATE TABLE collector_log (
    project_id       integer     NOT NULL,
    time             timestamptz NOT NULL,
    dedupe_key       bytea       NOT NULL,
    service          text        NOT NULL,
    severity_number  smallint    NOT NULL DEFAULT 0,
    severity_text    text,
    body             text,
    trace_id         bytea,
    span_id          bytea,
    attributes       jsonb,
    PRIMARY KEY (project_id, dedupe_key, time)
) PARTITION BY RANGE (time);
CREATE INDEX collector_log_trace ON collector_log (project_id, trace_id) WHERE trace_id IS NOT NULL;
"""


class Migration(migrations.Migration):
    dependencies = [("collector", "0002_telemetry")]

    operations = [migrations.RunSQL(SQL, "DROP TABLE collector_log;")]
