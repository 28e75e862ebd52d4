"""GET /api/openapi.json: an OpenAPI 3.1 description of every JSON API endpoint."""

from django.views.decorators.http import require_GET

from dashboard.api import ok


def _ref(name):
    return {"$ref": f"#/components/schemas/{name}"}


def _param(name, description, schema=None, where="query", required=False):
    return {
        "name": name,
        "in": where,
        "required": required or where == "path",
        "description": description,
        "schema": schema or {"type": "string"},
    }


WINDOW = [
    _param("window", "Time window ending now", {"enum": ["15m", "1h", "6h", "24h", "7d"]}),
    _param("since", "Window start (RFC 3339, UTC)", {"type": "string", "format": "date-time"}),
    _param("until", "Window end (RFC 3339, UTC)", {"type": "string", "format": "date-time"}),
]
PAGE = [
    _param("limit", "Items per page", {"type": "integer", "minimum": 1, "maximum": 500}),
    _param("cursor", "Opaque cursor from the previous page's next_cursor"),
]
PROJECT = [_param("project", "Project slug (session users with several projects)")]
ERRORS = {
    "400": {
        "description": "A parameter is wrong; the message says which",
        "content": {"application/json": {"schema": _ref("Error")}},
    },
    "401": {
        "description": "No session and no valid read-scoped token",
        "content": {"application/json": {"schema": _ref("Error")}},
    },
    "403": {
        "description": "Missing role in the project",
        "content": {"application/json": {"schema": _ref("Error")}},
    },
}
NOT_FOUND = {
    "404": {
        "description": "Not found in this project",
        "content": {"application/json": {"schema": _ref("Error")}},
    }
}


def _json(schema, description="OK"):
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _list_of(item):
    return {
        "type": "object",
        "properties": {
            "items": {"type": "array", "items": item},
            "next_cursor": {"type": ["string", "null"]},
        },
    }


def _op(summary, parameters=(), responses=None, body=None, tag=None):
    op = {
        "summary": summary,
        "parameters": [*PROJECT, *parameters],
        "responses": {**(responses or {}), **ERRORS},
    }
    if tag:
        op["tags"] = [tag]
    if body:
        op["requestBody"] = {"required": True, "content": {"application/json": {"schema": body}}}
    return op


def _crud(name, schema, tag):
    ident = [_param("id", f"{name} id", {"type": "integer"}, where="path")]
    return {
        "get": _op(f"One {name}", ident, {"200": _json(_ref(schema)), **NOT_FOUND}, tag=tag),
        "put": _op(
            f"Change a {name} (editor)",
            ident,
            {"200": _json(_ref(schema)), **NOT_FOUND},
            body=_ref(schema),
            tag=tag,
        ),
        "delete": _op(
            f"Delete a {name} (editor)",
            ident,
            {"204": {"description": "Deleted"}, **NOT_FOUND},
            tag=tag,
        ),
    }


