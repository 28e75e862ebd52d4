"""What alerts adds to /api/openapi.json: alert rules, webhooks and alerts, and the schemas they answer with."""

from dashboard.jsonapi import (
    BOOLEAN,
    DATE_TIME,
    DATE_TIME_OR_NULL,
    INTEGER,
    INTEGER_OR_NULL,
    NOT_FOUND,
    NUMBER_OR_NULL,
    OBJECT,
    PAGE,
    STRING,
    STRING_OR_NULL,
    WINDOW,
    crud,
    list_of,
    object_schema,
    operation,
    param,
    ref,
    response,
)

SCHEMAS = {
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
                    "duplicates",
                    "missing_events",
                    "out_of_order",
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
            "format": {"enum": ["json", "alertmanager", "alertmanager-push", "slack"]},
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
                "items": ref("Delivery"),
                "readOnly": True,
                "description": "GET of one webhook: its newest deliveries",
            },
        },
    },
    "Attempt": object_schema(
        {
            "at": DATE_TIME,
            "status_code": INTEGER_OR_NULL,
            "error": STRING_OR_NULL,
            "duration_ms": NUMBER_OR_NULL,
            "next_retry_at": DATE_TIME_OR_NULL,
        }
    ),
    "Delivery": object_schema(
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
            "attempts": {"type": "array", "items": ref("Attempt")},
        }
    ),
    "Alert": object_schema(
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
            "deliveries": {"type": "array", "items": ref("Delivery")},
        }
    ),
}

PATHS = {
    "/api/alert-rules": {
        "get": operation(
            "Alert rules", PAGE, {"200": response(list_of(ref("AlertRule")))}, tag="alerts"
        ),
        "post": operation(
            "Create an alert rule (editor)",
            (),
            {"201": response(ref("AlertRule"))},
            body=ref("AlertRule"),
            tag="alerts",
        ),
    },
    "/api/alert-rules/{id}": crud("alert rule", "AlertRule", "alerts"),
    "/api/webhooks": {
        "get": operation(
            "Webhook destinations",
            PAGE,
            {"200": response(list_of(ref("Webhook")))},
            tag="alerts",
        ),
        "post": operation(
            "Create a webhook (editor)",
            (),
            {"201": response(ref("Webhook"))},
            body=ref("Webhook"),
            tag="alerts",
        ),
    },
    "/api/webhooks/{id}": crud("webhook", "Webhook", "alerts"),
    "/api/webhooks/{id}/test": {
        "post": operation(
            "Send a test notification (editor)",
            [param("id", "webhook id", {"type": "integer"}, where="path")],
            {"200": response(ref("Delivery")), **NOT_FOUND},
            tag="alerts",
        )
    },
    "/api/alerts": {
        "get": operation(
            "Alert instances with their deliveries",
            [*WINDOW, *PAGE],
            {"200": response(list_of(ref("Alert")))},
            tag="alerts",
        )
    },
}
