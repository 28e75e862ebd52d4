"""What flow adds to /api/openapi.json: GET /api/flow, and the schemas they answer with."""

from dashboard.jsonapi import (
    DATE_TIME,
    DATE_TIME_OR_NULL,
    INTEGER,
    INTEGER_OR_NULL,
    NUMBER_OR_NULL,
    STRING,
    WINDOW,
    object_schema,
    operation,
    param,
    ref,
    response,
)

SCHEMAS = {
    "Node": object_schema(
        {
            "id": {"type": "string", "description": "service:<name> or channel:<system>:<name>"},
            "kind": {"enum": ["service", "channel"]},
            "name": STRING,
            "system": STRING,
            "label": {
                "type": "string",
                "description": "the name a person reads (a channel named by URL or ARN: its last part)",
            },
        }
    ),
    "Edge": object_schema(
        {
            "source": STRING,
            "target": STRING,
            "kind": {
                "enum": ["publish", "consume", "call", "dead_letter"],
                "description": "dead_letter: where a channel's failed messages go, as the "
                "system declares it (an SQS redrive policy, a rule's dead-letter queue)",
            },
            "group": {"type": "string", "description": "consumer group (consume edges)"},
            "count": INTEGER,
            "rate_per_s": {
                "type": "number",
                "description": "count / seconds from the later of the window start and when the "
                "stream began (first_seen; the part of that minute it ran is estimated from "
                "the minutes after it) to the earlier of the window end and now",
            },
            "rate_now_per_s": {
                "type": "number",
                "description": "messages in the last 5 minutes / 300; 0 for a stream that stopped",
            },
            "first_seen": {
                **DATE_TIME_OR_NULL,
                "description": "start of the first minute with data in the window",
            },
            "last_seen": {
                **DATE_TIME_OR_NULL,
                "description": "start of the last minute with data in the window",
            },
            "errors": INTEGER,
            "deadlettered": INTEGER,
            "retries": INTEGER,
            "p50_ms": NUMBER_OR_NULL,
            "p95_ms": NUMBER_OR_NULL,
            "e2e_p95_ms": {**NUMBER_OR_NULL, "description": "produce→consume latency"},
            "declared": {
                "type": ["object", "null"],
                "description": "a route the messaging system itself declares (an SNS "
                "subscription, an EventBridge rule's target, a Lambda event source mapping, a "
                "dead-letter queue) with what it says about it; null for routes seen only in "
                "spans. A declared route no span has shown yet has a count of 0",
            },
            "lag": {
                **INTEGER_OR_NULL,
                "description": "consume edges: the group's present lag in messages, if known",
            },
            "lag_seconds": {**NUMBER_OR_NULL, "description": "consume edges: seconds behind"},
            "lag_status": {
                "enum": ["ok", "warning", "error", "stalled", "stopped", "rewind", None],
                "description": "consume edges with a known group: its status (GET /api/lag)",
            },
            "delivery": {
                "type": ["object", "null"],
                "description": "consume edges: distinct events of the window per finding kind "
                "(duplicate, missing, late, out_of_order, poison; GET /api/findings); null on "
                "other edges",
                "additionalProperties": INTEGER,
            },
        }
    ),
    "SeriesPoint": object_schema(
        {
            "t": {**DATE_TIME, "description": "start of the bucket"},
            "count": INTEGER,
            "errors": INTEGER,
            "p50_ms": NUMBER_OR_NULL,
            "p95_ms": NUMBER_OR_NULL,
            "e2e_p95_ms": {**NUMBER_OR_NULL, "description": "produce→consume latency"},
            "lag": {
                **INTEGER_OR_NULL,
                "description": "consume edges: the group's lag in messages in the bucket (its "
                "largest per partition, summed), null where no sample was taken",
            },
            "lag_seconds": {**NUMBER_OR_NULL, "description": "consume edges: seconds behind"},
        },
        optional=("lag", "lag_seconds"),
    ),
    "FlowSeries": object_schema(
        {
            "since": DATE_TIME,
            "until": DATE_TIME,
            "step_s": {
                "type": "integer",
                "description": "bucket length: 60 up to 1 h, 300 up to 6 h, 900 up to 24 h, "
                "3600 up to 7 d, whole hours for ~170 points beyond",
            },
            "points": {
                "type": "array",
                "items": ref("SeriesPoint"),
                "description": "every bucket of the window, oldest first; counts add up to "
                "the edge's count in GET /api/flow for the same window",
            },
            "histogram": object_schema(
                {
                    "bounds_ms": {"type": "array", "items": {"type": "number"}},
                    "duration": {
                        "type": "array",
                        "items": INTEGER,
                        "description": "processing durations per bucket of bounds_ms "
                        "(upper bounds; the last counts everything above)",
                    },
                    "e2e": {"type": "array", "items": INTEGER},
                }
            ),
        }
    ),
    "Flow": object_schema(
        {
            "since": DATE_TIME,
            "until": DATE_TIME,
            "nodes": {
                "type": "array",
                "items": ref("Node"),
                "description": "the nodes of the edges returned",
            },
            "edges": {
                "type": "array",
                "items": ref("Edge"),
                "description": "the busiest `limit` edges, most messages first",
            },
            "truncated": {
                "type": "boolean",
                "description": "true when more edges than `limit` had traffic",
            },
        }
    ),
}

PATHS = {
    "/api/flow": {
        "get": operation(
            "Flow graph of a time window: the busiest edges and their nodes",
            [
                *WINDOW,
                param(
                    "limit",
                    "Most edges returned (the busiest first); `truncated` says when "
                    "there were more",
                    {"type": "integer", "minimum": 1, "maximum": 2000, "default": 500},
                ),
            ],
            {"200": response(ref("Flow"))},
            tag="flow",
        )
    },
    "/api/flow/series": {
        "get": operation(
            "One edge's or node's throughput, errors, latency (and lag) over time",
            [
                *WINDOW,
                param("source", "Edge: source node id"),
                param("target", "Edge: target node id"),
                param("kind", "Edge: kind", {"enum": ["publish", "consume", "call"]}),
                param("group", "Edge: consumer group (consume edges)"),
                param(
                    "node",
                    "A node instead of an edge: the edges into it (or out of it, when "
                    "nothing flows in)",
                ),
            ],
            {"200": response(ref("FlowSeries"))},
            tag="flow",
        )
    },
}