NUMBER_OR_NULL = {"type": ["number", "null"]}
SCHEMAS = {
    "Error": {"type": "object", "required": ["error"], "properties": {"error": {"type": "string"}}},
    "Node": {
        "type": "object",
        "properties": {
            "id": {"type": "string", "description": "service:<name> or channel:<system>:<name>"},
            "kind": {"enum": ["service", "channel"]},
            "name": {"type": "string"},
            "system": {"type": "string"},
        },
    },
    "Edge": {
        "type": "object",
        "properties": {
            "source": {"type": "string"},
            "target": {"type": "string"},
            "kind": {"enum": ["publish", "consume", "call"]},
            "group": {"type": "string", "description": "consumer group (consume edges)"},
            "count": {"type": "integer"},
            "rate_per_s": {"type": "number"},
            "errors": {"type": "integer"},
            "p50_ms": NUMBER_OR_NULL,
            "p95_ms": NUMBER_OR_NULL,
            "e2e_p95_ms": {**NUMBER_OR_NULL, "description": "produce→consume latency"},
        },
    },
    "Flow": {
        "type": "object",
        "properties": {
            "since": {"type": "string", "format": "date-time"},
            "until": {"type": "string", "format": "date-time"},
            "nodes": {"type": "array", "items": _ref("Node")},
            "edges": {"type": "array", "items": _ref("Edge")},
        },
    },
    "Span": {
        "type": "object",
        "properties": {
            "trace_id": {"type": "string"},
            "span_id": {"type": "string"},
            "parent_span_id": {"type": ["string", "null"]},
            "service": {"type": "string"},
            "name": {"type": "string"},
            "kind": {"type": "string"},
            "start": {"type": "string", "format": "date-time"},
            "duration_ms": {"type": "number"},
            "status": {"enum": ["unset", "ok", "error"]},
            "attributes": {"type": "object"},
        },
    },
    "Stage": {
        "type": "object",
        "properties": {
            "time": {"type": "string", "format": "date-time"},
            "stage": {
                "enum": ["published", "received", "processed", "failed", "retried", "deadlettered"]
            },
            "role": {"enum": ["producer", "consumer"]},
            "service": {"type": "string"},
            "system": {"type": "string"},
            "channel": {"type": "string"},
            "group": {"type": "string"},
            "trace_id": {"type": ["string", "null"]},
            "span_id": {"type": ["string", "null"]},
            "event_id": {"type": ["string", "null"]},
            "error": {"type": ["string", "null"]},
            "duration_ms": NUMBER_OR_NULL,
        },
    },
    "Envelope": {
        "type": "object",
        "description": "CloudEvents envelope; data is redacted at ingest",
        "properties": {
            "source": {"type": "string"},
            "id": {"type": "string"},
            "type": {"type": "string"},
            "time": {"type": "string", "format": "date-time"},
            "data": {},
            "data_text": {"type": ["string", "null"]},
            "truncated": {"type": "boolean"},
        },
    },
    "Journey": {
        "type": "object",
        "properties": {
            "trace_id": {"type": "string"},
            "event_id": {"type": "string"},
            "spans": {"type": "array", "items": _ref("Span")},
            "stages": {"type": "array", "items": _ref("Stage")},
            "envelope": {"oneOf": [_ref("Envelope"), {"type": "null"}]},
            "envelopes": {"type": "array", "items": _ref("Envelope")},
            "logs": {"type": "array", "items": {"type": "object"}},
            "truncated": {"type": "boolean"},
        },
    },
    "Failure": {
        "type": "object",
        "properties": {
            k: {"type": ["string", "null"]}
            for k in (
                "event_id",
                "trace_id",
                "service",
                "channel",
                "system",
                "group",
                "stage",
                "error",
            )
        }
        | {"time": {"type": "string", "format": "date-time"}},
    },
    "FailureGroup": {
        "type": "object",
        "properties": {
            "service": {"type": "string"},
            "channel": {"type": "string"},
            "system": {"type": "string"},
            "error": {"type": "string"},
            "count": {"type": "integer"},
            "trend": {"type": "array", "items": {"type": "integer"}},
        },
    },
    "Lag": {
        "type": "object",
        "properties": {
            "system": {"type": "string"},
            "channel": {"type": "string"},
            "group": {"type": "string"},
            "lag": {"type": ["integer", "null"]},
            "lag_seconds": NUMBER_OR_NULL,
            "status": {"enum": ["ok", "warning", "error", "stalled", "stopped", "rewind"]},
            "partitions": {"type": "array", "items": {"type": "object"}},
            "updated_at": {"type": "string", "format": "date-time"},
        },
    },
    "AlertRule": {
        "type": "object",
        "required": ["name", "kind", "params"],
        "properties": {
            "id": {"type": "integer", "readOnly": True},
            "name": {"type": "string"},
            "kind": {
                "enum": [
                    "lag",
                    "lag_seconds",
                    "lag_status",
                    "error_rate",
                    "failed_events",
                    "throughput_drop",
                    "dead_letters",
                ]
            },
            "params": {"type": "object"},
            "for_seconds": {"type": "integer"},
            "repeat_seconds": {"type": "integer"},
            "webhooks": {"type": "array", "items": {"type": "integer"}},
            "enabled": {"type": "boolean"},
        },
    },
    "Webhook": {
        "type": "object",
        "required": ["name", "url"],
        "properties": {
            "id": {"type": "integer", "readOnly": True},
            "name": {"type": "string"},
            "url": {"type": "string", "format": "uri"},
            "format": {"enum": ["json", "alertmanager", "slack"]},
            "secret": {"type": "string", "writeOnly": True, "description": "whsec_… signing key"},
        },
    },
    "Alert": {
        "type": "object",
        "properties": {
            "rule": {"type": "integer"},
            "state": {"enum": ["pending", "firing", "resolved"]},
            "labels": {"type": "object"},
            "started_at": {"type": "string", "format": "date-time"},
            "resolved_at": {"type": ["string", "null"], "format": "date-time"},
            "deliveries": {"type": "array", "items": {"type": "object"}},
        },
    },
}

