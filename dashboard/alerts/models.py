"""Alert rules, webhook destinations, alert instances and the delivery outbox.

An `Alert` is one instance of a rule for one label set (a channel, a
consumer group, a service...), identified by a stable fingerprint. State
changes write `Delivery` rows in the same transaction (the outbox); the
sender posts them and records every `Attempt`.
"""

import base64
import datetime as dt
import secrets
import urllib.parse
import uuid

from django.conf import settings
from django.db import models
from django.utils import timezone

from collector.models import Project

SECRET_PREFIX = "whsec_"


def new_secret() -> str:
    """A Standard Webhooks signing secret: whsec_ + base64 of 32 random bytes."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()


def secret_key(secret: str) -> bytes:
    """The raw HMAC key of a whsec_ secret."""
    return base64.b64decode(secret.removeprefix(SECRET_PREFIX), validate=True)


class Format(models.TextChoices):
    JSON = "json", "JSON (Standard Webhooks signature)"
    ALERTMANAGER = "alertmanager", "Alertmanager webhook (version 4)"
    SLACK = "slack", "Slack incoming webhook"
    ALERTMANAGER_PUSH = "alertmanager-push", "Alertmanager API (URL: its base, or …/api/v2/alerts)"


class Webhook(models.Model):
    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="webhooks")
    name = models.CharField(max_length=100)
    url = models.URLField(max_length=2000)
    format = models.CharField(max_length=20, choices=Format.choices, default=Format.JSON)
    secret = models.CharField(max_length=200, default=new_secret)
    # PEM certificates of the CA(s) that issued the receiver's certificate, for
    # receivers behind a private CA; empty: the public roots (certifi).
    ca_bundle = models.TextField(blank=True, default="")
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["name", "id"]

    def __str__(self):
        return self.name

    @property
    def secret_hint(self) -> str:
        return f"{SECRET_PREFIX}…{self.secret[-4:]}"

    @property
    def masked_url(self) -> str:
        """The URL as shown to people who may not change the webhook: without
        user:password (sent as Basic auth) and with path and query hidden, as
        many receivers (Slack's among them) put the credential there:
        https://hooks.slack.com/…"""
        try:
            parts = urllib.parse.urlsplit(self.url)
        except ValueError:
            return "…"
        host = parts.netloc.rpartition("@")[2]
        hidden = parts.path not in ("", "/") or parts.query or parts.fragment
        return f"{parts.scheme}://{host}/" + ("…" if hidden else "")


class Kind(models.TextChoices):
    LAG = "lag", "Consumer lag (messages)"
    LAG_SECONDS = "lag_seconds", "Consumer lag (seconds)"
    LAG_STATUS = "lag_status", "Consumer lag status not ok"
    ERROR_RATE = "error_rate", "Error rate"
    FAILED_EVENTS = "failed_events", "Failed events"
    THROUGHPUT_DROP = "throughput_drop", "Throughput drop"
    DEAD_LETTERS = "dead_letters", "Dead letters"
    DUPLICATES = "duplicates", "Duplicate events (processed twice by a group)"
    MISSING_EVENTS = "missing_events", "Missing events (past the deadline)"
    OUT_OF_ORDER = "out_of_order", "Events processed out of order"


class AlertRule(models.Model):
    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="alert_rules")
    name = models.CharField(max_length=100)
    kind = models.CharField(max_length=20, choices=Kind.choices)
    params = models.JSONField(default=dict)
    for_seconds = models.PositiveIntegerField(default=0)
    # 0: notify once when firing, never repeat.
    repeat_seconds = models.PositiveIntegerField(default=4 * 3600)
    webhooks = models.ManyToManyField(Webhook, blank=True, related_name="rules")
    enabled = models.BooleanField(default=True)
    muted_until = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(default=timezone.now)
    last_evaluated_at = models.DateTimeField(null=True, blank=True)
    last_error = models.TextField(blank=True, default="")

    class Meta:
        ordering = ["name", "id"]

    def __str__(self):
        return self.name

    def is_muted(self, now: dt.datetime | None = None) -> bool:
        return self.muted_until is not None and self.muted_until > (now or timezone.now())


class State(models.TextChoices):
    PENDING = "pending", "Pending"
    FIRING = "firing", "Firing"
    RESOLVED = "resolved", "Resolved"


