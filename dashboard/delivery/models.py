"""What the delivery pass keeps: findings, learned consumer groups, keyed
sequences, per-channel settings and the pass's own progress."""

from django.db import models
from django.utils import timezone

from collector.models import Project


class Kind(models.TextChoices):
    DUPLICATE = "duplicate"
    MISSING = "missing"
    LATE = "late"
    OUT_OF_ORDER = "out_of_order"
    POISON = "poison"


class Finding(models.Model):
    """One event affected by one kind of trouble in one consumer group.

    Unique per (kind, system, channel, group, event), so counting rows counts
    distinct events. `event_time` is when the event was published (or first
    seen): windows select on it.
    """

    project = models.ForeignKey(Project, on_delete=models.CASCADE)
    kind = models.CharField(max_length=16, choices=Kind.choices)
    system = models.TextField()
    channel = models.TextField()
    group = models.TextField(db_column="consumer_group")
    service = models.TextField(default="")
    event_key = models.BinaryField()
    event_time = models.DateTimeField()
    detected_at = models.DateTimeField(default=timezone.now)
    event_id = models.TextField(null=True)
    event_source = models.TextField(null=True)
    trace_id = models.TextField(null=True)  # hex, of the publish (or the first stage)
    successes = models.IntegerField(default=0)
    failures = models.IntegerField(default=0)
    retry_ms = models.FloatField(null=True)  # poison: first to last attempt
    deadlettered = models.BooleanField(default=False)
    delay_ms = models.FloatField(null=True)  # late: publish to first processing
    ordering_key = models.TextField(default="")
    examples = models.JSONField(default=list)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["project", "kind", "system", "channel", "group", "event_key"],
                name="delivery_finding_unique",
            )
        ]
        indexes = [
            models.Index(fields=["project", "event_time"], name="delivery_finding_time"),
            models.Index(
                fields=["project", "kind", "system", "channel", "group", "event_time"],
                name="delivery_finding_group",
            ),
            models.Index(fields=["project", "event_key"], name="delivery_finding_event"),
            models.Index(fields=["project", "trace_id"], name="delivery_finding_trace"),
            models.Index(fields=["project", "event_id"], name="delivery_finding_event_id"),
        ]


class Expectation(models.Model):
    """A consumer group learned to consume what is published on a channel.

    `publish_channel` is where producers send (a RabbitMQ exchange, a topic),
    `channel` where the group consumes. Events published between
    `first_seen` and `last_seen` + EVENTSCOPE_DELIVERY_EXPECTED_HOURS are
    expected from it, unless it is retired.
    """

    project = models.ForeignKey(Project, on_delete=models.CASCADE)
    system = models.TextField()
    publish_channel = models.TextField()
    channel = models.TextField()
    group = models.TextField(db_column="consumer_group")
    service = models.TextField(default="")
    first_seen = models.DateTimeField()
    last_seen = models.DateTimeField()
    retired_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["project", "system", "publish_channel", "channel", "group"],
                name="delivery_expectation_unique",
            )
        ]


class ChannelSetting(models.Model):
    """What a user set for a consumed channel: its deadline and ordering attribute."""

    project = models.ForeignKey(Project, on_delete=models.CASCADE)
    system = models.TextField()
    channel = models.TextField()
    deadline_seconds = models.FloatField(null=True, blank=True)
    ordering_attribute = models.TextField(default="", blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["project", "system", "channel"], name="delivery_channel_unique"
            )
        ]


class Sequenced(models.Model):
    """An event with an ordering key, as one group processed it: the order
    it was published in against the order it was processed in."""

    project_id = models.IntegerField()
    system = models.TextField()
    channel = models.TextField()
    group = models.TextField(db_column="consumer_group")
    ordering_key = models.TextField()
    event_key = models.BinaryField()
    published_at = models.DateTimeField()
    processed_at = models.DateTimeField()
    event_id = models.TextField(null=True)
    trace_id = models.TextField(null=True)
    span_id = models.TextField(null=True)
    service = models.TextField(default="")

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["project_id", "system", "channel", "group", "ordering_key", "event_key"],
                name="delivery_sequenced_unique",
            )
        ]
        indexes = [
            models.Index(
                fields=["project_id", "system", "channel", "group", "ordering_key", "published_at"],
                name="delivery_sequenced_order",
            ),
            models.Index(fields=["published_at"], name="delivery_sequenced_time"),
        ]


class PassState(models.Model):
    """The pass's progress: the snapshot of its last run (rows committed after
    it are new) and how far publishes were checked against their deadlines."""

    id = models.SmallIntegerField(primary_key=True, default=1)
    snapshot = models.TextField(null=True)  # pg_snapshot as text: recent minutes
    full_snapshot = models.TextField(null=True)  # ... every minute kept, read less often
    full_at = models.DateTimeField(null=True)
    swept_until = models.DateTimeField(null=True)
    passed_at = models.DateTimeField(null=True)


class DirtyMinute(models.Model):
    """A minute of stages with rows the pass has not read yet: those not
    visible in `since` (every row when it is NULL)."""

    minute = models.DateTimeField(primary_key=True)
    since = models.TextField(null=True)  # pg_snapshot as text
