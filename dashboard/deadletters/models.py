"""A redrive: a job of the worker moving dead letters back where they came from,
and its items (what moved where). The database is the job queue."""

from django.conf import settings
from django.db import models
from django.utils import timezone


class State(models.TextChoices):
    QUEUED = "queued", "Queued"
    RUNNING = "running", "Running"
    DONE = "done", "Done"
    FAILED = "failed", "Failed"
    CANCELLED = "cancelled", "Cancelled"


FINISHED = (State.DONE, State.FAILED, State.CANCELLED)


class ItemState(models.TextChoices):
    PENDING = "pending", "Pending"
    # Started: the broker may have done it even if the worker died before it heard.
    MOVING = "moving", "Moving"
    MOVED = "moved", "Moved"
    FAILED = "failed", "Failed"
    WOULD_MOVE = "would_move", "Would move (dry run)"
    SKIPPED = "skipped", "Not moved (cancelled)"


class RedriveQuerySet(models.QuerySet):
    def touching(self, project, event_id: str | None = None, trace_ids=()):
        """Redrives (not dry runs) that moved a message of this event or these traces."""
        match = models.Q()
        if event_id:
            match |= models.Q(items__event_id=event_id)
        if trace_ids:
            match |= models.Q(items__trace_id__in=list(trace_ids))
        if not match:
            return self.none()
        return (
            self.filter(project=project, dry_run=False)
            .filter(match)
            .distinct()
            .order_by("-created_at", "-id")
        )


class Redrive(models.Model):
    """One request to move dead letters: all of a queue, or the messages picked."""

    project = models.ForeignKey("collector.Project", on_delete=models.CASCADE, related_name="+")
    system = models.CharField(max_length=20)
    broker = models.CharField(max_length=500)  # the broker's URL without credentials
    dead_letter = models.CharField(max_length=500)
    namespace = models.CharField(max_length=200, blank=True, default="")  # RabbitMQ vhost
    # The message ids picked; null: every message in the queue (up to REDRIVE_MAX_MESSAGES).
    selection = models.JSONField(null=True, blank=True)
    destination = models.CharField(max_length=500, blank=True, default="")  # "": the original
    rate_per_s = models.FloatField()
    dry_run = models.BooleanField(default=False)
    state = models.CharField(max_length=10, choices=State.choices, default=State.QUEUED)
    cancel_requested = models.BooleanField(default=False)
    total = models.PositiveIntegerField(default=0)
    moved = models.PositiveIntegerField(default=0)
    failed = models.PositiveIntegerField(default=0)
    error = models.TextField(blank=True, default="")
    # How the broker keeps a message from being lost or moved twice, as shown to people.
    guarantee = models.TextField(blank=True, default="")
    runs = models.PositiveSmallIntegerField(default=0)  # started, or resumed after a restart
    requested_by_user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL
    )
    requested_by = models.CharField(max_length=150)
    created_at = models.DateTimeField(default=timezone.now)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    objects = RedriveQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [
            models.Index(fields=["project", "-created_at"], name="redrive_project_newest"),
            models.Index(
                fields=["id"],
                name="redrive_unfinished",
                condition=models.Q(state__in=["queued", "running"]),
            ),
        ]

    def __str__(self):
        return f"redrive {self.pk}: {self.system} {self.dead_letter} ({self.state})"

    @property
    def finished(self) -> bool:
        return self.state in FINISHED


class RedriveItem(models.Model):
    """One message of a redrive: where it goes and how it went."""

    redrive = models.ForeignKey(Redrive, on_delete=models.CASCADE, related_name="items")
    message_id = models.CharField(max_length=300)
    destination = models.CharField(max_length=500)
    state = models.CharField(max_length=10, choices=ItemState.choices, default=ItemState.PENDING)
    error = models.TextField(blank=True, default="")
    event_id = models.CharField(max_length=300, blank=True, default="")
    trace_id = models.CharField(max_length=32, blank=True, default="")
    # The traceparent the redriven message carries: same trace, the redrive's own span id.
    traceparent = models.CharField(max_length=55, blank=True, default="")
    redrive_count = models.PositiveIntegerField(default=1)
    started_at = models.DateTimeField(null=True, blank=True)
    moved_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["id"]
        indexes = [
            models.Index(fields=["event_id"], name="redriveitem_event"),
            models.Index(fields=["trace_id"], name="redriveitem_trace"),
        ]
