"""Validation of webhook and alert rule input, shared by the JSON API and the pages."""

import base64
import binascii
import ssl
import urllib.parse

from django.db import transaction
from django.utils import timezone

from dashboard.alerts import outbound
from dashboard.alerts.evaluate import close_rule_alerts
from dashboard.alerts.models import SECRET_PREFIX, AlertRule, Format, Webhook, new_secret
from dashboard.alerts.rules import Invalid, clean_rule

WEBHOOK_FIELDS = ("name", "url", "format", "secret", "ca_bundle")
CA_BUNDLE_MAX_CHARS = 64 * 1024


def clean_webhook(data, current: Webhook | None = None) -> dict:
    """Validated webhook fields; missing ones keep `current`'s values. Raises Invalid."""
    if not isinstance(data, dict):
        raise Invalid("the body must be a JSON object")
    unknown = sorted(set(data) - set(WEBHOOK_FIELDS) - {"id", "secret_hint"})
    if unknown:
        raise Invalid(f"{unknown[0]} is not a field of a webhook")
    old = {f: getattr(current, f) for f in WEBHOOK_FIELDS} if current else {}
    merged = {**old, **{k: v for k, v in data.items() if k in WEBHOOK_FIELDS}}
    name = merged.get("name")
    if not isinstance(name, str) or not name.strip():
        raise Invalid("name is required")
    if len(name.strip()) > 100:
        raise Invalid("name is longer than 100 characters")
    url = merged.get("url")
    if not isinstance(url, str) or not url.strip():
        raise Invalid("url is required")
    url = url.strip()
    if len(url) > 2000:
        raise Invalid("url is longer than 2000 characters")
    try:
        # Names are resolved (and judged again) at every send; here only what
        # is certain without DNS is refused, so a temporary DNS failure does
        # not block saving.
        outbound.check_url(url, lookup=False)
    except outbound.Refused as exc:
        raise Invalid(f"url: {exc}") from None
    fmt = merged.get("format") or Format.JSON
    if fmt not in Format.values:
        raise Invalid(f"format must be one of {', '.join(Format.values)}")
    if fmt == Format.ALERTMANAGER_PUSH and "/api/v1/" in urllib.parse.urlsplit(url).path:
        raise Invalid(
            "url: Alertmanager removed API v1 (0.27); give its base URL "
            "(http://alertmanager:9093) or its /api/v2/alerts URL"
        )
    secret = merged.get("secret")
    if secret in (None, ""):
        secret = new_secret()
    elif not isinstance(secret, str):
        raise Invalid("secret must be a string")
    else:
        secret = secret.strip()
        check_secret(secret)
    ca_bundle = clean_ca_bundle(merged.get("ca_bundle"))
    return {
        "name": name.strip(),
        "url": url,
        "format": fmt,
        "secret": secret,
        "ca_bundle": ca_bundle,
    }


def clean_ca_bundle(value) -> str:
    """PEM CA certificates that verify a receiver behind a private CA; "" for none."""
    if value is None:
        return ""
    if not isinstance(value, str):
        raise Invalid("ca_bundle must be a string of PEM certificates")
    value = value.strip().replace("\r\n", "\n")
    if not value:
        return ""
    if len(value) > CA_BUNDLE_MAX_CHARS:
        raise Invalid(f"ca_bundle is longer than {CA_BUNDLE_MAX_CHARS} characters")
    if "-----BEGIN CERTIFICATE-----" not in value:
        raise Invalid("ca_bundle must hold PEM certificates (-----BEGIN CERTIFICATE-----)")
    try:
        outbound.tls_context(value)
    except (ssl.SSLError, ValueError) as exc:
        raise Invalid(f"ca_bundle: these are not valid PEM certificates ({exc})") from None
    return value + "\n"


def check_secret(secret: str) -> None:
    """A Standard Webhooks secret: whsec_ + base64 of a 24–64 byte key."""
    if not secret.startswith(SECRET_PREFIX):
        raise Invalid(f"secret must start with {SECRET_PREFIX} (leave it empty to generate one)")
    try:
        key = base64.b64decode(secret.removeprefix(SECRET_PREFIX), validate=True)
    except (binascii.Error, ValueError):
        raise Invalid("secret: the part after whsec_ is not valid base64") from None
    if not 24 <= len(key) <= 64:
        raise Invalid(f"secret: the key must be 24 to 64 bytes, this one is {len(key)}")


def project_webhook_ids(project) -> set[int]:
    return set(Webhook.objects.filter(project=project).values_list("pk", flat=True))


def rule_fields(rule: AlertRule) -> dict:
    """A rule as the input shape, for merging a partial update."""
    return {
        "name": rule.name,
        "kind": rule.kind,
        "params": rule.params,
        "for_seconds": rule.for_seconds,
        "repeat_seconds": rule.repeat_seconds,
        "webhooks": sorted(w.pk for w in rule.webhooks.all()),
        "enabled": rule.enabled,
        "muted_until": rule.muted_until,
    }


def save_rule(project, data, rule: AlertRule | None = None) -> AlertRule:
    """Create or update a rule from API/form data; raises Invalid.

    Changing a rule's kind or params starts its alerts afresh (the old ones are
    resolved): their label sets may mean something else now. Disabling a rule
    resolves its alerts.
    """
    current = rule_fields(rule) if rule else None
    if current and "kind" in data and data["kind"] != current["kind"] and "params" not in data:
        # A new kind does not inherit the old kind's parameters.
        current["params"] = {}
    cleaned = clean_rule(data, current, project_webhook_ids(project))
    now = timezone.now()
    with transaction.atomic():
        if rule is None:
            rule = AlertRule(project=project, created_at=now)
        else:
            rule = AlertRule.objects.select_for_update().get(pk=rule.pk)
            if (
                cleaned.kind != rule.kind
                or cleaned.params != rule.params
                or (rule.enabled and not cleaned.enabled)
            ):
                close_rule_alerts(rule, now)
        for name in ("name", "kind", "params", "for_seconds", "repeat_seconds", "enabled"):
            setattr(rule, name, getattr(cleaned, name))
        rule.muted_until = cleaned.muted_until
        rule.updated_at = now
        rule.save()
        rule.webhooks.set(cleaned.webhooks)
    return rule


def delete_rule(rule: AlertRule) -> None:
    """Delete a rule; receivers told that its alerts fired are told they resolved."""
    with transaction.atomic():
        close_rule_alerts(rule)
        rule.delete()
