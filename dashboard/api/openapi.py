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
CONFLICT = {
    "409": {
        "description": "The event cannot be replayed faithfully: it has no stored payload "
        "(known from spans only) or its payload was cut at the size cap",
        "content": {"application/json": {"schema": _ref("Error")}},
    }
}
NOT_FOUND = {
    "404": {
        "description": "Not found in this project",
        "content": {"application/json": {"schema": _ref("Error")}},
    }
}


def _json(schema, description="OK"):
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _list_of(item, windowed=False, **more):
    """A page of a list; `windowed` lists also say which window they cover."""
    properties = {
        "items": {"type": "array", "items": item},
        "next_cursor": {"type": ["string", "null"]},
        **more,
    }
    required = ["items", "next_cursor"]
    if windowed:
        properties.update(since=DATE_TIME, until=DATE_TIME)
        required += ["since", "until"]
    return {"type": "object", "required": required, "properties": properties}


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
STRING = {"type": "string"}
STRING_OR_NULL = {"type": ["string", "null"]}
INTEGER = {"type": "integer"}
INTEGER_OR_NULL = {"type": ["integer", "null"]}
BOOLEAN = {"type": "boolean"}
OBJECT = {"type": "object"}
DATE_TIME = {"type": "string", "format": "date-time"}
DATE_TIME_OR_NULL = {"type": ["string", "null"], "format": "date-time"}
STAGES = ["published", "received", "processed", "failed", "retried", "deadlettered"]


def _object(properties: dict, optional=()) -> dict:
    """An object schema whose properties are all present in responses, but `optional`."""
    return {
        "type": "object",
        "required": [k for k in properties if k not in optional],
        "properties": properties,
    }


# What the attribute limits cut (README "Attribute limits"), on every item with attributes.
LIMITED = {
    "dropped_attributes_count": {
        **INTEGER,
        "description": "attributes not kept: the sender's dropped_attributes_count plus what "
        "EVENTSCOPE_MAX_ATTRIBUTES cut",
    },
    "truncated_attributes": {
        "type": "array",
        "items": STRING,
        "description": "keys whose value was cut short (a cut string ends with …)",
    },
}
LIMITED_PARTS = (
    "each with name (events), trace_id and span_id (links), attributes, "
    "dropped_attributes_count and truncated_attributes"
)

