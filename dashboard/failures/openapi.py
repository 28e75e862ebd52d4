"""What failures adds to /api/openapi.json: GET /api/failures, and the schemas they answer with."""

from dashboard.jsonapi import (
    DATE_TIME,
    INTEGER,
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

SCHEMAS = {
    "Failure": object_schema(
        {
            "event_id": STRING_OR_NULL,
            "source": {**STRING_OR_NULL, "description": "CloudEvents source, when known"},
            "trace_id": STRING_OR_NULL,
            "span_id": STRING_OR_NULL,
            "service": STRING,
            "channel": STRING,
            "system": STRING,
            "group": STRING,
            "stage": {"enum": ["failed", "deadlettered"]},
            "error": STRING_OR_NULL,
            "error_type": {
                **STRING,
                "description": "error.type, else the exception type; '' when unknown",
            },
            "template": {
                **STRING,
                "description": "the message with its variable parts as placeholders",
            },
            "fingerprint": {**STRING, "description": "the failure group it belongs to"},
            "time": DATE_TIME,
        }
    ),
    "FailureGroup": object_schema(
        {
            "service": STRING,
            "channel": STRING,
            "system": STRING,
            "group": {**STRING, "description": "consumer group ('' on the producer side)"},
            "fingerprint": {
                **STRING,
                "description": "16 hex characters naming the error type and template; "
                "`fingerprint=` narrows the list to this group",
            },
            "error": {
                **STRING,
                "description": "the template: ids, numbers, UUIDs, hex, e-mails, IPs, quoted "
                "values and times of the message as <id>, <num>, <uuid>, <hex>, <email>, <ip>, "
                "<quoted>, <time>",
            },
            "error_type": {
                **STRING,
                "description": "error.type or exception type; '' when unknown",
            },
            "example_error": {**STRING, "description": "one real message of the group"},
            "count": INTEGER,
            "deadlettered": INTEGER,
            "first_seen": {**DATE_TIME, "description": "start of the first minute with failures"},
            "last_seen": {**DATE_TIME, "description": "start of the last minute with failures"},
            "first": {**DATE_TIME, "deprecated": True, "description": "= first_seen"},
            "last": {**DATE_TIME, "deprecated": True, "description": "= last_seen"},
            "trend": {
                "type": "array",
                "items": INTEGER,
                "description": "failures in each of 30 equal parts of the window, oldest first",
            },
            "examples": {"type": "array", "items": STRING, "description": "event ids"},
            "example_events": {
                "type": "array",
                "items": object_schema({"event_id": STRING, "source": STRING_OR_NULL}),
            },
            "example_traces": {"type": "array", "items": STRING, "description": "trace ids"},
        }
    ),
}

FAILURE_FILTERS = [
    param(name, f"Only failures with this {name}")
    for name in ("service", "channel", "system", "group", "error")
]
FINGERPRINT = param(
    "fingerprint",
    "Only failures of this group (a FailureGroup's fingerprint); grouped, `error` matches "
    "the template of the message given",
    {"type": "string", "pattern": "^[0-9a-f]{16}$"},
)

PATHS = {
    "/api/failures": {
        "get": operation(
            "Failed and dead-lettered events, newest first; group_by=error gives counts",
            [
                *WINDOW,
                *PAGE,
                *FAILURE_FILTERS,
                param("group_by", "Group by (service, channel, error)", {"enum": ["error"]}),
                FINGERPRINT,
            ],
            {
                "200": response(
                    {
                        "oneOf": [
                            list_of(ref("Failure"), windowed=True),
                            list_of(ref("FailureGroup"), windowed=True),
                        ]
                    }
                )
            },
            tag="failures",
        )
    },
}
