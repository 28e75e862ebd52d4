"""Alert evaluation: findings of each rule → alert state → queued notifications.

Per alert instance (rule + label set, one fingerprint):

    (condition holds)  → pending, since now
    pending, held for_seconds → firing: notify "firing" once
    firing, repeat_seconds since the last notice → notify "repeat"
    firing, to alertmanager-push webhooks: "repeat" about every minute,
                         whatever repeat_seconds says (Alertmanager forgets
                         an alert that is not re-sent before its endsAt)
    (condition gone)   → firing: resolved, notify "resolved" once;
                         pending: dropped (nobody was told about it)

A rule's evaluation, its state changes, its Delivery rows and the live-page
hint commit in one transaction, so a notification is queued if and only if
the state change it announces is stored.

A muted rule keeps tracking state but sends no "firing" or "repeat"; once
unmuted, receivers are told of alerts still firing. Only the re-sends that
keep an Alertmanager's copy of an announced alert alive go on during a mute.
"Resolved" is sent even while muted, to the receivers that were told the
alert fired: a mute is to stop the noise of an incident being worked on, and
a pager must still be able to close the incident it opened.
"""

import asyncio
import contextlib
import datetime as dt
import logging

from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import close_old_connections, connection, transaction
from django.utils import timezone

from collector import notify
from dashboard.alerts.models import OPEN_STATES, Alert, AlertRule, Format, State
from dashboard.alerts.outbox import notify_webhooks
from dashboard.alerts.rules import KINDS, fingerprint
from dashboard.alerts.transports import PUSH_RESEND_SECONDS

log = logging.getLogger(__name__)


def evaluate_rule(rule_id: int, now: dt.datetime | None = None) -> dict:
    """Evaluate one rule and apply the result in one transaction.

    Returns counts of what changed: {"pending", "firing", "repeat", "resolved",
    "dropped"}.
    """
    now = now or timezone.now()
    changes = dict.fromkeys(("pending", "firing", "repeat", "resolved", "dropped"), 0)
    with transaction.atomic():
        # The row lock serialises evaluations of one rule (a second leader
        # after a takeover, an edit racing the worker).
        rule = (
            AlertRule.objects.select_for_update()
            .select_related("project")
            .filter(pk=rule_id)
            .first()
        )
        if rule is None:
            return changes
        findings, error = [], ""
        if rule.enabled:
            try:
                with transaction.atomic(), connection.cursor() as cursor:
                    # Defaults filled in, so rules saved before a parameter existed still work.
                    params = KINDS[rule.kind].validate(rule.params)
                    findings = KINDS[rule.kind].evaluate(cursor, rule.project, params, now)
            except Exception as exc:  # a broken query must not stop other rules
                log.warning("alert rule %s (%s) failed: %s", rule.pk, rule.kind, exc)
                error = f"{type(exc).__name__}: {exc}"
        if error:
            # Without an answer, keep every alert as it is rather than resolve it.
            _save_evaluation(rule, now, error)
            return changes
        _apply(rule, findings, now, changes)
        _save_evaluation(rule, now, "")
        if any(changes.values()):
            with connection.cursor() as cursor:
                notify.send(cursor, rule.project_id, notify.ALERTS)
    return changes


def _save_evaluation(rule: AlertRule, now, error: str) -> None:
    AlertRule.objects.filter(pk=rule.pk).update(last_evaluated_at=now, last_error=error)


def _apply(rule: AlertRule, findings, now, changes) -> None:
    open_alerts = {
        a.fingerprint: a
        for a in Alert.objects.select_for_update().filter(rule=rule, state__in=OPEN_STATES)
    }
    muted = rule.is_muted(now)
    webhooks = list(rule.webhooks.all())
    seen = set()
    for finding in findings:
        key = fingerprint(rule.pk, finding.labels)
        if key in seen:
            continue
        seen.add(key)
        alert = open_alerts.get(key)
        if alert is None:
            alert = Alert(
                project=rule.project,
                rule=rule,
                fingerprint=key,
                labels=finding.labels,
                started_at=now,
            )
            changes["pending"] += 1
        alert.rule = rule
        alert.value = finding.value
        alert.summary = finding.summary
        alert.last_seen_at = now
        if alert.state == State.PENDING and now - alert.started_at >= dt.timedelta(
            seconds=rule.for_seconds
        ):
            alert.state = State.FIRING
            alert.firing_at = now
        alert.save()
        if alert.state == State.FIRING:
            _notify_firing(rule, alert, webhooks, now, changes, muted)
    for key, alert in open_alerts.items():
        if key in seen:
            continue
        if alert.state == State.PENDING:
            alert.delete()
            changes["dropped"] += 1
            continue
        alert.rule = rule
        resolve(alert, now)
        changes["resolved"] += 1


