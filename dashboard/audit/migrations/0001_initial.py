"""The audit log table, and the trigger that keeps it append-only.

The trigger refuses every UPDATE, and every DELETE but the retention
purge's: dashboard/audit/retention.py sets `eventscope.audit_purge_before`
for its own transaction (SET LOCAL) and may then delete rows older than
that, never rows of the last day whatever it sets. Plain SQL, no SECURITY
DEFINER function: nothing runs with more rights than the caller has. It
guards against the application (a bug, a stray ORM call, an injected
statement) rewriting history; whoever owns the table can drop a trigger,
so a deployment that must resist its database owner grants the web app's
role INSERT and SELECT only (README).
"""

import django.db.models.deletion
import django.utils.timezone
from django.db import migrations, models

APPEND_ONLY = """
CREATE FUNCTION audit_event_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    purge_before timestamptz;
BEGIN
    IF TG_OP = 'DELETE' THEN
        purge_before := nullif(current_setting('eventscope.audit_purge_before', true), '')::timestamptz;
        IF purge_before IS NOT NULL AND OLD.time < purge_before
           AND OLD.time < now() - interval '1 day' THEN
            RETURN OLD;
        END IF;
    END IF;
    RAISE EXCEPTION 'audit events are append-only: % of audit event % refused', TG_OP, OLD.id
        USING ERRCODE = 'insufficient_privilege',
              HINT = 'only the retention purge deletes audit events, once they are past EVENTSCOPE_AUDIT_RETENTION_DAYS';
END
$$;
CREATE TRIGGER audit_event_append_only BEFORE UPDATE OR DELETE ON audit_auditevent
    FOR EACH ROW EXECUTE FUNCTION audit_event_append_only();
"""
DROP_APPEND_ONLY = """
DROP TRIGGER audit_event_append_only ON audit_auditevent;
DROP FUNCTION audit_event_append_only();
"""


class Migration(migrations.Migration):
    initial = True

    dependencies = [
        ("collector", "0004_failure_rollups"),
    ]

    operations = [
        migrations.CreateModel(
            name="AuditEvent",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                ("time", models.DateTimeField(default=django.utils.timezone.now)),
                ("actor", models.CharField(blank=True, max_length=150)),
                ("project_slug", models.CharField(blank=True, max_length=100)),
                ("action", models.CharField(max_length=50)),
                ("target", models.CharField(blank=True, max_length=300)),
                ("ip", models.GenericIPAddressField(blank=True, null=True)),
                ("details", models.JSONField(blank=True, default=dict)),
                (
                    "project",
                    models.ForeignKey(
                        blank=True,
                        db_constraint=False,
                        null=True,
                        on_delete=django.db.models.deletion.DO_NOTHING,
                        related_name="+",
                        to="collector.project",
                    ),
                ),
            ],
            options={
                "ordering": ["-time", "-id"],
                "indexes": [
                    models.Index(fields=["project", "-time", "-id"], name="audit_project_newest"),
                    models.Index(fields=["time"], name="audit_time"),
                ],
            },
        ),
        migrations.RunSQL(APPEND_ONLY, reverse_sql=DROP_APPEND_ONLY),
    ]
