"""Pages: current alerts (live) with the rules, the rule form, webhooks with
their delivery log. Viewers read; editors change."""

import datetime as dt

from channels.db import database_sync_to_async
from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.shortcuts import get_object_or_404, redirect, render
from django.template.loader import render_to_string
from django.urls import reverse
from django.utils import timezone
from django.utils.http import urlencode
from django.views.decorators.http import require_POST

from dashboard.access import can, page_view
from dashboard.accounts.models import Role
from dashboard.alerts import history
from dashboard.alerts.api import (
    alerts_queryset,
    deliveries_for_display,
    recent_attempts,
    send_test,
)
from dashboard.alerts.inputs import clean_webhook, delete_rule, save_rule
from dashboard.alerts.models import Alert, AlertRule, Format, Kind, State, Webhook
from dashboard.alerts.rules import KINDS, LAG_STATUSES, Invalid
from dashboard.alerts.seen import seen_names
from dashboard.links import with_query
from dashboard.live import LiveConsumer
from dashboard.query_params import BadParameter

MUTE_CHOICES = (("3600", "1 hour"), ("14400", "4 hours"), ("86400", "1 day"), ("604800", "1 week"))
DELIVERIES_SHOWN = 50
NOTIFICATIONS_SHOWN = 5  # per alert on the alerts page
ALERTS_PER_PAGE = 50


def _require_editor(request):
    if not can(request, Role.EDITOR):
        raise PermissionDenied("this needs the editor role")


def _project_url(request, name, *args):
    return with_query(reverse(name, args=args), {"project": request.project.slug})


def live_context(project, params, now=None) -> dict:
    """The current alerts the live part of the page shows, for the page and
    for pushes: `state=` narrows them, and `before=` (an alert id) names
    where an older page starts."""
    # The page shows each alert's last few notifications, not their attempts.
    alerts = alerts_queryset(project, params, now, deliveries=NOTIFICATIONS_SHOWN, attempts=False)
    before = params.get("before") or ""
    if before:
        if not (before.isascii() and before.isdigit()):
            raise BadParameter(f"before={before!r} is not an alert id")
        alerts = alerts.filter(pk__lt=int(before))
    alerts = list(alerts.order_by("-pk")[: ALERTS_PER_PAGE + 1])
    shown = alerts[:ALERTS_PER_PAGE]
    filters = {"state": params.get("state") or "", "project": project.slug}
    here = reverse("alerts")
    return {
        "alerts": shown,
        # Of every open alert, whatever the filter and page show.
        "firing": Alert.objects.filter(project=project, state=State.FIRING).count(),
        "pending": Alert.objects.filter(project=project, state=State.PENDING).count(),
        "states": State.values,
        "filters": filters,
        "older_url": len(alerts) > ALERTS_PER_PAGE
        and with_query(here, {**filters, "before": shown[-1].pk}),
        "newest_url": bool(before) and with_query(here, filters),
        "live_query": urlencode({k: v for k, v in {**filters, "before": before}.items() if v}),
    }


@page_view()
def alerts_page(request):
    """Current alerts (live, filtered by state, a page at a time) and the rules.
    With htmx (the filter form and the pager), only the alerts."""
    error = None
    try:
        context = live_context(request.project, request.GET)
    except BadParameter as exc:
        error = str(exc)
        context = live_context(request.project, {})
    context["error"] = error
    if request.htmx:
        # htmx swaps only 2xx answers; the message is in the partial.
        return render(request, "alerts/page.html#results", context)
    rules = AlertRule.objects.filter(project=request.project).prefetch_related("webhooks")
    context.update(
        area="alerts",
        rules=rules,
        now=timezone.now(),
        editor=can(request, Role.EDITOR),
        mute_choices=MUTE_CHOICES,
    )
    return render(request, "alerts/page.html", context, status=400 if error else 200)


# What the form calls each parameter (the API keeps the names on the right).
PARAM_LABELS = {
    "threshold": "Threshold",
    "window_seconds": "Counting window (seconds)",
    "min_events": "Minimum events",
    "by": "Judge per",
    "statuses": "Lag statuses that alert",
    "system": "Messaging system",
    "channel": "Channel",
    "group": "Consumer group",
    "service": "Service",
}
# Parameters picked from what Eventscope has seen (dashboard/alerts/seen.py).
PICKED = ("system", "channel", "group", "service")
# The fields of the whole rule, for errors reported by name (clean_rule's messages).
RULE_FIELDS = ("name", "kind", "for_seconds", "repeat_seconds", "webhooks")


