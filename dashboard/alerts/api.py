"""JSON API of alert rules, webhooks and alert instances (CONTRACT §4).

Reading needs the viewer role (a session or a read token); changes need the
editor role and a signed-in session. Errors are {"error": "..."} with the
status that fits: 400 for input that is wrong (the message says which
field and why), 404 for an id not in the project.
"""

import datetime as dt
import json
import uuid

from django.db import transaction
from django.db.models import Prefetch, Q
from django.http import HttpResponse, JsonResponse
from django.utils import timezone
from django.views.decorators.csrf import csrf_exempt

from dashboard.access import api_view, json_error
from dashboard.accounts.models import Membership, Role
from dashboard.alerts import history, outbox, sender
from dashboard.alerts.inputs import clean_webhook, delete_rule, save_rule
from dashboard.alerts.models import Alert, AlertRule, Attempt, Delivery, State, Webhook
from dashboard.alerts.rules import Invalid
from dashboard.alerts.transports import rfc3339
from dashboard.query_params import (
    BadParameter,
    decode_cursor,
    encode_cursor,
    parse_limit,
    parse_window,
)

DELIVERIES_PER_ALERT = 20
DELIVERIES_PER_WEBHOOK = 50
# More than a delivery retried with backoff for a day makes; the newest are shown.
ATTEMPTS_PER_DELIVERY = 100


# ---- shapes ----------------------------------------------------------------------


def rule_json(rule: AlertRule) -> dict:
    return {
        "id": rule.pk,
        "name": rule.name,
        "kind": rule.kind,
        "params": rule.params,
        "for_seconds": rule.for_seconds,
        "repeat_seconds": rule.repeat_seconds,
        "webhooks": sorted(w.pk for w in rule.webhooks.all()),
        "enabled": rule.enabled,
        "muted_until": rfc3339(rule.muted_until),
        "created_at": rfc3339(rule.created_at),
        "updated_at": rfc3339(rule.updated_at),
        "last_evaluated_at": rfc3339(rule.last_evaluated_at),
        "last_error": rule.last_error or None,
    }


def webhook_json(webhook: Webhook, editor: bool = False) -> dict:
    """A webhook; its URL in full and its secret only for `editor`s (the URL
    can be the credential itself, as a Slack webhook's is)."""
    data = {
        "id": webhook.pk,
        "name": webhook.name,
        "url": webhook.url if editor else webhook.masked_url,
        "format": webhook.format,
        "secret_hint": webhook.secret_hint,
        "ca_bundle": webhook.ca_bundle,
        "created_at": rfc3339(webhook.created_at),
        "updated_at": rfc3339(webhook.updated_at),
    }
    if editor:
        data["secret"] = webhook.secret
    return data


def attempt_json(attempt: Attempt) -> dict:
    return {
        "at": rfc3339(attempt.at),
        "status_code": attempt.status_code,
        "error": attempt.error or None,
        "duration_ms": attempt.duration_ms,
        "next_retry_at": rfc3339(attempt.next_retry_at),
    }


def delivery_json(delivery: Delivery) -> dict:
    return {
        "id": delivery.pk,
        "webhook": delivery.webhook_id,
        "alert": delivery.alert_id,
        "event": delivery.event,
        "message_id": delivery.message_id,
        "status": delivery.status,
        "created_at": rfc3339(delivery.created_at),
        "delivered_at": rfc3339(delivery.delivered_at),
        "next_attempt_at": rfc3339(delivery.next_attempt_at)
        if delivery.status == "pending"
        else None,
        "give_up_at": rfc3339(delivery.give_up_at),
        "last_error": delivery.last_error or None,
        "attempt_count": delivery.attempt_count,
        # Oldest first, as they happened; at most the newest ATTEMPTS_PER_DELIVERY.
        "attempts": [attempt_json(a) for a in reversed(newest_attempts(delivery))],
    }


def alert_json(alert: Alert) -> dict:
    return {
        "id": alert.pk,
        "rule": alert.rule_id,
        "rule_name": alert.rule.name,
        "kind": alert.rule.kind,
        "state": alert.state,
        "fingerprint": alert.fingerprint,
        "labels": alert.labels,
        "value": alert.value,
        "summary": alert.summary,
        "started_at": rfc3339(alert.started_at),
        "firing_at": rfc3339(alert.firing_at),
        "resolved_at": rfc3339(alert.resolved_at),
        "last_notified_at": rfc3339(alert.last_notified_at),
        "deliveries": [delivery_json(d) for d in alert.recent_deliveries],
    }


# Both prefetches are cut in SQL, not after fetching: Django runs a sliced
# prefetch as ROW_NUMBER() OVER (PARTITION BY the parent's id) <= the limit,
# so an alert notified for weeks, or a delivery retried all day, reads no
# more rows than are shown.


def recent_attempts() -> Prefetch:
    """The newest ATTEMPTS_PER_DELIVERY attempts of each delivery, newest first,
    as `delivery.recent_attempts`."""
    return Prefetch(
        "attempts",
        queryset=Attempt.objects.order_by("-at", "-id")[:ATTEMPTS_PER_DELIVERY],
        to_attr="recent_attempts",
    )


