"""The record of event replays. The table kept its first name,
`dashboard_replay` (db_table), when the model moved into this app."""

import uuid

from django.conf import settings
from django.db import models
from django.utils import timezone


def new_replay_id() -> str:
    """A replay's id: sent as the `esreplay` attribute and as `webhook-id`, so it
    must be unique beyond this installation, not merely in this table."""
    return f"rpl_{uuid.uuid4().hex}"


class ReplayStatus(models.TextChoices):
    DELIVERED = "delivered", "Delivered"
    FAILED = "failed", "Failed"
    # A replay asked to retry: waiting for the worker's first or next attempt.
    QUEUED = "queued", "Queued"


class ReplayQuerySet(models.QuerySet):
    def of_event(self, project, event_id: str, source: str | None = None):
        """Replays of one event (of one source, when given), newest first."""
        replays = self.filter(project=project, event_id=event_id)
        if source:
            replays = replays.filter(source=source)
        return replays.order_by("-requested_at", "-id")


class Replay(models.Model):
    """One re-send of a stored CloudEvent to a webhook, and how it went.

    Sent once, while the editor waits, and not retried: a replay is a
    person's deliberate act, and a second copy arriving an hour later by
    itself would surprise them. Unless they ask for it (`retry`): then the
    worker sends it as a job (dashboard/replays/jobs.py), retrying timeouts,
    connection errors and 5xx answers with backoff up to RETRY_ATTEMPTS times.
    """

    id = models.CharField(primary_key=True, max_length=40, default=new_replay_id, editable=False)
    project = models.ForeignKey(
        "collector.Project", on_delete=models.CASCADE, related_name="replays"
    )
    # The envelope sent: (project, source, event_id, event_time) is its key.
    event_id = models.TextField()
    source = models.TextField()
    event_time = models.DateTimeField()
    # The record outlives the webhook (and the envelope, past retention).
    webhook = models.ForeignKey(
        "alerts.Webhook", null=True, blank=True, on_delete=models.SET_NULL, related_name="replays"
    )
    webhook_name = models.CharField(max_length=100)
    requested_by_user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL
    )
    requested_by = models.CharField(max_length=150)  # username (or token name) at the time
    requested_at = models.DateTimeField(default=timezone.now)
    status = models.CharField(max_length=10, choices=ReplayStatus.choices)
    http_status = models.PositiveSmallIntegerField(null=True, blank=True)
    error = models.TextField(blank=True, default="")
    duration_ms = models.FloatField(default=0.0)
    retry = models.BooleanField(default=False)
    attempts = models.PositiveSmallIntegerField(default=1)
    # When the worker tries a queued replay (again); null once it is settled.
    next_attempt_at = models.DateTimeField(null=True, blank=True)

    objects = ReplayQuerySet.as_manager()

    class Meta:
        db_table = "dashboard_replay"
        ordering = ["-requested_at", "-id"]
        indexes = [
            models.Index(
                fields=["project", "event_id", "-requested_at"], name="replay_event_newest"
            ),
            models.Index(
                fields=["next_attempt_at"],
                name="replay_queued_due",
                condition=models.Q(status="queued"),
            ),
        ]

    def __str__(self):
        return f"{self.id}: {self.source} {self.event_id} → {self.webhook_name} ({self.status})"