SCHEMAS = {
    "Error": {"type": "object", "required": ["error"], "properties": {"error": {"type": "string"}}},
    "Node": _object(
        {
            "id": {"type": "string", "description": "service:<name> or channel:<system>:<name>"},
            "kind": {"enum": ["service", "channel"]},
            "name": STRING,
            "system": STRING,
        }
    ),
    "Edge": _object(
        {
            "source": STRING,
            "target": STRING,
            "kind": {"enum": ["publish", "consume", "call"]},
            "group": {"type": "string", "description": "consumer group (consume edges)"},
            "count": INTEGER,
            "rate_per_s": {"type": "number"},
            "errors": INTEGER,
            "deadlettered": INTEGER,
            "retries": INTEGER,
            "p50_ms": NUMBER_OR_NULL,
            "p95_ms": NUMBER_OR_NULL,
            "e2e_p95_ms": {**NUMBER_OR_NULL, "description": "produce→consume latency"},
            "lag": {
                **INTEGER_OR_NULL,
                "description": "consume edges: the group's present lag in messages, if known",
            },
            "lag_seconds": {**NUMBER_OR_NULL, "description": "consume edges: seconds behind"},
            "lag_status": {
                "enum": ["ok", "warning", "error", "stalled", "stopped", "rewind", None],
                "description": "consume edges with a known group: its status (GET /api/lag)",
            },
        }
    ),
    "Flow": _object(
        {
            "since": DATE_TIME,
            "until": DATE_TIME,
            "nodes": {
                "type": "array",
                "items": _ref("Node"),
                "description": "the nodes of the edges returned",
            },
            "edges": {
                "type": "array",
                "items": _ref("Edge"),
                "description": "the busiest `limit` edges, most messages first",
            },
            "truncated": {
                "type": "boolean",
                "description": "true when more edges than `limit` had traffic",
            },
        }
    ),
    "Span": _object(
        {
            "trace_id": STRING,
            "span_id": STRING,
            "parent_span_id": STRING_OR_NULL,
            "service": STRING,
            "name": STRING,
            "kind": STRING,
            "start": DATE_TIME,
            "start_ns": INTEGER,
            "duration_ms": {"type": "number"},
            "status": {"enum": ["unset", "ok", "error"]},
            "status_message": STRING_OR_NULL,
            "attributes": OBJECT,
            **LIMITED,
            "events": {"type": "array", "items": OBJECT, "description": LIMITED_PARTS},
            "links": {"type": "array", "items": OBJECT, "description": LIMITED_PARTS},
        }
    ),
    "Stage": _object(
        {
            "time": DATE_TIME,
            "time_ns": INTEGER,
            "stage": {"enum": STAGES},
            "role": {"enum": ["producer", "consumer"]},
            "service": STRING,
            "system": STRING,
            "channel": STRING,
            "group": STRING,
            "trace_id": STRING_OR_NULL,
            "span_id": STRING_OR_NULL,
            "parent_span_id": STRING_OR_NULL,
            "linked_trace_ids": {"type": "array", "items": STRING},
            "event_id": STRING_OR_NULL,
            "event_source": STRING_OR_NULL,
            "event_type": STRING_OR_NULL,
            "error": STRING_OR_NULL,
            "duration_ms": NUMBER_OR_NULL,
            "e2e_ms": NUMBER_OR_NULL,
            "origin": {"enum": ["span", "cloudevent"]},
        }
    ),
    "Envelope": {
        **_object(
            {
                "source": STRING,
                "id": STRING,
                "type": STRING,
                "time": DATE_TIME,
                "subject": STRING_OR_NULL,
                "datacontenttype": STRING_OR_NULL,
                "dataschema": STRING_OR_NULL,
                "extensions": OBJECT,
                **LIMITED,
                "data": {},
                "data_text": STRING_OR_NULL,
                "data_base64": BOOLEAN,
                "data_size": INTEGER,
                "truncated": BOOLEAN,
                "trace_id": STRING_OR_NULL,
            }
        ),
        "description": "CloudEvents envelope; data is redacted at ingest",
    },
    "Log": _object(
        {
            "time": DATE_TIME,
            "service": STRING,
            "severity": STRING,
            "severity_number": INTEGER,
            "body": STRING_OR_NULL,
            "trace_id": STRING_OR_NULL,
            "span_id": STRING_OR_NULL,
            "attributes": OBJECT,
            **LIMITED,
        }
    ),
    "Journey": _object(
        {
            "trace_id": {"type": "string", "description": "traces only"},
            "event_id": {"type": "string", "description": "events only"},
            "source": {**STRING_OR_NULL, "description": "events only: the CloudEvents source"},
            "spans": {"type": "array", "items": _ref("Span")},
            "stages": {"type": "array", "items": _ref("Stage")},
            "errors": {
                "type": "array",
                "items": _ref("Stage"),
                "description": "events only: the stages with an error",
            },
            "envelope": {
                "oneOf": [_ref("Envelope"), {"type": "null"}],
                "description": "events only",
            },
            "envelopes": {"type": "array", "items": _ref("Envelope")},
            "logs": {"type": "array", "items": _ref("Log")},
            "traces": {
                "type": "array",
                "items": STRING,
                "description": "this trace and the consumer traces joined by span links",
            },
            "truncated": {"type": "boolean", "description": "spans were cut"},
            "dropped_attributes_count": {
                **INTEGER,
                "description": "attributes dropped by the attribute limits in all its spans "
                "(events and links included), logs and envelopes",
            },
            "truncated_attributes_count": {
                **INTEGER,
                "description": "attribute values cut to EVENTSCOPE_MAX_ATTRIBUTE_LENGTH in all",
            },
            "start_ns": INTEGER,
            "duration_ms": {"type": "number"},
        },
        optional=("trace_id", "event_id", "source", "errors", "envelope"),
    ),
    "ReplayRequest": {
        "type": "object",
        "required": ["webhook"],
        "properties": {
            "webhook": {"type": "integer", "description": "a json-format webhook of the project"},
            "source": {
                "type": "string",
                "description": "the event's CloudEvents source, when several sources used its id",
            },
        },
    },
    "Replay": {
        **_object(
            {
                "id": {
                    "type": "string",
                    "description": "also the replayed event's `esreplay` attribute and "
                    "its `webhook-id` header",
                },
                "event_id": STRING,
                "source": STRING,
                "event_time": {**DATE_TIME, "description": "the stored event's time"},
                "webhook": _object(
                    {
                        "id": {**INTEGER_OR_NULL, "description": "null once deleted"},
                        "name": STRING,
                    }
                ),
                "requested_by": STRING,
                "requested_at": DATE_TIME,
                "status": {"enum": ["delivered", "failed"]},
                "http_status": {
                    **INTEGER_OR_NULL,
                    "description": "the receiver's answer; null when none came",
                },
                "error": {
                    **STRING_OR_NULL,
                    "description": "why it failed: refused address, timeout, HTTP status…",
                },
                "duration_ms": {"type": "number"},
            }
        ),
        "description": "One re-send of a stored CloudEvent to a webhook",
    },
    "Failure": _object(
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
    "FailureGroup": _object(
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
    "Lag": _object(
        {
            "system": STRING,
            "vhost": {**STRING_OR_NULL, "description": "RabbitMQ vhost"},
            "account": {**STRING_OR_NULL, "description": "NATS account"},
            "channel": STRING,
            "group": STRING,
            "lag": INTEGER_OR_NULL,
            "lag_seconds": NUMBER_OR_NULL,
            "lag_seconds_method": STRING_OR_NULL,
            "estimated": {"type": ["boolean", "null"]},
            "consume_rate": NUMBER_OR_NULL,
            "status": {"enum": ["ok", "warning", "error", "stalled", "stopped", "rewind"]},
            "reason": STRING_OR_NULL,
            "partitions": {"type": "array", "items": OBJECT},
            "updated_at": DATE_TIME_OR_NULL,
            "reported_at": {
                **DATE_TIME_OR_NULL,
                "description": "when the broker last listed the group itself",
            },
            "error": STRING_OR_NULL,
        },
        optional=("vhost", "account"),
    ),
    "AlertRule": {
        "type": "object",
        "required": ["name", "kind", "params"],
        "properties": {
            "id": {"type": "integer", "readOnly": True},
            "name": STRING,
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
            "params": OBJECT,
            "for_seconds": INTEGER,
            "repeat_seconds": INTEGER,
            "webhooks": {"type": "array", "items": INTEGER},
            "enabled": BOOLEAN,
            "muted_until": DATE_TIME_OR_NULL,
            "created_at": {**DATE_TIME, "readOnly": True},
            "updated_at": {**DATE_TIME, "readOnly": True},
            "last_evaluated_at": {**DATE_TIME_OR_NULL, "readOnly": True},
            "last_error": {**STRING_OR_NULL, "readOnly": True},
        },
    },
    "Webhook": {
        "type": "object",
        "required": ["name", "url"],
        "properties": {
            "id": {"type": "integer", "readOnly": True},
            "name": STRING,
            "url": {
                "type": "string",
                "format": "uri",
                "description": "in full for editors, masked for viewers",
            },
            "format": {"enum": ["json", "alertmanager", "slack", "alertmanager-push"]},
            "secret": {"type": "string", "description": "whsec_… signing key (editors only)"},
            "secret_hint": {**STRING_OR_NULL, "readOnly": True},
            "ca_bundle": {
                "type": "string",
                "description": "PEM certificates of a private CA that issued the receiver's "
                "certificate; when set, the receiver is verified against these alone "
                "(empty: the public roots). Verification cannot be turned off",
            },
            "created_at": {**DATE_TIME, "readOnly": True},
            "updated_at": {**DATE_TIME, "readOnly": True},
            "deliveries": {
                "type": "array",
                "items": _ref("Delivery"),
                "readOnly": True,
                "description": "GET of one webhook: its newest deliveries",
            },
        },
    },
    "Attempt": _object(
        {
            "at": DATE_TIME,
            "status_code": INTEGER_OR_NULL,
            "error": STRING_OR_NULL,
            "duration_ms": NUMBER_OR_NULL,
            "next_retry_at": DATE_TIME_OR_NULL,
        }
    ),
    "Delivery": _object(
        {
            "id": INTEGER,
            "webhook": INTEGER,
            "alert": INTEGER_OR_NULL,
            "event": STRING,
            "message_id": STRING,
            "status": STRING,
            "created_at": DATE_TIME,
            "delivered_at": DATE_TIME_OR_NULL,
            "next_attempt_at": DATE_TIME_OR_NULL,
            "give_up_at": DATE_TIME_OR_NULL,
            "last_error": STRING_OR_NULL,
            "attempt_count": INTEGER,
            "attempts": {"type": "array", "items": _ref("Attempt")},
        }
    ),
    "Alert": _object(
        {
            "id": INTEGER,
            "rule": INTEGER,
            "rule_name": STRING,
            "kind": STRING,
            "state": {"enum": ["pending", "firing", "resolved"]},
            "fingerprint": STRING,
            "labels": OBJECT,
            "value": NUMBER_OR_NULL,
            "summary": STRING,
            "started_at": DATE_TIME,
            "firing_at": DATE_TIME_OR_NULL,
            "resolved_at": DATE_TIME_OR_NULL,
            "last_notified_at": DATE_TIME_OR_NULL,
            "deliveries": {"type": "array", "items": _ref("Delivery")},
        }
    ),
}

SCHEMAS["AuditEvent"] = _object(
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

AUDIT_FILTERS = [
    _param("action", "One action (token.created) or a family (token)"),
    _param("actor", "Only events of this username"),
    _param("since", "From this time (RFC 3339, UTC)", {"type": "string", "format": "date-time"}),
    _param("until", "Before this time (RFC 3339, UTC)", {"type": "string", "format": "date-time"}),
]

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
                    "Flow graph of a time window: the busiest edges and their nodes",
                    [
                        *WINDOW,
                        _param(
                            "limit",
                            "Most edges returned (the busiest first); `truncated` says when "
                            "there were more",
                            {"type": "integer", "minimum": 1, "maximum": 2000, "default": 500},
                        ),
                    ],
                    {"200": _json(_ref("Flow"))},
                    tag="flow",
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
            "/api/events/{event_id}/replay": {
                "post": _op(
                    "Replay the stored event to a webhook (editor, signed-in session): one "
                    "CloudEvents structured-mode request; a failed send is a 201 with "
                    "status failed",
                    [
                        _param("event_id", "event id", where="path"),
                        _param("source", "CloudEvents source (or in the body)"),
                    ],
                    {
                        "201": _json(_ref("Replay"), "Sent (or tried) and recorded"),
                        **NOT_FOUND,
                        **CONFLICT,
                    },
                    body=_ref("ReplayRequest"),
                    tag="journeys",
                )
            },
            "/api/events/{event_id}/replays": {
                "get": _op(
                    "The event's replays, newest first",
                    [
                        _param("event_id", "event id", where="path"),
                        _param("source", "Only replays of the event from this source"),
                        *PAGE,
                    ],
                    {"200": _json(_list_of(_ref("Replay"))), **NOT_FOUND},
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
                            {
                                "oneOf": [
                                    _list_of(_ref("Failure"), windowed=True),
                                    _list_of(_ref("FailureGroup"), windowed=True),
                                ]
                            }
                        )
                    },
                    tag="failures",
                )
            },
            "/api/lag": {
                "get": _op(
                    "Consumer lag per (system, channel, group)",
                    PAGE,
                    {
                        "200": _json(
                            _list_of(
                                _ref("Lag"),
                                brokers={
                                    "type": "array",
                                    "items": OBJECT,
                                    "description": "configured brokers that are not answering",
                                },
                            )
                        )
                    },
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
                    {"200": _json(_ref("Delivery")), **NOT_FOUND},
                    tag="alerts",
                )
            },
            "/api/audit": {
                "get": _op(
                    "The audit log, newest first (signed-in admins only; API tokens get 403): "
                    "the project's events, and for installation admins also sign-ins",
                    [*AUDIT_FILTERS, *PAGE],
                    {"200": _json(_list_of(_ref("AuditEvent")))},
                    tag="audit",
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
