"""The audit log: one row per thing a person did that changes who may do what
or where data goes (sign-ins, tokens, members, alert rules, webhooks, replays).

Rows are append-only. The ORM refuses to change or delete a stored row, and
a PostgreSQL trigger (migrations/0001_initial.py) refuses UPDATE and DELETE
from any client, except the retention purge's DELETE of rows past
EVENTSCOPE_AUDIT_RETENTION_DAYS (dashboard/audit/retention.py).
"""

import json

from django.db import models
from django.utils import timezone

# Every action recorded, with what a person reads for it. A new feature adds
# its own here (record() refuses unknown actions, so typos cannot hide).
ACTIONS = {
    "login.succeeded": "Signed in",
    "login.failed": "Sign-in failed",
    "login.locked_out": "Sign-in refused: locked out",
    "logout": "Signed out",
    "token.created": "API token created",
    "token.revoked": "API token revoked",
    "member.added": "Member added",
    "member.removed": "Member removed",
    "member.role_changed": "Member's role changed",
    "member.create_refused": "Account not created: name taken",
    "alert_rule.created": "Alert rule created",
    "alert_rule.updated": "Alert rule changed",
    "alert_rule.deleted": "Alert rule deleted",
    "webhook.created": "Webhook created",
    "webhook.updated": "Webhook changed",
    "webhook.deleted": "Webhook deleted",
    "webhook.tested": "Webhook tested",
    "event.replayed": "Event replayed",
    "redrive.requested": "Dead letters redrive requested",
    "redrive.cancelled": "Dead letters redrive cancelled",
    "redrive.finished": "Dead letters redrive finished",
}


class AppendOnly(Exception):
    """Raised on an attempt to change or delete a stored audit row."""


class AuditEventQuerySet(models.QuerySet):
    def update(self, **kwargs):
        raise AppendOnly("audit events cannot be changed")

    def delete(self):
        raise AppendOnly("audit events cannot be deleted (retention purges old ones)")

    def newest_first(self):
        return self.order_by("-time", "-id")

    def visible_to(self, user, project):
        """What the audit page and API show to an admin of `project`: that
        project's events; installation admins (superusers) also see the events
        of no project (sign-ins, sign-outs, lockouts)."""
        scope = models.Q(project_id=project.pk)
        if user.is_superuser:
            scope |= models.Q(project_id__isnull=True)
        return self.filter(scope)


class AuditEvent(models.Model):
    time = models.DateTimeField(default=timezone.now)
    # The username at the time, kept as text: the row outlives the account.
    actor = models.CharField(max_length=150, blank=True)
    # No database constraint and no cascade: deleting a project must neither
    # fail on nor erase its history. The slug is kept for the same reason.
    project = models.ForeignKey(
        "collector.Project",
        null=True,
        blank=True,
        on_delete=models.DO_NOTHING,
        db_constraint=False,
        related_name="+",
    )
    project_slug = models.CharField(max_length=100, blank=True)
    action = models.CharField(max_length=50)
    target = models.CharField(max_length=300, blank=True)
    ip = models.GenericIPAddressField(null=True, blank=True)
    details = models.JSONField(default=dict, blank=True)

    objects = AuditEventQuerySet.as_manager()

    class Meta:
        ordering = ["-time", "-id"]
        indexes = [
            models.Index(fields=["project", "-time", "-id"], name="audit_project_newest"),
            models.Index(fields=["time"], name="audit_time"),
        ]

    def __str__(self):
        return f"{self.time:%Y-%m-%d %H:%M:%S} {self.actor or '-'} {self.action} {self.target}"

    def save(self, *args, **kwargs):
        if not self._state.adding:
            raise AppendOnly("audit events cannot be changed")
        kwargs["force_insert"] = True
        super().save(*args, **kwargs)

    def delete(self, *args, **kwargs):
        raise AppendOnly("audit events cannot be deleted (retention purges old ones)")

    @property
    def label(self) -> str:
        return ACTIONS.get(self.action, self.action)

    @property
    def details_text(self) -> str:
        """The details as JSON text, for people."""
        return json.dumps(self.details, indent=1, ensure_ascii=False, sort_keys=True)
