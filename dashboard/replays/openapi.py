"""What replays adds to /api/openapi.json: POST /api/events/{event_id}/replay and GET /api/events/{event_id}/replays, and the schemas they answer with."""

from dashboard.jsonapi import (
    CONFLICT,
    DATE_TIME,
    DATE_TIME_OR_NULL,
    INTEGER_OR_NULL,
    NOT_FOUND,
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
    "ReplayRequest": {
        "type": "object",
        "required": ["webhook"],
        "properties": {
            "webhook": {"type": "integer", "description": "a json-format webhook of the project"},
            "source": {
                "type": "string",
                "description": "the event's CloudEvents source, when several sources used its id",
            },
            "retry": {
                "type": "boolean",
                "default": False,
                "description": "send it as a job of the worker, retrying timeouts, connection "
                "errors and 5xx answers with backoff (answered 202, status queued)",
            },
        },
    },
    "Replay": {
        **object_schema(
            {
                "id": {
                    "type": "string",
                    "description": "also the replayed event's `esreplay` attribute and "
                    "its `webhook-id` header",
                },
                "event_id": STRING,
                "source": STRING,
                "event_time": {**DATE_TIME, "description": "the stored event's time"},
                "webhook": object_schema(
                    {
                        "id": {**INTEGER_OR_NULL, "description": "null once deleted"},
                        "name": STRING,
                    }
                ),
                "requested_by": STRING,
                "requested_at": DATE_TIME,
                "status": {"enum": ["delivered", "failed", "queued"]},
                "http_status": {
                    **INTEGER_OR_NULL,
                    "description": "the receiver's answer; null when none came",
                },
                "error": {
                    **STRING_OR_NULL,
                    "description": "why it failed: refused address, timeout, HTTP status…",
                },
                "duration_ms": {"type": "number"},
                "retry": {"type": "boolean", "description": "sent by the worker with retries"},
                "attempts": {"type": "integer", "description": "attempts made so far"},
                "next_attempt_at": {
                    **DATE_TIME_OR_NULL,
                    "description": "when a queued replay is tried (again)",
                },
            },
            optional=("retry", "attempts", "next_attempt_at"),
        ),
        "description": "One re-send of a stored CloudEvent to a webhook",
    },
}

PATHS = {
    "/api/events/{event_id}/replay": {
        "post": operation(
            "Replay the stored event to a webhook (editor, signed-in session): one "
            "CloudEvents structured-mode request; a failed send is a 201 with "
            "status failed",
            [
                param("event_id", "event id", where="path"),
                param("source", "CloudEvents source (or in the body)"),
            ],
            {
                "201": response(ref("Replay"), "Sent (or tried) and recorded"),
                "202": response(ref("Replay"), "Queued for the worker (retry: true)"),
                **NOT_FOUND,
                **CONFLICT,
            },
            body=ref("ReplayRequest"),
            tag="journeys",
        )
    },
    "/api/events/{event_id}/replays": {
        "get": operation(
            "The event's replays, newest first",
            [
                param("event_id", "event id", where="path"),
                param("source", "Only replays of the event from this source"),
                *PAGE,
            ],
            {"200": response(list_of(ref("Replay"))), **NOT_FOUND},
            tag="journeys",
        )
    },
}
