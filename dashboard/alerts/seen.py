"""What the rule form offers to pick from: the systems, channels, consumer
groups and services Eventscope has seen in a project (flow edges of the last
week, and every consumer group the brokers report). A rule may still name
one not seen yet: the form's lists are suggestions, not limits."""

import datetime as dt

from django.db import connection

from dashboard.flow.queries import parse_node

SEEN_FOR = dt.timedelta(days=7)
MOST = 500  # per list: a form, not a catalogue


def seen_names(project_id: int, now: dt.datetime | None = None) -> dict[str, list[str]]:
    """{"system": [...], "channel": [...], "group": [...], "service": [...]}, each sorted."""
    since = (now or dt.datetime.now(dt.UTC)) - SEEN_FOR
    names: dict[str, set[str]] = {
        "system": set(),
        "channel": set(),
        "group": set(),
        "service": set(),
    }
    with connection.cursor() as cursor:
        cursor.execute(
            """SELECT DISTINCT source, target, consumer_group FROM collector_flowrollup
               WHERE project_id = %s AND minute >= %s""",
            [project_id, since],
        )
        for source, target, group in cursor.fetchall():
            for node_id in (source, target):
                node = parse_node(node_id)
                if node["kind"] == "channel":
                    names["system"].add(node["system"])
                    names["channel"].add(node["name"])
                else:
                    names["service"].add(node["name"])
            if group:
                names["group"].add(group)
        cursor.execute(
            """SELECT DISTINCT system, channel, consumer_group FROM brokers_groupstate
               WHERE project_id = %s""",
            [project_id],
        )
        for system, channel, group in cursor.fetchall():
            names["system"].add(system)
            names["channel"].add(channel)
            if group:
                names["group"].add(group)
    return {kind: sorted(n for n in found if n)[:MOST] for kind, found in names.items()}