OPEN_STATES = (State.PENDING, State.FIRING)


class Alert(models.Model):
    """One rule instance for one label set, from first breach to resolution."""

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="alerts")
    rule = models.ForeignKey(AlertRule, on_delete=models.CASCADE, related_name="alerts")
    fingerprint = models.CharField(max_length=16)
    labels = models.JSONField(default=dict)
    state = models.CharField(max_length=10, choices=State.choices, default=State.PENDING)
    value = models.FloatField(null=True)
    summary = models.TextField(blank=True, default="")
    started_at = models.DateTimeField()  # the condition first held
    firing_at = models.DateTimeField(null=True)
    resolved_at = models.DateTimeField(null=True)
    last_seen_at = models.DateTimeField()
    # What receivers were last told ("", "firing" or "resolved"), and when: a
    # muted rule still tracks state, unmuting must notify what was missed, and
    # only receivers told of the firing are told of the end.
    notified_state = models.CharField(max_length=10, blank=True, default="")
    last_notified_at = models.DateTimeField(null=True)
    # When alertmanager-push webhooks were last sent it: they are re-sent
    # every minute while it fires, apart from the rule's repeat_seconds.
    last_pushed_at = models.DateTimeField(null=True)

    class Meta:
        ordering = ["-started_at", "-id"]
        constraints = [
            # At most one open instance per label set; a resolved one stays as history.
            models.UniqueConstraint(
                fields=["rule", "fingerprint"],
                condition=models.Q(state__in=["pending", "firing"]),
                name="alert_one_open_per_fingerprint",
            )
        ]
        indexes = [models.Index(fields=["project", "state"], name="alert_project_state")]

    def __str__(self):
        return f"{self.rule} {self.labels} {self.state}"


class DeliveryStatus(models.TextChoices):
    PENDING = "pending", "Pending"
    DELIVERED = "delivered", "Delivered"
    FAILED = "failed", "Failed"


class Delivery(models.Model):
    """One notification to one webhook; the body is frozen when it is queued so
    every retry sends the same bytes under the same webhook-id."""

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="deliveries")
    webhook = models.ForeignKey(Webhook, on_delete=models.CASCADE, related_name="deliveries")
    # A deleted rule's last notifications are still delivered.
    alert = models.ForeignKey(
        Alert, null=True, blank=True, on_delete=models.SET_NULL, related_name="deliveries"
    )
    event = models.CharField(max_length=10)  # firing | repeat | resolved | test
    message_id = models.CharField(max_length=40, unique=True)
    body = models.TextField()
    status = models.CharField(
        max_length=10, choices=DeliveryStatus.choices, default=DeliveryStatus.PENDING
    )
    created_at = models.DateTimeField(default=timezone.now)
    next_attempt_at = models.DateTimeField(default=timezone.now)
    give_up_at = models.DateTimeField()
    # A claim is a lease: a sender that dies after claiming leaves the row
    # to be claimed again once claimed_until passes.
    claimed_until = models.DateTimeField(null=True, blank=True)
    claim_token = models.UUIDField(null=True, blank=True)
    attempt_count = models.PositiveIntegerField(default=0)
    delivered_at = models.DateTimeField(null=True, blank=True)
    last_error = models.TextField(blank=True, default="")

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [
            models.Index(
                fields=["next_attempt_at"],
                condition=models.Q(status="pending"),
                name="delivery_due",
            )
        ]

    def __str__(self):
        return f"{self.event} → {self.webhook} ({self.status})"

    @staticmethod
    def new_message_id() -> str:
        return f"msg_{uuid.uuid4().hex}"

    @staticmethod
    def give_up_time(now: dt.datetime) -> dt.datetime:
        return now + dt.timedelta(hours=settings.WEBHOOK_RETRY_HOURS)


class Attempt(models.Model):
    delivery = models.ForeignKey(Delivery, on_delete=models.CASCADE, related_name="attempts")
    at = models.DateTimeField()
    status_code = models.PositiveSmallIntegerField(null=True)
    error = models.TextField(blank=True, default="")
    duration_ms = models.FloatField()
    next_retry_at = models.DateTimeField(null=True)

    class Meta:
        ordering = ["at", "id"]

    @property
    def ok(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300