def _notify_firing(rule: AlertRule, alert: Alert, webhooks, now, changes, muted: bool) -> None:
    pushed = [w for w in webhooks if w.format == Format.ALERTMANAGER_PUSH]
    told = [w for w in webhooks if w.format != Format.ALERTMANAGER_PUSH]
    if alert.notified_state != State.FIRING:
        if muted:
            return
        notify_webhooks(alert, "firing", now, webhooks)
        alert.notified_state = State.FIRING
        alert.last_notified_at = alert.last_pushed_at = now
        changes["firing"] += 1
    else:
        told_due = (
            not muted
            and rule.repeat_seconds
            and now - alert.last_notified_at >= dt.timedelta(seconds=rule.repeat_seconds)
        )
        # Kept up during a mute too: Alertmanager takes an alert not re-sent
        # for a few minutes as resolved and would page "resolved" while it
        # still fires; re-sends of an alert it already has make no noise.
        push_now = bool(pushed) and push_due(alert.last_pushed_at, now)
        if not (told_due or push_now):
            return
        if told_due:
            notify_webhooks(alert, "repeat", now, told)
            alert.last_notified_at = now
            changes["repeat"] += 1
        if push_now:
            notify_webhooks(alert, "repeat", now, pushed)
            alert.last_pushed_at = now
    alert.save(update_fields=["notified_state", "last_notified_at", "last_pushed_at"])


def push_due(last_pushed_at: dt.datetime | None, now: dt.datetime) -> bool:
    """Whether an Alertmanager must be sent a firing alert again. Evaluations
    come every ALERT_EVALUATION_SECONDS, so the re-send happens one interval
    early rather than up to one interval late: never more than a minute
    apart, as Prometheus's default resend delay."""
    if last_pushed_at is None:
        return True
    early = min(settings.ALERT_EVALUATION_SECONDS, PUSH_RESEND_SECONDS)
    return now - last_pushed_at >= dt.timedelta(seconds=PUSH_RESEND_SECONDS - early)


def resolve(alert: Alert, now: dt.datetime) -> None:
    """Resolve a firing alert; receivers that were told it fired are told it
    ended, muted or not (an alert that fired and ended within a mute was never
    announced, so its end is not either)."""
    alert.state = State.RESOLVED
    alert.resolved_at = now
    if alert.notified_state == State.FIRING:
        notify_webhooks(alert, "resolved", now)
        alert.last_notified_at = now
        alert.notified_state = State.RESOLVED
    alert.save()


def close_rule_alerts(rule: AlertRule, now: dt.datetime | None = None) -> int:
    """Resolve every open alert of a rule (it is being disabled or deleted), in the
    caller's transaction; returns how many."""
    now = now or timezone.now()
    closed = 0
    for alert in Alert.objects.select_for_update().filter(rule=rule, state__in=OPEN_STATES):
        alert.rule = rule
        if alert.state == State.PENDING:
            alert.delete()
        else:
            resolve(alert, now)
        closed += 1
    if closed:
        with connection.cursor() as cursor:
            notify.send(cursor, rule.project_id, notify.ALERTS)
    return closed


def evaluate_all(now: dt.datetime | None = None) -> dict[int, dict]:
    """Evaluate every rule once (enabled ones, and disabled ones with open alerts)."""
    now = now or timezone.now()
    results = {}
    for rule_id in AlertRule.objects.order_by("pk").values_list("pk", flat=True):
        results[rule_id] = evaluate_rule(rule_id, now)
    return results


def _evaluate_all_in_thread() -> None:
    close_old_connections()
    try:
        evaluate_all()
    finally:
        close_old_connections()


async def run(stop: asyncio.Event) -> None:
    """The worker loop: evaluate every rule every EVENTSCOPE_ALERT_EVALUATION_SECONDS."""
    interval = settings.ALERT_EVALUATION_SECONDS
    log.info("alert evaluation every %ss", interval)
    while not stop.is_set():
        try:
            await sync_to_async(_evaluate_all_in_thread, thread_sensitive=True)()
        except Exception:
            log.exception("alert evaluation failed; trying again in %ss", interval)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), interval)