def newest_attempts(delivery: Delivery) -> list[Attempt]:
    prefetched = getattr(delivery, "recent_attempts", None)
    if prefetched is not None:
        return prefetched
    return list(delivery.attempts.order_by("-at", "-id")[:ATTEMPTS_PER_DELIVERY])


def deliveries_for_display():
    """Deliveries, newest first, without their bodies (never shown, and the
    largest column)."""
    return Delivery.objects.defer("body").order_by("-created_at", "-id")


def recent_deliveries(limit: int, attempts: bool = True) -> Prefetch:
    """The newest `limit` deliveries of each alert as `alert.recent_deliveries`,
    with their recent attempts unless `attempts` is False."""
    deliveries = deliveries_for_display()
    if attempts:
        deliveries = deliveries.prefetch_related(recent_attempts())
    return Prefetch("deliveries", queryset=deliveries[:limit], to_attr="recent_deliveries")


# ---- plumbing ----------------------------------------------------------------------


def _body(request):
    try:
        return json.loads(request.body or b"null")
    except (ValueError, UnicodeDecodeError) as exc:
        raise Invalid(f"the body is not valid JSON: {exc}") from None


def _page(queryset, params, descending=False):
    """Id-ordered page of `queryset` and the next cursor."""
    limit = parse_limit(params)
    cursor = decode_cursor(params)
    if cursor is not None and not (isinstance(cursor, int) and not isinstance(cursor, bool)):
        raise BadParameter("cursor is not one this API returned")
    if descending:
        queryset = queryset.order_by("-pk")
        if cursor is not None:
            queryset = queryset.filter(pk__lt=cursor)
    else:
        queryset = queryset.order_by("pk")
        if cursor is not None:
            queryset = queryset.filter(pk__gt=cursor)
    items = list(queryset[: limit + 1])
    following = items[limit - 1].pk if len(items) > limit else None
    return items[:limit], (encode_cursor(following) if following is not None else None)


def _methods(**handlers):
    """One URL, a view per method (each with its own role)."""

    @csrf_exempt
    def dispatch(request, *args, **kwargs):
        handler = handlers.get(request.method.lower())
        if handler is None:
            allowed = ", ".join(m.upper() for m in handlers)
            response = json_error(405, f"method {request.method} not allowed (use {allowed})")
            response["Allow"] = allowed
            return response
        try:
            return handler(request, *args, **kwargs)
        except (Invalid, BadParameter) as exc:
            return json_error(400, str(exc))

    return dispatch


def _guard(view):
    """Turn input errors raised inside an authenticated view into 400s."""

    def wrapped(request, *args, **kwargs):
        try:
            return view(request, *args, **kwargs)
        except (Invalid, BadParameter) as exc:
            return json_error(400, str(exc))

    return wrapped


# ---- alert rules -------------------------------------------------------------------


@api_view(Role.VIEWER)
def _list_rules(request):
    rules = AlertRule.objects.filter(project=request.project).prefetch_related("webhooks")
    items, following = _page(rules, request.GET)
    return JsonResponse({"items": [rule_json(r) for r in items], "next_cursor": following})


@api_view(Role.EDITOR)
@_guard
def _create_rule(request):
    rule = save_rule(request.project, _body(request))
    history.rule_saved(request, rule, None)
    return JsonResponse(rule_json(rule), status=201)


def _rule_or_404(request, rule_id):
    return AlertRule.objects.filter(project=request.project, pk=rule_id).first()


@api_view(Role.VIEWER)
def _get_rule(request, rule_id):
    rule = _rule_or_404(request, rule_id)
    if rule is None:
        return json_error(404, f"no alert rule {rule_id} in this project")
    return JsonResponse(rule_json(rule))


@api_view(Role.EDITOR)
@_guard
def _update_rule(request, rule_id):
    rule = _rule_or_404(request, rule_id)
    if rule is None:
        return json_error(404, f"no alert rule {rule_id} in this project")
    before = history.rule_state(rule)
    rule = save_rule(request.project, _body(request), rule)
    history.rule_saved(request, rule, before)
    return JsonResponse(rule_json(rule))


@api_view(Role.EDITOR)
def _delete_rule(request, rule_id):
    rule = _rule_or_404(request, rule_id)
    if rule is None:
        return json_error(404, f"no alert rule {rule_id} in this project")
    before = history.rule_state(rule)
    delete_rule(rule)
    history.rule_deleted(request, rule, before)
    return HttpResponse(status=204)


alert_rules = _methods(get=_list_rules, post=_create_rule)
alert_rule = _methods(get=_get_rule, put=_update_rule, delete=_delete_rule)


# ---- webhooks ----------------------------------------------------------------------


def _webhook_or_none(request, webhook_id):
    return Webhook.objects.filter(project=request.project, pk=webhook_id).first()


def _is_editor(request) -> bool:
    # Secrets and full URLs are for the people who configure receivers, not
    # every reader (read tokens included).
    return request.api_token is None and Membership.has_role(
        request.user, request.project.pk, Role.EDITOR
    )