def _param_fields(selected_kind: str, values: dict) -> list[dict]:
    """Every parameter of every kind once, tagged with the kinds that use it
    and each kind's help, so the form shows only the current kind's
    (static/js/alerts.js)."""
    fields: dict[str, dict] = {}
    for kind_name, kind in KINDS.items():
        for param in kind.params:
            entry = fields.setdefault(
                param.name,
                {
                    "name": param.name,
                    "label": PARAM_LABELS.get(
                        param.name, param.name.replace("_", " ").capitalize()
                    ),
                    "type": param.type,
                    "helps": [],
                    "kinds": [],
                    "choices": param.choices,
                    "default": param.default,
                    "required": param.required,
                    "picked": param.name in PICKED,
                },
            )
            entry["kinds"].append(kind_name)
            entry["helps"].append({"kind": kind_name, "text": param.help})
    for entry in fields.values():
        value = values.get(entry["name"], "")
        if entry["type"] == "statuses":
            chosen = value if isinstance(value, list) else str(value or "").split(",")
            chosen = [v.strip() for v in chosen if v and v.strip()] or entry["default"]
            entry["options"] = [{"value": s, "checked": s in chosen} for s in LAG_STATUSES]
        if isinstance(value, list):
            value = ",".join(value)
        entry["value"] = "" if value is None else value
        entry["shown"] = selected_kind in entry["kinds"]
        entry["kinds"] = " ".join(entry["kinds"])
        for help_ in entry["helps"]:
            help_["shown"] = help_["kind"] == selected_kind
    return list(fields.values())


def _field_of(error: str) -> str:
    """The form field an error message of clean_rule is about ("params.threshold
    must be …" → "param_threshold"); "" when it names none."""
    word = error.split(" ", 1)[0].rstrip(":,")
    if word.startswith("params."):
        return "param_" + word.removeprefix("params.")
    return word if word in RULE_FIELDS else ""


def _form_data(post) -> dict:
    kind = post.get("kind", "")
    params = {}
    if kind in KINDS:
        for param in KINDS[kind].params:
            if param.type == "statuses":  # checkboxes, one per status
                value = ",".join(post.getlist(f"param_{param.name}")).strip()
            else:
                value = post.get(f"param_{param.name}", "").strip()
            if value != "":
                params[param.name] = value
    return {
        "name": post.get("name", ""),
        "kind": kind,
        "params": params,
        "for_seconds": post.get("for_seconds", "0").strip() or "0",
        "repeat_seconds": post.get("repeat_seconds", "0").strip() or "0",
        "webhooks": [int(w) for w in post.getlist("webhooks") if w.isdigit()],
        "enabled": post.get("enabled") == "on",
    }


@page_view(Role.EDITOR)
def rule_form(request, rule_id=None):
    rule = None
    if rule_id is not None:
        rule = get_object_or_404(AlertRule, project=request.project, pk=rule_id)
    error = None
    if request.method == "POST":
        data = _form_data(request.POST)
        for name in ("for_seconds", "repeat_seconds"):
            if isinstance(data[name], str) and data[name].isdigit():
                data[name] = int(data[name])
        if rule is not None:
            data["muted_until"] = rule.muted_until
        before = history.rule_state(rule) if rule is not None else None
        try:
            saved = save_rule(request.project, data, rule)
        except Invalid as exc:
            error = str(exc)
        else:
            history.rule_saved(request, saved, before)
            messages.success(request, f"Rule “{saved.name}” saved.")
            return redirect(_project_url(request, "alerts"))
        values = data
    elif rule is not None:
        values = {
            "name": rule.name,
            "kind": rule.kind,
            "params": rule.params,
            "for_seconds": rule.for_seconds,
            "repeat_seconds": rule.repeat_seconds,
            "webhooks": [w.pk for w in rule.webhooks.all()],
            "enabled": rule.enabled,
        }
    else:
        values = {
            "name": "",
            "kind": "failed_events",
            "params": {},
            "for_seconds": 60,
            "repeat_seconds": 14400,
            "webhooks": [],
            "enabled": True,
        }
    context = {
        "area": "alerts",
        "rule": rule,
        "values": values,
        "error": error,
        "error_field": _field_of(error) if error else "",
        "kinds": Kind.choices,
        "param_fields": _param_fields(values["kind"], values["params"]),
        "seen": seen_names(request.project.id),
        "webhooks": Webhook.objects.filter(project=request.project),
    }
    return render(request, "alerts/rule_form.html", context, status=400 if error else 200)


@require_POST
@page_view(Role.EDITOR)
def mute_rule(request, rule_id):
    rule = get_object_or_404(AlertRule, project=request.project, pk=rule_id)
    seconds = request.POST.get("seconds", "0")
    if not seconds.isdigit():
        messages.error(request, "Choose how long to mute for.")
        return redirect(_project_url(request, "alerts"))
    until = timezone.now() + dt.timedelta(seconds=int(seconds)) if int(seconds) else None
    before = history.rule_state(rule)
    AlertRule.objects.filter(pk=rule.pk).update(muted_until=until, updated_at=timezone.now())
    rule.muted_until = until
    history.rule_saved(request, rule, before)
    if until:
        messages.success(request, f"“{rule.name}” muted until {until:%Y-%m-%d %H:%M} UTC.")
    else:
        messages.success(request, f"“{rule.name}” unmuted.")
    return redirect(_project_url(request, "alerts"))