FAILURE_FILTERS = [
    _param(name, f"Only failures with this {name}")
    for name in ("service", "channel", "system", "group", "error")
]


def document() -> dict:
    """The OpenAPI document (built per call: it is small and never hot)."""
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Eventscope API",
            "version": "1",
            "description": "Times are RFC 3339 in UTC. Lists are bounded and paginated with limit and cursor.",
        },
        "components": {
            "schemas": SCHEMAS,
            "securitySchemes": {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "read-scoped API token",
                },
                "session": {"type": "apiKey", "in": "cookie", "name": "sessionid"},
            },
        },
        "security": [{"bearer": []}, {"session": []}],
        "paths": {
            "/api/flow": {
                "get": _op(
                    "Flow graph of a time window", WINDOW, {"200": _json(_ref("Flow"))}, tag="flow"
                )
            },
            "/api/traces/{trace_id}": {
                "get": _op(
                    "A trace: spans and event stages in time order, with linked consumers",
                    [_param("trace_id", "32 hex digits", where="path")],
                    {"200": _json(_ref("Journey")), **NOT_FOUND},
                    tag="journeys",
                )
            },
            "/api/events/{event_id}": {
                "get": _op(
                    "An event's envelope (payload redacted) and journey",
                    [
                        _param("event_id", "event id", where="path"),
                        _param("source", "CloudEvents source, when ids repeat across sources"),
                    ],
                    {"200": _json(_ref("Journey")), **NOT_FOUND},
                    tag="journeys",
                )
            },
            "/api/failures": {
                "get": _op(
                    "Failed and dead-lettered events, newest first; group_by=error gives counts",
                    [
                        *WINDOW,
                        *PAGE,
                        *FAILURE_FILTERS,
                        _param(
                            "group_by", "Group by (service, channel, error)", {"enum": ["error"]}
                        ),
                    ],
                    {
                        "200": _json(
                            {"oneOf": [_list_of(_ref("Failure")), _list_of(_ref("FailureGroup"))]}
                        )
                    },
                    tag="failures",
                )
            },
            "/api/lag": {
                "get": _op(
                    "Consumer lag per (system, channel, group)",
                    PAGE,
                    {"200": _json(_list_of(_ref("Lag")))},
                    tag="lag",
                )
            },
            "/api/alert-rules": {
                "get": _op(
                    "Alert rules", PAGE, {"200": _json(_list_of(_ref("AlertRule")))}, tag="alerts"
                ),
                "post": _op(
                    "Create an alert rule (editor)",
                    (),
                    {"201": _json(_ref("AlertRule"))},
                    body=_ref("AlertRule"),
                    tag="alerts",
                ),
            },
            "/api/alert-rules/{id}": _crud("alert rule", "AlertRule", "alerts"),
            "/api/webhooks": {
                "get": _op(
                    "Webhook destinations",
                    PAGE,
                    {"200": _json(_list_of(_ref("Webhook")))},
                    tag="alerts",
                ),
                "post": _op(
                    "Create a webhook (editor)",
                    (),
                    {"201": _json(_ref("Webhook"))},
                    body=_ref("Webhook"),
                    tag="alerts",
                ),
            },
            "/api/webhooks/{id}": _crud("webhook", "Webhook", "alerts"),
            "/api/webhooks/{id}/test": {
                "post": _op(
                    "Send a test notification (editor)",
                    [_param("id", "webhook id", {"type": "integer"}, where="path")],
                    {"200": _json({"type": "object"}), **NOT_FOUND},
                    tag="alerts",
                )
            },
            "/api/alerts": {
                "get": _op(
                    "Alert instances with their deliveries",
                    [*WINDOW, *PAGE],
                    {"200": _json(_list_of(_ref("Alert")))},
                    tag="alerts",
                )
            },
        },
    }


@require_GET
def openapi(request):
    return ok(document())
