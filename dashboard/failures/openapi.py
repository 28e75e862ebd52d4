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
            "time": DATE_TIME,
        }
    ),
    "FailureGroup": object_schema(
        {
            "service": STRING,
            "channel": STRING,
            "system": STRING,
            "error": STRING,
            "count": INTEGER,
            "deadlettered": INTEGER,
            "first": DATE_TIME,
            "last": DATE_TIME,
            "trend": {
                "type": "array",
                "items": INTEGER,
                "description": "failures in each of 24 equal parts of the window",
            },
        }
    ),
}

FAILURE_FILTERS = [
    param(name, f"Only failures with this {name}")
    for name in ("service", "channel", "system", "group", "error")
]

PATHS = {
    "/api/failures": {
        "get": operation(
            "Failed and dead-lettered events, newest first; group_by=error gives counts",
            [
                *WINDOW,
                *PAGE,
                *FAILURE_FILTERS,
                param("group_by", "Group by (service, channel, error)", {"enum": ["error"]}),
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
