"""Failure rollups keyed by the error's fingerprint instead of its exact text.

Messages that carry ids ("... of ord-000195") made a group per event. The
writer now keys the rollups by the template of the message and the error
type (collector/fingerprint.py) and keeps one example per group and minute.

Existing rows are rewritten with the same Python function the writer uses,
not with a regexp_replace() mirror in SQL: PostgreSQL's regular expressions
choose between alternatives differently (longest match, no Python
lookbehind rules), so a mirror could split a group in two. The rewrite:

- minutes whose failure stages are still stored (raw retention,
  EVENTSCOPE_RETENTION_DAYS) are recomputed from collector_stage, with the
  error type read from each stage's span, as the writer would have counted
  them, examples included;
- older minutes (rollups outlive raw rows, EVENTSCOPE_ROLLUP_RETENTION_DAYS)
  keep their counts, regrouped by the template of their message; their error
  type is unknown (''), and the message is their example.

The work is bounded by what retention keeps: one pass over the stored
failures and one over the rollup rows, with server-side cursors.
"""

import datetime as dt
import json

from django.db import migrations

from collector import fingerprint
from collector.rollups import FAILURE_UPSERT, FailureRollups

_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_MINUTE_NS = 60_000_000_000

COLUMNS = """
ALTER TABLE collector_failurerollup
    ADD COLUMN error_type text NOT NULL DEFAULT '',
    ADD COLUMN fingerprint text NOT NULL DEFAULT '',
    ADD COLUMN example_error text,
    ADD COLUMN example_event_id text,
    ADD COLUMN example_event_source text,
    ADD COLUMN example_trace_id bytea;
"""

# The failures still stored, with the error type of their span (as normalize
# computes it: error.type, else the first exception event's type).
STAGE_FAILURES = """
SELECT s.project_id, s.time, s.service, s.channel, s.system, s.consumer_group, s.stage,
       s.error, s.event_id, s.event_source, s.trace_id,
       (sp.attributes -> 'error.type')::text,
       (SELECT jsonb_agg(e -> 'attributes' -> 'exception.type' ORDER BY o)
        FROM jsonb_array_elements(sp.events) WITH ORDINALITY AS x(e, o)
        WHERE e ->> 'name' = 'exception')::text
FROM collector_stage s
LEFT JOIN collector_span sp
       ON s.origin = 1 AND sp.project_id = s.project_id AND sp.trace_id = s.trace_id
      AND sp.span_id = s.span_id AND sp.start_time = s.time
WHERE s.stage IN ('failed', 'deadlettered')
"""

OLD_ROWS = """
SELECT project_id, minute, service, channel, system, consumer_group, error, count,
       deadlettered, first_time, last_time
FROM collector_failurerollup
"""


def _ns(moment: dt.datetime) -> int:
    return (moment - _EPOCH) // dt.timedelta(microseconds=1) * 1000


def stage_error_type(attribute_json, exception_types_json) -> str:
    """fingerprint.error_type() of a span read as STAGE_FAILURES reads it."""
    attribute = json.loads(attribute_json) if attribute_json is not None else None
    exceptions = json.loads(exception_types_json) if exception_types_json is not None else []
    return fingerprint.error_type(attribute, exceptions)


def rebuild(conn) -> int:
    """Rewrite collector_failurerollup into fingerprint groups; returns the rows written.

    `conn` is a psycopg connection inside a transaction (server-side cursors).
    """
    rollups = FailureRollups()
    shapes: dict = {}
    with conn.cursor(name="failure_stages") as cur:
        cur.itersize = 5000
        cur.execute(STAGE_FAILURES)
        for row in cur:
            project_id, time, *names, stage, error, event_id, source, trace_id, attr, exc = row
            error = error or ""
            error_type = stage_error_type(attr, exc)
            shape = shapes.get((error, error_type))
            if shape is None:
                if len(shapes) > 100_000:
                    shapes.clear()
                shape = shapes[(error, error_type)] = fingerprint.of(error, error_type)
            example = (
                error[: fingerprint.MAX_MESSAGE], event_id, source,
                bytes(trace_id) if trace_id else None,
            )  # fmt: skip
            rollups.add(
                project_id, tuple(names), shape, error_type, example, _ns(time),
                dead=int(stage == "deadlettered"),
            )  # fmt: skip
    recomputed = rollups.minutes()
    with conn.cursor(name="failure_rollups") as cur:
        cur.itersize = 5000
        cur.execute(OLD_ROWS)
        for project_id, minute, *rest in cur:
            if (project_id, _ns(minute) // _MINUTE_NS) in recomputed:
                continue
            *names, error, count, dead, first, last = rest
            shape = shapes.get((error, ""))
            if shape is None:
                shape = shapes[(error, "")] = fingerprint.of(error, "")
            rollups.add(
                project_id, tuple(names), shape, "",
                ((error or "")[: fingerprint.MAX_MESSAGE] or None, None, None, None),
                _ns(first), _ns(last), count=count, dead=dead,
            )  # fmt: skip
    params = rollups.params()
    with conn.cursor() as cur:
        cur.execute("DELETE FROM collector_failurerollup")
        if params:
            cur.executemany(FAILURE_UPSERT, params)
    return len(params)


def forwards(apps, schema_editor):
    with schema_editor.connection.cursor() as cursor:
        # Writers wait (they would add to rows about to be rewritten).
        cursor.execute("LOCK TABLE collector_failurerollup IN EXCLUSIVE MODE")
    rebuild(schema_editor.connection.connection)


# Back to one group per exact message: counted in again from the stored failures.
BACKWARDS = """
DELETE FROM collector_failurerollup;
ALTER TABLE collector_failurerollup
    DROP COLUMN error_type, DROP COLUMN fingerprint, DROP COLUMN example_error,
    DROP COLUMN example_event_id, DROP COLUMN example_event_source, DROP COLUMN example_trace_id;
"""


def backwards(apps, schema_editor):
    import importlib

    first = importlib.import_module("collector.migrations.0004_failure_rollups")
    with schema_editor.connection.cursor() as cursor:
        cursor.execute(BACKWARDS)
        cursor.execute(first.BACKFILL)


class Migration(migrations.Migration):
    dependencies = [("collector", "0005_membership_to_accounts")]

    operations = [
        migrations.RunSQL(COLUMNS, migrations.RunSQL.noop),
        migrations.RunPython(forwards, backwards),
    ]
