"""What delivery adds to /api/openapi.json: GET /api/findings and its schema."""

from dashboard.jsonapi import (
    BOOLEAN,
    DATE_TIME,
    INTEGER,
    NUMBER_OR_NULL,
    PAGE,
    STRING,
    STRING_OR_NULL,
    WINDOW,
    list_of,
    object_schema,
    operation,
    param,
    ref,
    response,
)

KINDS = ["duplicate", "missing", "late", "out_of_order", "poison"]

SPAN = object_schema(
    {
        "trace_id": STRING_OR_NULL,
        "span_id": STRING_OR_NULL,
        "time": DATE_TIME,
        "stage": STRING,
        "service": STRING,
    },
    optional=("stage", "service", "time"),
)

SCHEMAS = {
    "Finding": object_schema(
        {
            "kind": {
                "enum": KINDS,
                "description": "duplicate: processed successfully more than once by the group; "
                "missing: not handled by an expected group within the channel's deadline; late: "
                "handled after it; out_of_order: processed before an event with the same "
                "ordering key published earlier; poison: failed or retried at least "
                "EVENTSCOPE_DELIVERY_POISON_ATTEMPTS times",
            },
            "system": STRING,
            "channel": {**STRING, "description": "the channel the group consumes"},
            "group": {**STRING, "description": "consumer group, else the consuming service"},
            "count": {**INTEGER, "description": "distinct events affected in the window"},
            "first_seen": {**DATE_TIME, "description": "publish time of the oldest event"},
            "last_seen": {**DATE_TIME, "description": "publish time of the newest event"},
            "examples": {
                "type": "array",
                "description": "the newest three events",
                "items": object_schema(
                    {
                        "event_id": STRING_OR_NULL,
                        "source": STRING_OR_NULL,
                        "trace_id": STRING_OR_NULL,
                        "time": DATE_TIME,
                        "spans": {
                            "type": "array",
                            "items": SPAN,
                            "description": "duplicate: each successful processing; poison: "
                            "each failed attempt; late: the publish and the first "
                            "processing; missing: the publish; out_of_order: its processing",
                        },
                        "successes": INTEGER,
                        "attempts": INTEGER,
                        "retry_ms": NUMBER_OR_NULL,
                        "deadlettered": BOOLEAN,
                        "delay_ms": NUMBER_OR_NULL,
                        "ordering_key": STRING,
                        "overtook": {
                            "type": "array",
                            "items": object_schema({}),
                            "description": "out_of_order: the earlier published events it "
                            "went ahead of",
                        },
                    },
                    optional=(
                        "successes",
                        "attempts",
                        "retry_ms",
                        "deadlettered",
                        "delay_ms",
                        "ordering_key",
                        "overtook",
                    ),  # fmt: skip
                ),
            },
        },
    ),
}

PATHS = {
    "/api/findings": {
        "get": operation(
            "Delivery findings per kind, channel and consumer group, largest first",
            [
                *WINDOW,
                *PAGE,
                param("kind", "Only this kind", {"enum": KINDS}),
                *[param(n, f"Only findings of this {n}") for n in ("system", "channel", "group")],
            ],
            {"200": response(list_of(ref("Finding"), windowed=True))},
            tag="delivery",
        )
    },
}
