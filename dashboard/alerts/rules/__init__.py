"""Rule kinds: their parameters and the query that finds where each one breaches.

A kind's `evaluate(cursor, project, params, now)` returns one `Finding` per
label set whose condition holds right now (a channel and consumer group, a
service, an edge...); evaluate.py turns findings into alert state. Counts
come from collector_stage (exact windows, served by its failures index) and
rates from the per-minute flow rollups; lag comes from the broker pollers.

The kinds and their queries are in `kinds`, the parameters in `params`;
here KINDS registers the kinds and `clean_rule` checks a whole rule.
"""

import datetime as dt
import hashlib
import json
from dataclasses import dataclass

from django.utils.dateparse import parse_datetime

from dashboard.alerts.rules.delivery import DuplicatesKind, MissingEventsKind, OutOfOrderKind
from dashboard.alerts.rules.kinds import (
    DeadLettersKind,
    ErrorRateKind,
    FailedEventsKind,
    Finding,
    LagKind,
    LagSecondsKind,
    LagStatusKind,
    RuleKind,
    StageCountKind,
    ThroughputDropKind,
)
from dashboard.alerts.rules.params import FILTERS, LAG_STATUSES, WINDOW, Invalid, Param

# What `dashboard.alerts.rules` offers, wherever in the package it lives.
__all__ = [
    "FILTERS", "KINDS", "LAG_STATUSES", "MAX_SECONDS", "WINDOW", "DeadLettersKind", "ErrorRateKind",
    "FailedEventsKind", "Finding", "Invalid", "LagKind", "LagSecondsKind", "LagStatusKind", "Param",
    "RuleInput", "RuleKind", "StageCountKind", "ThroughputDropKind", "clean_rule", "fingerprint",
    "DuplicatesKind", "MissingEventsKind", "OutOfOrderKind",
]  # fmt: skip


def fingerprint(rule_id: int, labels: dict) -> str:
    """Stable id of one alert instance: the rule and its label set (16 hex digits,
    like Alertmanager's)."""
    raw = json.dumps([rule_id, sorted(labels.items())], separators=(",", ":"))
    return hashlib.sha256(raw.encode()).hexdigest()[:16]


KINDS: dict[str, RuleKind] = {
    "lag": LagKind(),
    "lag_seconds": LagSecondsKind(),
    "lag_status": LagStatusKind(),
    "error_rate": ErrorRateKind(),
    "failed_events": FailedEventsKind(),
    "throughput_drop": ThroughputDropKind(),
    "dead_letters": DeadLettersKind(),
    "duplicates": DuplicatesKind(),
    "missing_events": MissingEventsKind(),
    "out_of_order": OutOfOrderKind(),
}


# ---- whole-rule input ------------------------------------------------------------

MAX_SECONDS = 7 * 86400


def _seconds(data, name, default, minimum=0):
    value = data.get(name, default)
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise Invalid(f"{name} must be a whole number of seconds")
    if not minimum <= value <= MAX_SECONDS:
        raise Invalid(f"{name} must be between {minimum} and {MAX_SECONDS} (7 days)")
    return value


def _muted_until(text: str) -> dt.datetime | None:
    if not text:
        return None
    problem = "muted_until must be an RFC 3339 time or null"
    try:
        # parse_datetime returns None for a wrong shape but raises for a right
        # shape with impossible values (month 13).
        parsed = parse_datetime(text.replace("Z", "+00:00"))
        if parsed is not None:
            if parsed.tzinfo is None:
                parsed = parsed.replace(tzinfo=dt.UTC)
            # Stored in UTC: a time with no UTC form (year 9999 west of UTC) is refused.
            parsed = parsed.astimezone(dt.UTC)
    except (ValueError, OverflowError) as exc:
        raise Invalid(f"{problem} ({exc})") from None
    if parsed is None:
        raise Invalid(problem)
    return parsed


@dataclass
class RuleInput:
    name: str
    kind: str
    params: dict
    for_seconds: int
    repeat_seconds: int
    webhooks: list[int]
    enabled: bool
    muted_until: dt.datetime | None


def clean_rule(data, current: dict | None = None, webhook_ids: set[int] = frozenset()) -> RuleInput:
    """Validate a rule from the API or a form. Fields missing from `data` keep
    their `current` values (or defaults); raises Invalid."""
    if not isinstance(data, dict):
        raise Invalid("the body must be a JSON object")
    unknown = sorted(set(data) - set(RuleInput.__dataclass_fields__) - {"id"})
    if unknown:
        raise Invalid(f"{unknown[0]} is not a field of an alert rule")
    merged = {**(current or {}), **data}
    name = merged.get("name")
    if not isinstance(name, str) or not name.strip():
        raise Invalid("name is required")
    if len(name.strip()) > 100:
        raise Invalid("name is longer than 100 characters")
    kind = merged.get("kind")
    if kind not in KINDS:
        raise Invalid(f"kind must be one of {', '.join(KINDS)}")
    params = KINDS[kind].validate(merged.get("params"))
    webhooks = merged.get("webhooks", [])
    if not isinstance(webhooks, list) or not all(
        isinstance(w, int) and not isinstance(w, bool) for w in webhooks
    ):
        raise Invalid("webhooks must be a list of webhook ids")
    missing = sorted(set(webhooks) - set(webhook_ids))
    if missing:
        raise Invalid(f"webhooks: no webhook {missing[0]} in this project")
    enabled = merged.get("enabled", True)
    if not isinstance(enabled, bool):
        raise Invalid("enabled must be true or false")
    muted_until = merged.get("muted_until")
    if isinstance(muted_until, str):
        muted_until = _muted_until(muted_until)
    elif muted_until is not None and not isinstance(muted_until, dt.datetime):
        raise Invalid("muted_until must be an RFC 3339 time or null")
    repeat_seconds = _seconds(merged, "repeat_seconds", 4 * 3600)
    if 0 < repeat_seconds < 60:
        raise Invalid("repeat_seconds must be 0 (never repeat) or at least 60")
    return RuleInput(
        name=name.strip(),
        kind=kind,
        params=params,
        for_seconds=_seconds(merged, "for_seconds", 0),
        repeat_seconds=repeat_seconds,
        webhooks=sorted(set(webhooks)),
        enabled=enabled,
        muted_until=muted_until,
    )
