"""The rule kinds and the query that finds where each one breaches (see the package's docstring)."""

import datetime as dt
from dataclasses import dataclass

from dashboard.alerts.rules.params import (
    FILTERS,
    LAG_STATUSES,
    WINDOW,
    Invalid,
    Param,
    _check,
    _filters,
)


@dataclass
class Finding:
    labels: dict[str, str]
    value: float
    summary: str


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
            # sum() of integers is numeric in PostgreSQL: a Decimal rate would
            # not serialise into the webhook's JSON.
            sums[0] += int(count)
            sums[1] += int(errors)
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
