"""Telemetry tables: raw spans, stages and envelopes partitioned by day, and
the per-minute flow rollups.

Hand-written SQL because Django cannot declare partitioned tables. Partitions
are created by collector.partitions (on demand by the writer, ahead of time
by the worker) and dropped whole by retention.
"""

from django.db import migrations

SQL = """
-- Element-wise sum of two histograms; the rollup upsert adds bucket counts.
CREATE FUNCTION es_array_add(a bigint[], b bigint[]) RETURNS bigint[]
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT coalesce(array_agg(coalesce(x, 0) + coalesce(y, 0) ORDER BY n), '{}')
    FROM unnest(a, b) WITH ORDINALITY AS t(x, y, n)
$$;

CREATE TABLE collector_span (
    project_id      integer     NOT NULL,
    trace_id        bytea       NOT NULL,
    span_id         bytea       NOT NULL,
    parent_span_id  bytea,
    start_time      timestamptz NOT NULL,
    duration_ns     bigint      NOT NULL,
    service         text        NOT NULL,
    name            text        NOT NULL,
    kind            smallint    NOT NULL,
    status_code     smallint    NOT NULL,
    status_message  text,
    attributes      jsonb,
    resource        jsonb,
    events          jsonb,
    links           jsonb,
    scope           text,
    -- The key dedupes retried exports (OTLP is at-least-once) and serves
    -- "all spans of a trace" through its (project_id, trace_id) prefix.
    PRIMARY KEY (project_id, trace_id, span_id, start_time)
) PARTITION BY RANGE (start_time);

CREATE TABLE collector_stage (
    project_id        integer     NOT NULL,
    time              timestamptz NOT NULL,
    dedupe_key        bytea       NOT NULL,
    stage             text        NOT NULL,
    role              text        NOT NULL,
    system            text        NOT NULL DEFAULT '',
    channel           text        NOT NULL DEFAULT '',
    service           text        NOT NULL,
    consumer_group    text        NOT NULL DEFAULT '',
    trace_id          bytea,
    span_id           bytea,
    parent_span_id    bytea,
    linked_trace_ids  bytea[],
    linked_span_ids   bytea[],
    event_id          text,
    event_source      text,
    event_type        text,
    error             text,
    duration_ms       double precision,
    e2e_ms            double precision,
    origin            smallint    NOT NULL,
    PRIMARY KEY (project_id, dedupe_key, time)
) PARTITION BY RANGE (time);
CREATE INDEX collector_stage_trace ON collector_stage (project_id, trace_id)
    WHERE trace_id IS NOT NULL;
CREATE INDEX collector_stage_event ON collector_stage (project_id, event_id)
    WHERE event_id IS NOT NULL;
-- Consumers joined to producers by span links (batch receives) are found
-- from the producer's trace id.
CREATE INDEX collector_stage_linked ON collector_stage USING gin (linked_trace_ids)
    WHERE linked_trace_ids IS NOT NULL;
CREATE INDEX collector_stage_failures ON collector_stage (project_id, time DESC)
    WHERE stage IN ('failed', 'deadlettered');
CREATE INDEX collector_stage_time ON collector_stage USING brin (time);

CREATE TABLE collector_envelope (
    project_id       integer     NOT NULL,
    time             timestamptz NOT NULL,
    source           text        NOT NULL,
    event_id         text        NOT NULL,
    type             text        NOT NULL,
    subject          text,
    datacontenttype  text,
    dataschema       text,
    extensions       jsonb,
    data             jsonb,
    data_text        text,
    data_base64      boolean     NOT NULL DEFAULT false,
    data_size        integer     NOT NULL DEFAULT 0,
    truncated        boolean     NOT NULL DEFAULT false,
    trace_id         bytea,
    PRIMARY KEY (project_id, source, event_id, time)
) PARTITION BY RANGE (time);
CREATE INDEX collector_envelope_event ON collector_envelope (project_id, event_id);

CREATE TABLE collector_flowrollup (
    project_id       integer     NOT NULL,
    minute           timestamptz NOT NULL,
    source           text        NOT NULL,
    target           text        NOT NULL,
    kind             text        NOT NULL,
    consumer_group   text        NOT NULL DEFAULT '',
    count            bigint      NOT NULL DEFAULT 0,
    received         bigint      NOT NULL DEFAULT 0,
    errors           bigint      NOT NULL DEFAULT 0,
    deadlettered     bigint      NOT NULL DEFAULT 0,
    retries          bigint      NOT NULL DEFAULT 0,
    duration_hist    bigint[]    NOT NULL,
    duration_sum_ms  double precision NOT NULL DEFAULT 0,
    e2e_hist         bigint[]    NOT NULL,
    e2e_count        bigint      NOT NULL DEFAULT 0,
    e2e_sum_ms       double precision NOT NULL DEFAULT 0,
    -- (project_id, minute) first: every read is "one project, a time window".
    PRIMARY KEY (project_id, minute, source, target, kind, consumer_group)
);
"""

REVERSE = """
DROP TABLE collector_flowrollup;
DROP TABLE collector_envelope;
DROP TABLE collector_stage;
DROP TABLE collector_span;
DROP FUNCTION es_array_add(bigint[], bigint[]);
"""


class Migration(migrations.Migration):
    dependencies = [("collector", "0001_initial")]

    operations = [migrations.RunSQL(SQL, REVERSE)]