@require_POST
@page_view(Role.EDITOR)
def remove_rule(request, rule_id):
    rule = get_object_or_404(AlertRule, project=request.project, pk=rule_id)
    before = history.rule_state(rule)
    delete_rule(rule)
    history.rule_deleted(request, rule, before)
    messages.success(request, f"Rule “{rule.name}” deleted.")
    return redirect(_project_url(request, "alerts"))


def _webhook_values(post) -> dict:
    return {k: post.get(k, "") for k in ("name", "url", "format", "secret", "ca_bundle")}


@page_view()
def webhooks_page(request):
    error = None
    values = {"name": "", "url": "", "format": Format.JSON, "secret": "", "ca_bundle": ""}
    if request.method == "POST":
        _require_editor(request)
        values = _webhook_values(request.POST)
        try:
            fields = clean_webhook(values)
        except Invalid as exc:
            error = str(exc)
        else:
            webhook = Webhook.objects.create(project=request.project, **fields)
            history.webhook_saved(request, webhook, None)
            messages.success(request, f"Webhook “{webhook.name}” created.")
            return redirect(_project_url(request, "webhook", webhook.pk))
    context = {
        "area": "webhooks",
        "webhooks": Webhook.objects.filter(project=request.project).prefetch_related("rules"),
        "values": values,
        "error": error,
        "formats": Format.choices,
        "editor": can(request, Role.EDITOR),
    }
    return render(request, "alerts/webhooks.html", context, status=400 if error else 200)


@page_view()
def webhook_page(request, webhook_id):
    webhook = get_object_or_404(Webhook, project=request.project, pk=webhook_id)
    error = None
    values = {
        "name": webhook.name,
        "url": webhook.url,
        "format": webhook.format,
        "secret": "",
        "ca_bundle": webhook.ca_bundle,
    }
    if request.method == "POST":
        _require_editor(request)
        values = _webhook_values(request.POST)
        data = dict(values)
        if not data["secret"]:
            data.pop("secret")  # empty keeps the current secret
        try:
            fields = clean_webhook(data, webhook)
        except Invalid as exc:
            error = str(exc)
        else:
            before = history.webhook_state(webhook)
            for name, value in fields.items():
                setattr(webhook, name, value)
            webhook.updated_at = timezone.now()
            webhook.save()
            history.webhook_saved(request, webhook, before)
            messages.success(request, "Webhook saved.")
            return redirect(_project_url(request, "webhook", webhook.pk))
    deliveries = (
        deliveries_for_display()
        .filter(webhook=webhook)
        .select_related("alert__rule")
        .prefetch_related(recent_attempts())
    )
    context = {
        "area": "webhooks",
        "webhook": webhook,
        "values": values,
        "error": error,
        "formats": Format.choices,
        "editor": can(request, Role.EDITOR),
        "deliveries": deliveries[:DELIVERIES_SHOWN],
    }
    return render(request, "alerts/webhook.html", context, status=400 if error else 200)


@require_POST
@page_view(Role.EDITOR)
def test_webhook(request, webhook_id):
    webhook = get_object_or_404(Webhook, project=request.project, pk=webhook_id)
    delivery = send_test(webhook)
    history.webhook_tested(request, webhook, delivery)
    if delivery.status == "delivered":
        attempt = delivery.attempts.last()
        messages.success(request, f"Test notification delivered (HTTP {attempt.status_code}).")
    else:
        messages.error(request, f"Test notification failed: {delivery.last_error}")
    return redirect(_project_url(request, "webhook", webhook.pk))


@require_POST
@page_view(Role.EDITOR)
def remove_webhook(request, webhook_id):
    webhook = get_object_or_404(Webhook, project=request.project, pk=webhook_id)
    before = history.webhook_state(webhook)
    webhook.delete()
    history.webhook_deleted(request, webhook, before)
    messages.success(request, f"Webhook “{webhook.name}” deleted.")
    return redirect(_project_url(request, "webhooks"))


class AlertsConsumer(LiveConsumer):
    """/ws/alerts/: re-renders the current alerts as an htmx out-of-band swap."""

    areas = ("alerts",)

    async def push(self):
        html = await database_sync_to_async(self._render)()
        await self.send(text_data=html)

    def _render(self) -> str:
        try:
            context = live_context(self.project, self.params)
        except BadParameter:
            context = live_context(self.project, {})
        context["oob"] = True
        return render_to_string("alerts/page.html#live", context)
