"""Rule kinds: their parameters and the query that finds where each one breaches.

A kind's `evaluate(cursor, project, params, now)` returns one `Finding` per
label set whose condition holds right now (a channel and consumer group, a
service, an edge...); evaluate.py turns findings into alert state. Counts
come from collector_stage (exact windows, served by its failures index) and
rates from the per-minute flow rollups; lag comes from the broker pollers.
"""

import datetime as dt
import hashlib
import json
import math
from dataclasses import dataclass

from django.utils.dateparse import parse_datetime

LAG_STATUSES = ("warning", "error", "stalled", "stopped", "rewind")
FILTERS = ("system", "channel", "group", "service")


class Invalid(ValueError):
    """Input a user got wrong; the message names the field and what is expected."""


@dataclass
class Finding:
    labels: dict[str, str]
    value: float
    summary: str


def fingerprint(rule_id: int, labels: dict) -> str:
    """Stable id of one alert instance: the rule and its label set (16 hex digits,
    like Alertmanager's)."""
    raw = json.dumps([rule_id, sorted(labels.items())], separators=(",", ":"))
    return hashlib.sha256(raw.encode()).hexdigest()[:16]


# ---- parameters ----------------------------------------------------------------


@dataclass
class Param:
    name: str
    type: str  # number | int | text | choice | statuses
    default: object = None
    required: bool = False
    minimum: float | None = None
    maximum: float | None = None
    choices: tuple = ()
    help: str = ""


def _check(param: Param, value):
    where = f"params.{param.name}"
    if param.type in ("number", "int"):
        if isinstance(value, str) and value.strip():
            try:
                value = float(value) if param.type == "number" else int(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise Invalid(
                f"{where} must be a {'number' if param.type == 'number' else 'whole number'}"
            )
        # JSON's 1e400 arrives as inf: judged before int(), which cannot take it.
        if isinstance(value, float) and not math.isfinite(value):
            raise Invalid(f"{where} must be a finite number")
        if param.type == "int" and value != int(value):
            raise Invalid(f"{where} must be a whole number")
        try:
            value = int(value) if param.type == "int" else float(value)
        except OverflowError:  # a whole number with hundreds of digits
            raise Invalid(f"{where} is too large") from None
        if param.minimum is not None and value < param.minimum:
            raise Invalid(f"{where} must be at least {param.minimum:g}")
        if param.maximum is not None and value > param.maximum:
            raise Invalid(f"{where} must be at most {param.maximum:g}")
        return value
    if param.type == "text":
        if not isinstance(value, str):
            raise Invalid(f"{where} must be a string")
        if len(value) > 500:
            raise Invalid(f"{where} is longer than 500 characters")
        return value.strip()
    if param.type == "choice":
        if value not in param.choices:
            raise Invalid(f"{where} must be one of {', '.join(param.choices)}")
        return value
    if param.type == "statuses":
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, list) or not value:
            raise Invalid(f"{where} must be a non-empty list of {', '.join(LAG_STATUSES)}")
        for item in value:
            if item not in LAG_STATUSES:
                raise Invalid(f"{where}: {item!r} is not one of {', '.join(LAG_STATUSES)}")
        return sorted(set(value), key=LAG_STATUSES.index)
    raise AssertionError(param.type)


def _filters(*names):
    return [Param(n, "text", default="", help=f"only this {n} (empty: all)") for n in names]


WINDOW = Param(
    "window_seconds", "int", default=300, minimum=60, maximum=86400, help="counting window"
)


# ---- kinds ---------------------------------------------------------------------


class RuleKind:
    """One kind of rule: its parameters and how to find breaches."""

    params: list[Param] = []
    description = ""

    def validate(self, params) -> dict:
        """Cleaned params with defaults filled in; raises Invalid."""
        if params is None:
            params = {}
        if not isinstance(params, dict):
            raise Invalid("params must be an object")
        known = {p.name for p in self.params}
        unknown = sorted(set(params) - known)
        if unknown:
            raise Invalid(
                f"params.{unknown[0]} is not a parameter of this kind "
                f"(expected: {', '.join(sorted(known))})"
            )
        cleaned = {}
        for param in self.params:
            value = params.get(param.name)
            if value is None or value == "":
                if param.required:
                    raise Invalid(f"params.{param.name} is required")
                cleaned[param.name] = param.default
            else:
                cleaned[param.name] = _check(param, value)
        return cleaned

    def evaluate(self, cursor, project, params: dict, now: dt.datetime) -> list[Finding]:
        raise NotImplementedError


