"""What the audit log keeps of changes to alert rules and webhooks, the same
from the pages and the JSON API.

Edits record the changed fields before and after. A webhook's URL may hold
its credential (Slack's do) and its secret is one, so neither is written
down: the URL as viewers see it plus a fingerprint (a change shows, the
value does not), and the secret's public hint.
"""

import hashlib

from dashboard.alerts.inputs import rule_fields
from dashboard.alerts.transports import rfc3339
from dashboard.audit.trail import changes, record


def rule_state(rule) -> dict:
    state = {"id": rule.pk, **rule_fields(rule)}
    state["muted_until"] = rfc3339(state["muted_until"])
    return state


def webhook_state(webhook) -> dict:
    return {
        "id": webhook.pk,
        "name": webhook.name,
        "url": webhook.masked_url,
        "url_fingerprint": hashlib.sha256(webhook.url.encode()).hexdigest()[:12],
        "format": webhook.format,
        "secret_hint": webhook.secret_hint,
    }


# Targets are built from the state, which outlives the row (a deleted row's pk is None).


def _rule_target(state: dict) -> str:
    return f"alert rule {state['id']} “{state['name']}”"


def _webhook_target(state: dict) -> str:
    return f"webhook {state['id']} “{state['name']}”"


def _saved(request, action: str, obj, after: dict, target: str, before: dict | None) -> None:
    """`<action>.created` for a new object, `<action>.updated` with the changed
    fields when anything changed, nothing otherwise."""
    if before is None:
        details, verb = {"after": after}, "created"
    elif before != after:
        details, verb = changes(before, after), "updated"
    else:
        return
    record(f"{action}.{verb}", request=request, project=obj.project, target=target, details=details)


def _deleted(request, action: str, obj, before: dict, target: str) -> None:
    record(
        f"{action}.deleted",
        request=request,
        project=obj.project,
        target=target,
        details={"before": before},
    )


def rule_saved(request, rule, before: dict | None) -> None:
    """`before` is rule_state() ahead of the change, None for a new rule."""
    after = rule_state(rule)
    _saved(request, "alert_rule", rule, after, _rule_target(after), before)


def rule_deleted(request, rule, before: dict) -> None:
    _deleted(request, "alert_rule", rule, before, _rule_target(before))


def webhook_saved(request, webhook, before: dict | None) -> None:
    after = webhook_state(webhook)
    _saved(request, "webhook", webhook, after, _webhook_target(after), before)


def webhook_deleted(request, webhook, before: dict) -> None:
    _deleted(request, "webhook", webhook, before, _webhook_target(before))


def webhook_tested(request, webhook, delivery) -> None:
    record(
        "webhook.tested",
        request=request,
        project=webhook.project,
        target=_webhook_target(webhook_state(webhook)),
        details={"status": delivery.status, "error": delivery.last_error or None},
    )
