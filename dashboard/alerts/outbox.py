"""Queueing notifications: one Delivery row per webhook, written in the caller's
transaction so an alert state change and its notifications commit together."""

import datetime as dt

from django.conf import settings
from django.urls import reverse

from dashboard.alerts.models import Alert, Delivery, DeliveryStatus, Format, Webhook
from dashboard.alerts.transports import Notification, rfc3339, transport_for


def alert_url(alert: Alert) -> str:
    return f"{settings.PUBLIC_URL}{reverse('alerts')}?project={alert.project.slug}#alert-{alert.pk}"


def notification_for(alert: Alert, event: str, now: dt.datetime) -> Notification:
    rule, project = alert.rule, alert.project
    return Notification(
        event=event,
        rule={"id": rule.pk, "name": rule.name, "kind": rule.kind},
        project={"id": project.pk, "slug": project.slug, "name": project.name},
        alert={
            "id": alert.pk,
            "fingerprint": alert.fingerprint,
            "state": alert.state,
            "labels": alert.labels,
            "value": alert.value,
            "summary": alert.summary,
            "started_at": rfc3339(alert.started_at),
            "resolved_at": rfc3339(alert.resolved_at),
            "url": alert_url(alert),
        },
        time=now,
    )


def sample_notification(webhook: Webhook, now: dt.datetime) -> Notification:
    """A made-up firing alert, so a receiver can be tried before a rule fires."""
    project = webhook.project
    return Notification(
        event="test",
        rule={"id": 0, "name": "Test notification", "kind": "test"},
        project={"id": project.pk, "slug": project.slug, "name": project.name},
        alert={
            "id": 0,
            "fingerprint": "0000000000000000",
            "state": "firing",
            "labels": {"project": project.slug},
            "value": None,
            "summary": f"a test notification from Eventscope to {webhook.name}",
            "started_at": rfc3339(now),
            "resolved_at": None,
            "url": f"{settings.PUBLIC_URL}{reverse('webhook', args=[webhook.pk])}?project={project.slug}",
        },
        time=now,
    )


def enqueue(
    webhook: Webhook, notification: Notification, now: dt.datetime, alert: Alert | None = None
) -> Delivery:
    """Queue one notification to one webhook; the sender picks it up."""
    return Delivery.objects.create(
        project_id=webhook.project_id,
        webhook=webhook,
        alert=alert,
        event=notification.event,
        message_id=Delivery.new_message_id(),
        body=transport_for(webhook).render(notification),
        created_at=now,
        next_attempt_at=now,
        give_up_at=Delivery.give_up_time(now),
    )


def notify_webhooks(
    alert: Alert, event: str, now: dt.datetime, webhooks: list[Webhook] | None = None
) -> list[Delivery]:
    """Queue `event` for the alert to `webhooks` (default: every webhook of its rule)."""
    if webhooks is None:
        webhooks = list(alert.rule.webhooks.all())
    if not webhooks:
        return []
    notification = notification_for(alert, event, now)
    pushed = [w.pk for w in webhooks if w.format == Format.ALERTMANAGER_PUSH]
    if pushed:
        # Alertmanager keeps whatever it was sent last, so an older push still
        # being retried must not follow a newer one: a stale firing re-send
        # arriving after the resolve would bring the alert back.
        Delivery.objects.filter(
            alert=alert, webhook_id__in=pushed, status=DeliveryStatus.PENDING
        ).update(
            status=DeliveryStatus.FAILED,
            last_error="superseded by a newer notification of this alert",
            claimed_until=None,
            claim_token=None,
        )
    return [enqueue(w, notification, now, alert) for w in webhooks]
