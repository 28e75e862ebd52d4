"""Replay moves to the replays app (dashboard/replays/models.py).

Only Django's record of which app holds the model changes; the table
`dashboard_replay` and its rows stay where they are (the replays app names
it with db_table).
"""

from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [("dashboard", "0002_replays")]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[migrations.DeleteModel(name="Replay")],
            database_operations=[],
        )
    ]
