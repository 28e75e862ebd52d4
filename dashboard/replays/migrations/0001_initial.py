"""Replay, moved here from the dashboard app: the state only, over the
existing table `dashboard_replay` (see dashboard/migrations/0003)."""

import django.db.models.deletion
import django.utils.timezone
from django.conf import settings
from django.db import migrations, models

import dashboard.replays.models


class Migration(migrations.Migration):
    initial = True

    dependencies = [
        ("alerts", "0001_initial"),
        ("collector", "0004_failure_rollups"),
        ("dashboard", "0003_replay_to_replays"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.CreateModel(
                    name="Replay",
                    fields=[
                        (
                            "id",
                            models.CharField(
                                default=dashboard.replays.models.new_replay_id,
                                editable=False,
                                max_length=40,
                                primary_key=True,
                                serialize=False,
                            ),
                        ),
                        ("event_id", models.TextField()),
                        ("source", models.TextField()),
                        ("event_time", models.DateTimeField()),
                        ("webhook_name", models.CharField(max_length=100)),
                        ("requested_by", models.CharField(max_length=150)),
                        ("requested_at", models.DateTimeField(default=django.utils.timezone.now)),
                        (
                            "status",
                            models.CharField(
                                choices=[("delivered", "Delivered"), ("failed", "Failed")],
                                max_length=10,
                            ),
                        ),
                        ("http_status", models.PositiveSmallIntegerField(blank=True, null=True)),
                        ("error", models.TextField(blank=True, default="")),
                        ("duration_ms", models.FloatField(default=0.0)),
                        (
                            "project",
                            models.ForeignKey(
                                on_delete=django.db.models.deletion.CASCADE,
                                related_name="replays",
                                to="collector.project",
                            ),
                        ),
                        (
                            "requested_by_user",
                            models.ForeignKey(
                                blank=True,
                                null=True,
                                on_delete=django.db.models.deletion.SET_NULL,
                                to=settings.AUTH_USER_MODEL,
                            ),
                        ),
                        (
                            "webhook",
                            models.ForeignKey(
                                blank=True,
                                null=True,
                                on_delete=django.db.models.deletion.SET_NULL,
                                related_name="replays",
                                to="alerts.webhook",
                            ),
                        ),
                    ],
                    options={
                        "db_table": "dashboard_replay",
                        "ordering": ["-requested_at", "-id"],
                        "indexes": [
                            models.Index(
                                fields=["project", "event_id", "-requested_at"],
                                name="replay_event_newest",
                            )
                        ],
                    },
                ),
            ],
            database_operations=[],
        )
    ]
