"""What replays adds to /api/openapi.json: POST /api/events/{event_id}/replay and GET /api/events/{event_id}/replays, and the schemas they answer with."""

from dashboard.jsonapi import (
    CONFLICT,
    DATE_TIME,
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
