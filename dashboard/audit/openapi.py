"""What the audit log adds to /api/openapi.json: GET /api/audit and its schema."""

from dashboard.jsonapi import (
    DATE_TIME,
    PAGE,
    STRING,
    STRING_OR_NULL,
    list_of,
    object_schema,
    operation,
    param,
    ref,
    response,
)

SCHEMAS = {
    "AuditEvent": object_schema(
        {
            "time": DATE_TIME,
            "actor": {"type": "string", "description": "username at the time ('' for none)"},
            "project": {**STRING_OR_NULL, "description": "project slug; null for sign-ins"},
            "action": {"type": "string", "description": "e.g. login.failed, token.created"},
            "target": STRING,
            "ip": {**STRING_OR_NULL, "description": "client address"},
            "details": {
                "type": "object",
                "additionalProperties": True,
                "description": "what else is known; edits hold before and after",
            },
        }
    )
}

FILTERS = [
    param("action", "One action (token.created) or a family (token)"),
    param("actor", "Only events of this username"),
    param("since", "From this time (RFC 3339, UTC)", {"type": "string", "format": "date-time"}),
    param("until", "Before this time (RFC 3339, UTC)", {"type": "string", "format": "date-time"}),
]

PATHS = {
    "/api/audit": {
        "get": operation(
            "The audit log, newest first (signed-in admins only; API tokens get 403): "
            "the project's events, and for installation admins also sign-ins",
            [*FILTERS, *PAGE],
            {"200": response(list_of(ref("AuditEvent")))},
            tag="audit",
        )
    },
}
