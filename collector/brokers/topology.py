"""Routes a messaging system declares, stored as flow edges of their own.

Spans show the traffic that went somewhere; the system's own configuration
shows where traffic *would* go: an SNS topic's subscriptions (topic → queue,
Lambda function, HTTP endpoint), an EventBridge rule's targets, a Lambda
event source mapping (queue or stream → function), a queue's dead-letter
queue, a Pub/Sub subscription of a topic. Pollers hand these in with their
readings (`samples.Report.routes`); `store()` replaces what the same source
declared before, so a deleted subscription goes with the next poll.

Node ids are the flow graph's: `channel:<system>:<name>` with the bare name
(a queue's name, not its URL or ARN) and `service:<name>` for functions and
endpoints, so a declared route and the spans of the same route meet on the
same nodes.
"""

import datetime as dt
import json
from dataclasses import dataclass, field

from collector import notify

PUBLISH, CONSUME, DEAD_LETTER = "publish", "consume", "dead_letter"
KINDS = (PUBLISH, CONSUME, DEAD_LETTER)


def channel(system: str, name: str) -> str:
    return f"channel:{system}:{name}"


def service(name: str) -> str:
    return f"service:{name}"


def arn_name(arn: str) -> str:
    """The bare name at the end of an ARN (`arn:aws:sqs:eu-west-1:123:orders` →
    `orders`; `…:function:billing:live` → `billing`; `…:rule/bus/name` → `name`)."""
    parts = arn.split(":")
    if len(parts) >= 7 and parts[2] == "lambda" and parts[5] == "function":
        return parts[6]
    return parts[-1].rsplit("/", 1)[-1] if arn.startswith("arn:") else arn


@dataclass(frozen=True, slots=True)
class Route:
    """One declared edge: from a node to a node, of a kind, for a consumer group."""

    from_node: str
    to_node: str
    kind: str
    group: str = ""
    details: dict = field(default_factory=dict, compare=False, hash=False)

    @property
    def key(self) -> tuple[str, str, str, str]:
        return (self.from_node, self.to_node, self.kind, self.group)


def store(cursor, project_id: int, source: str, routes: list[Route], now=None) -> None:
    """Replace the routes `source` declared with `routes`, in the cursor's transaction.

    Two routes with the same ends, kind and group (two subscriptions of one
    topic to one queue) are one edge, their details merged.
    """
    now = now or dt.datetime.now(dt.UTC)
    merged: dict[tuple, dict] = {}
    for route in routes:
        if route.kind not in KINDS:
            raise ValueError(f"unknown route kind {route.kind!r}")
        merged.setdefault(route.key, {}).update(route.details)
    cursor.execute(
        "DELETE FROM brokers_topologyedge WHERE project_id = %s AND source = %s",
        [project_id, source],
    )
    if merged:
        cursor.executemany(
            """
            INSERT INTO brokers_topologyedge (project_id, source, from_node, to_node, kind,
                consumer_group, details, updated_at)
            VALUES (%s, %s, %s, %s, %s, %s, %s::jsonb, %s)
            """,
            [
                (project_id, source, *key, json.dumps(details, default=str), now)
                for key, details in sorted(merged.items())
            ],
        )
    notify.send(cursor, project_id, notify.FLOW)


def declared(project_id: int, cursor) -> list[dict]:
    """Every declared route of a project: {"source", "target", "kind", "group",
    "details", "updated_at"}, one per edge (several sources declaring the same
    edge are merged, the newest details winning)."""
    cursor.execute(
        """
        SELECT from_node, to_node, kind, consumer_group, details, updated_at
        FROM brokers_topologyedge WHERE project_id = %s
        ORDER BY updated_at
        """,
        [project_id],
    )
    edges: dict[tuple, dict] = {}
    for source, target, kind, group, details, updated_at in cursor.fetchall():
        if isinstance(details, str):
            details = json.loads(details)
        edge = edges.setdefault(
            (source, target, kind, group),
            {"source": source, "target": target, "kind": kind, "group": group, "details": {}},
        )
        edge["details"].update(details)
        edge["updated_at"] = updated_at
    return list(edges.values())