@api_view(Role.VIEWER)
def _list_webhooks(request):
    items, following = _page(Webhook.objects.filter(project=request.project), request.GET)
    editor = _is_editor(request)
    return JsonResponse(
        {"items": [webhook_json(w, editor) for w in items], "next_cursor": following}
    )


@api_view(Role.EDITOR)
@_guard
def _create_webhook(request):
    fields = clean_webhook(_body(request))
    webhook = Webhook.objects.create(project=request.project, **fields)
    history.webhook_saved(request, webhook, None)
    return JsonResponse(webhook_json(webhook, editor=True), status=201)


@api_view(Role.VIEWER)
def _get_webhook(request, webhook_id):
    webhook = _webhook_or_none(request, webhook_id)
    if webhook is None:
        return json_error(404, f"no webhook {webhook_id} in this project")
    data = webhook_json(webhook, _is_editor(request))
    deliveries = (
        deliveries_for_display().filter(webhook=webhook).prefetch_related(recent_attempts())
    )
    data["deliveries"] = [delivery_json(d) for d in deliveries[:DELIVERIES_PER_WEBHOOK]]
    return JsonResponse(data)


@api_view(Role.EDITOR)
@_guard
def _update_webhook(request, webhook_id):
    webhook = _webhook_or_none(request, webhook_id)
    if webhook is None:
        return json_error(404, f"no webhook {webhook_id} in this project")
    fields = clean_webhook(_body(request), webhook)
    before = history.webhook_state(webhook)
    for name, value in fields.items():
        setattr(webhook, name, value)
    webhook.updated_at = timezone.now()
    webhook.save()
    history.webhook_saved(request, webhook, before)
    return JsonResponse(webhook_json(webhook, editor=True))


@api_view(Role.EDITOR)
def _delete_webhook(request, webhook_id):
    webhook = _webhook_or_none(request, webhook_id)
    if webhook is None:
        return json_error(404, f"no webhook {webhook_id} in this project")
    before = history.webhook_state(webhook)
    webhook.delete()
    history.webhook_deleted(request, webhook, before)
    return HttpResponse(status=204)


def send_test(webhook: Webhook) -> Delivery:
    """Queue a test notification and send it right away (the person is waiting);
    it is recorded like any delivery but not retried."""
    now = timezone.now()
    token = uuid.uuid4()
    with transaction.atomic():
        delivery = outbox.enqueue(webhook, outbox.sample_notification(webhook, now), now)
        # Claimed before it commits, so a running sender leaves it to us; and
        # tried once: a failed test is shown, not retried for hours.
        Delivery.objects.filter(pk=delivery.pk).update(
            give_up_at=now, claim_token=token, claimed_until=now + sender.lease()
        )
    sender.send(delivery.pk, token)
    delivery.refresh_from_db()
    return delivery


@api_view(Role.EDITOR)
def _test_webhook(request, webhook_id):
    webhook = _webhook_or_none(request, webhook_id)
    if webhook is None:
        return json_error(404, f"no webhook {webhook_id} in this project")
    delivery = send_test(webhook)
    history.webhook_tested(request, webhook, delivery)
    return JsonResponse(delivery_json(delivery))


webhooks = _methods(get=_list_webhooks, post=_create_webhook)
webhook = _methods(get=_get_webhook, put=_update_webhook, delete=_delete_webhook)
webhook_test = _methods(post=_test_webhook)


# ---- alert instances -------------------------------------------------------------------


def alerts_queryset(
    project,
    params,
    now: dt.datetime | None = None,
    deliveries: int = DELIVERIES_PER_ALERT,
    attempts: bool = True,
):
    """Alerts active at some time in the window (default the last 24h): open
    ones, and resolved ones that ended after `since`; with `until`, only those
    that started by then. `state=` and `rule=` narrow it. Each carries its
    newest `deliveries` as `recent_deliveries`, with their attempts unless
    `attempts` is False."""
    since, until = parse_window(params, default="24h", now=now)
    alerts = Alert.objects.filter(project=project).filter(
        Q(state__in=(State.PENDING, State.FIRING)) | Q(resolved_at__gte=since)
    )
    if params.get("until"):
        # Only when asked: against the default (now), an alert stamped by a
        # worker whose clock runs a little ahead would go missing.
        alerts = alerts.filter(started_at__lte=until)
    state = params.get("state")
    if state:
        if state not in State.values:
            raise BadParameter(f"state={state!r}: expected one of {', '.join(State.values)}")
        alerts = alerts.filter(state=state)
    rule = params.get("rule")
    if rule:
        if not (rule.isascii() and rule.isdigit()):
            raise BadParameter(f"rule={rule!r} is not a rule id")
        alerts = alerts.filter(rule_id=int(rule))
    return alerts.select_related("rule").prefetch_related(recent_deliveries(deliveries, attempts))


@api_view(Role.VIEWER)
def _list_alerts(request):
    items, following = _page(alerts_queryset(request.project, request.GET), request.GET, True)
    return JsonResponse({"items": [alert_json(a) for a in items], "next_cursor": following})


alerts = _methods(get=_list_alerts)