def _matches(params: dict, labels: dict) -> bool:
    return all(not params.get(n) or labels.get(n) == params[n] for n in FILTERS if n in params)


def _labels(project, **values) -> dict[str, str]:
    return {"project": project.slug, **{k: str(v) for k, v in values.items() if v}}


def _where(labels: dict) -> str:
    parts = []
    if labels.get("channel"):
        parts.append(
            f"on {labels['channel']}" + (f" ({labels['system']})" if labels.get("system") else "")
        )
    if labels.get("group"):
        parts.append(f"group {labels['group']}")
    if labels.get("service"):
        parts.append(f"service {labels['service']}")
    return " ".join(parts) or "in the project"


class LagKind(RuleKind):
    """Reads the broker pollers' current lag per (system, channel, group)."""

    field = "lag"
    unit = "messages"
    params = [
        Param("threshold", "number", required=True, minimum=0, help="alert above this"),
        *_filters("system", "channel", "group"),
    ]

    def items(self, project):
        try:
            from collector.brokers import lag
        except ImportError:
            raise RuntimeError("consumer lag is not collected by this installation") from None
        return lag.current(project.id)

    def evaluate(self, cursor, project, params, now):
        findings = []
        for item in self.items(project):
            labels = _labels(
                project,
                system=item.get("system"),
                channel=item.get("channel"),
                group=item.get("group"),
            )
            if not _matches(params, labels):
                continue
            finding = self.check(item, params, labels)
            if finding is not None:
                findings.append(finding)
        return findings

    def check(self, item, params, labels):
        value = item.get(self.field)
        if value is None or value <= params["threshold"]:
            return None
        return Finding(
            labels,
            float(value),
            f"{self.field.replace('_', ' ')} {value:g} {self.unit} > {params['threshold']:g} "
            f"{_where(labels)}",
        )


class LagSecondsKind(LagKind):
    field = "lag_seconds"
    unit = "s"


class LagStatusKind(LagKind):
    params = [
        Param(
            "statuses",
            "statuses",
            default=list(LAG_STATUSES),
            help="statuses that alert (comma-separated)",
        ),
        *_filters("system", "channel", "group"),
    ]

    def check(self, item, params, labels):
        status = item.get("status") or "ok"
        if status not in params["statuses"]:
            return None
        reason = item.get("reason") or ""
        summary = f"lag status {status} {_where(labels)}" + (f": {reason}" if reason else "")
        return Finding(labels, float(LAG_STATUSES.index(status) + 1), summary)


def _window_start(now: dt.datetime, seconds: int) -> dt.datetime:
    return now - dt.timedelta(seconds=seconds)


def _minute_floor(moment: dt.datetime) -> dt.datetime:
    return moment.replace(second=0, microsecond=0)


def _split_channel(node: str) -> tuple[str, str]:
    """(system, name) of a channel node id channel:<system>:<name>."""
    _, system, name = node.split(":", 2)
    return system, name


class StageCountKind(RuleKind):
    """Counts stages of some kinds in a sliding window, per service/channel/group."""

    stages: tuple[str, ...] = ()
    what = ""
    params = [
        Param("threshold", "int", default=0, minimum=0, help="alert when more than this"),
        WINDOW,
        *_filters("service", "system", "channel", "group"),
    ]

    def evaluate(self, cursor, project, params, now):
        # Literal stage names (not parameters) let the planner use the
        # partial index on failed/dead-lettered stages.
        stage_list = ", ".join(f"'{s}'" for s in self.stages)
        conditions, args = [], [project.id, _window_start(now, params["window_seconds"]), now]
        for name, column in (
            ("service", "service"),
            ("system", "system"),
            ("channel", "channel"),
            ("group", "consumer_group"),
        ):
            if params.get(name):
                conditions.append(f"AND {column} = %s")
                args.append(params[name])
        cursor.execute(
            f"""SELECT service, system, channel, consumer_group, count(*)
                FROM collector_stage
                WHERE project_id = %s AND stage IN ({stage_list})
                  AND time > %s AND time <= %s {" ".join(conditions)}
                GROUP BY 1, 2, 3, 4""",
            args,
        )
        findings = []
        for service, system, channel, group, count in cursor.fetchall():
            if count <= params["threshold"]:
                continue
            labels = _labels(project, service=service, system=system, channel=channel, group=group)
            findings.append(
                Finding(
                    labels,
                    float(count),
                    f"{count} {self.what} in {params['window_seconds'] // 60 or 1} min "
                    f"{_where(labels)}",
                )
            )
        return findings


