"""Rule kinds on delivery findings (dashboard.delivery): duplicates,
missing_events, out_of_order. Each counts the distinct events of its kind
published in the window, per (system, channel, group)."""

from dashboard.alerts.rules.kinds import Finding, RuleKind, _labels, _where, _window_start
from dashboard.alerts.rules.params import Param, _filters

DELIVERY_WINDOW = Param(
    "window_seconds", "int", default=900, minimum=60, maximum=86400,
    help="events published this long ago or since",
)  # fmt: skip


class DeliveryFindingsKind(RuleKind):
    finding_kind = ""
    what = ""
    params = [
        Param("threshold", "int", default=0, minimum=0, help="alert when more events than this"),
        DELIVERY_WINDOW,
        *_filters("system", "channel", "group"),
    ]

    def evaluate(self, cursor, project, params, now):
        conditions, args = [], [project.id, self.finding_kind]
        args += [_window_start(now, params["window_seconds"]), now]
        for name, column in (
            ("system", "system"),
            ("channel", "channel"),
            ("group", "consumer_group"),
        ):
            if params.get(name):
                conditions.append(f"AND {column} = %s")
                args.append(params[name])
        cursor.execute(
            "SELECT system, channel, consumer_group, count(*) FROM delivery_finding "
            "WHERE project_id = %s AND kind = %s AND event_time > %s AND event_time <= %s "
            f"{' '.join(conditions)} GROUP BY 1, 2, 3",
            args,
        )
        findings = []
        for system, channel, group, count in cursor.fetchall():
            if count <= params["threshold"]:
                continue
            labels = _labels(project, system=system, channel=channel, group=group)
            minutes = params["window_seconds"] // 60 or 1
            findings.append(
                Finding(
                    labels, float(count), f"{count} {self.what} in {minutes} min {_where(labels)}"
                )
            )
        return findings


class DuplicatesKind(DeliveryFindingsKind):
    finding_kind = "duplicate"
    what = "events processed more than once"


class MissingEventsKind(DeliveryFindingsKind):
    finding_kind = "missing"
    what = "events missing past their deadline"


class OutOfOrderKind(DeliveryFindingsKind):
    finding_kind = "out_of_order"
    what = "events processed out of order"
