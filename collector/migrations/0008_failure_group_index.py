"""Failure rollups indexed by group as well as by minute.

The failures page reads the newest examples of each listed group; walking
the (project_id, minute, group_key) key backwards finds a rare group's rows
only after scanning the whole window. Failure rollups are written for failed
and dead-lettered stages only, so the index costs ingest next to nothing.
"""

from django.db import migrations

SQL = """
CREATE INDEX collector_failurerollup_group
    ON collector_failurerollup (project_id, group_key, minute);
"""

REVERSE = "DROP INDEX collector_failurerollup_group;"


class Migration(migrations.Migration):
    dependencies = [("collector", "0007_search")]

    operations = [migrations.RunSQL(SQL, REVERSE)]