class FailedEventsKind(StageCountKind):
    stages = ("failed", "deadlettered")
    what = "failed events"


class DeadLettersKind(StageCountKind):
    stages = ("deadlettered",)
    what = "dead-lettered events"


class ErrorRateKind(RuleKind):
    """Failed share of consumed events, per consume edge or per service."""

    params = [
        Param(
            "threshold",
            "number",
            required=True,
            minimum=0,
            maximum=1,
            help="failed share, 0–1 (0.05 = 5 %)",
        ),
        WINDOW,
        Param("min_events", "int", default=10, minimum=1, help="ignore fewer outcomes than this"),
        Param("by", "choice", default="edge", choices=("edge", "service"), help="edge or service"),
        *_filters("service", "system", "channel", "group"),
    ]

    def evaluate(self, cursor, project, params, now):
        cursor.execute(
            """SELECT source, target, consumer_group, sum(count), sum(errors)
               FROM collector_flowrollup
               WHERE project_id = %s AND kind = 'consume' AND minute >= %s AND minute <= %s
               GROUP BY 1, 2, 3""",
            [project.id, _minute_floor(_window_start(now, params["window_seconds"])), now],
        )
        totals: dict[tuple, list] = {}
        for source, target, group, count, errors in cursor.fetchall():
            system, channel = _split_channel(source)
            service = target.removeprefix("service:")
            labels = _labels(project, service=service, system=system, channel=channel, group=group)
            if not _matches(params, labels):
                continue
            if params["by"] == "service":
                labels = _labels(project, service=service)
            key = tuple(sorted(labels.items()))
            sums = totals.setdefault(key, [0, 0])
            sums[0] += count
            sums[1] += errors
        findings = []
        for key, (count, errors) in totals.items():
            if count < params["min_events"] or not count:
                continue
            rate = errors / count
            if rate > params["threshold"]:
                labels = dict(key)
                findings.append(
                    Finding(
                        labels,
                        rate,
                        f"error rate {rate:.1%} ({errors} of {count}) > "
                        f"{params['threshold']:.1%} {_where(labels)}",
                    )
                )
        return findings


class ThroughputDropKind(RuleKind):
    """Too few events on a channel in the window, for channels seen in the last day
    (or the one channel named, even if it was never seen)."""

    params = [
        Param("min_events", "int", default=1, minimum=1, help="alert below this many events"),
        WINDOW,
        *_filters("system", "channel"),
    ]
    seen_within = dt.timedelta(days=1)

    def evaluate(self, cursor, project, params, now):
        since = _minute_floor(_window_start(now, params["window_seconds"]))
        # A channel's traffic is what producers report publishing or, when
        # only its consumers are instrumented, what they report receiving.
        cursor.execute(
            """SELECT CASE WHEN kind = 'publish' THEN target ELSE source END AS channel,
                      sum(CASE WHEN minute >= %s AND kind = 'publish' THEN count ELSE 0 END),
                      sum(CASE WHEN minute >= %s AND kind = 'consume'
                               THEN greatest(count, received) ELSE 0 END)
               FROM collector_flowrollup
               WHERE project_id = %s AND kind IN ('publish', 'consume')
                 AND minute >= %s AND minute <= %s
               GROUP BY 1""",
            [since, since, project.id, _minute_floor(now - self.seen_within), now],
        )
        seen = {}
        for node, published, consumed in cursor.fetchall():
            system, channel = _split_channel(node)
            seen[(system, channel)] = max(published, consumed)
        if params.get("channel") and params.get("system"):
            seen.setdefault((params["system"], params["channel"]), 0)
        findings = []
        for (system, channel), count in sorted(seen.items()):
            labels = _labels(project, system=system, channel=channel)
            if not _matches(params, labels) or count >= params["min_events"]:
                continue
            findings.append(
                Finding(
                    labels,
                    float(count),
                    f"only {count} events in {params['window_seconds'] // 60} min "
                    f"(expected at least {params['min_events']}) {_where(labels)}",
                )
            )
        return findings


KINDS: dict[str, RuleKind] = {
    "lag": LagKind(),
    "lag_seconds": LagSecondsKind(),
    "lag_status": LagStatusKind(),
    "error_rate": ErrorRateKind(),
    "failed_events": FailedEventsKind(),
    "throughput_drop": ThroughputDropKind(),
    "dead_letters": DeadLettersKind(),
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
