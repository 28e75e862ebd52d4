"""Membership moves to the dashboard's accounts app (dashboard/accounts/models.py).

Only Django's record of which app holds the model changes; the table
`collector_membership` and its rows stay where they are (the accounts app
names it with db_table).
"""

from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [("collector", "0004_failure_rollups")]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[migrations.DeleteModel(name="Membership")],
            database_operations=[],
        )
    ]
