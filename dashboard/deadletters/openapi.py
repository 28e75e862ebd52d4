"""What the dead letters add to /api/openapi.json (CONTRACT §7)."""

from dashboard.jsonapi import (
    BOOLEAN,
    DATE_TIME_OR_NULL,
    INTEGER,
    INTEGER_OR_NULL,
    NOT_FOUND,
    NUMBER_OR_NULL,
    OBJECT,
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

STATES = ["queued", "running", "done", "failed", "cancelled"]
ITEM_STATES = ["pending", "moving", "moved", "failed", "would_move", "skipped"]
SYSTEM = {"enum": ["rabbitmq", "redis", "nats", "aws_sqs"]}

SCHEMAS = {
    "DeadLetterQueue": object_schema(
        {
            "system": SYSTEM,
            "name": STRING,
            "vhost": {**STRING, "description": "RabbitMQ only"},
            "source_channel": {
                **STRING_OR_NULL,
                "description": "where its messages came from, when known",
            },
            "depth": INTEGER_OR_NULL,
            "oldest_age_seconds": {
                **NUMBER_OR_NULL,
                "description": "since the oldest message was dead-lettered; null when unknown",
            },
            "broker": {**STRING, "description": "the broker's URL without credentials"},
            "why": {**STRING, "description": "how it was recognised as a dead-letter queue"},
        },
        optional=("vhost",),
    ),
    "DeadLetter": object_schema(
        {
            "id": {**STRING, "description": "what a redrive's `messages` names it by"},
            "headers": OBJECT,
            "payload": {**STRING, "description": "redacted, cut at 64 KiB"},
            "error": STRING_OR_NULL,
            "original_channel": STRING_OR_NULL,
            "traceparent": STRING_OR_NULL,
            "event_id": STRING_OR_NULL,
            "time": DATE_TIME_OR_NULL,
        }
    ),
    "RedriveRequest": {
        "type": "object",
        "required": ["system", "dead_letter"],
        "properties": {
            "system": SYSTEM,
            "dead_letter": STRING,
            "vhost": {**STRING, "description": "RabbitMQ: the dead-letter queue's vhost"},
            "messages": {
                "oneOf": [{"const": "all"}, {"type": "array", "items": STRING}],
                "description": '"all" (the default) or message ids from a peek',
            },
            "destination": {
                **STRING,
                "description": "a channel of the same system (RabbitMQ: a queue, or "
                "exchange/routing-key); default: where each message came from",
            },
            "rate_per_s": {"type": "number", "exclusiveMinimum": 0, "default": 50},
            "dry_run": {**BOOLEAN, "default": False},
        },
    },
    "Redrive": object_schema(
        {
            "id": INTEGER,
            "system": SYSTEM,
            "dead_letter": STRING,
            "vhost": STRING,
            "broker": STRING,
            "destination": STRING_OR_NULL,
            "messages": {"oneOf": [{"const": "all"}, {"type": "array", "items": STRING}]},
            "rate_per_s": {"type": "number"},
            "dry_run": BOOLEAN,
            "state": {"enum": STATES},
            "cancel_requested": BOOLEAN,
            "total": INTEGER,
            "moved": INTEGER,
            "failed": {**INTEGER, "description": "done when moved + failed = total"},
            "error": STRING_OR_NULL,
            "guarantee": {
                **STRING_OR_NULL,
                "description": "how this broker keeps a message from being lost or moved twice",
            },
            "requested_by": STRING,
            "created_at": {"type": "string", "format": "date-time"},
            "started_at": DATE_TIME_OR_NULL,
            "finished_at": DATE_TIME_OR_NULL,
            "items": {
                "type": "array",
                "description": "what moved where (the first 1000)",
                "items": object_schema(
                    {
                        "message_id": STRING,
                        "destination": STRING_OR_NULL,
                        "state": {"enum": ITEM_STATES},
                        "error": STRING_OR_NULL,
                        "event_id": STRING_OR_NULL,
                        "traceparent": {
                            **STRING_OR_NULL,
                            "description": "what the redriven message carries: its trace, a new span",
                        },
                        "redrive_count": INTEGER,
                        "moved_at": DATE_TIME_OR_NULL,
                    }
                ),
            },
            "items_shown": INTEGER,
        },
        optional=("vhost", "items", "items_shown"),
    ),
}

REDRIVE_ID = [param("id", "redrive id", {"type": "integer"}, where="path")]
CONFLICT = {
    "409": {
        "description": "The redrive has already finished",
        "content": {"application/json": {"schema": ref("Error")}},
    }
}

PATHS = {
    "/api/dead-letters": {
        "get": operation(
            "Dead-letter queues and streams on the project's brokers, with depth and oldest age",
            PAGE,
            {
                "200": response(
                    list_of(
                        ref("DeadLetterQueue"),
                        unreachable={
                            "type": "array",
                            "items": object_schema(
                                {"broker": STRING, "system": STRING, "error": STRING}
                            ),
                        },
                    )
                )
            },
            tag="dead letters",
        )
    },
    "/api/dead-letters/{system}/{name}/messages": {
        "get": operation(
            "A peek at the messages of one dead-letter queue; nothing is consumed "
            "(peek_side_effect says what a broker changes all the same)",
            [
                param("system", "messaging system", SYSTEM, where="path"),
                param("name", "the queue or stream's name", where="path"),
                param("vhost", "RabbitMQ vhost"),
                param("limit", "messages", {"type": "integer", "minimum": 1, "maximum": 500}),
            ],
            {
                "200": response(
                    list_of(
                        ref("DeadLetter"),
                        dead_letter=ref("DeadLetterQueue"),
                        peek_side_effect=STRING_OR_NULL,
                    )
                ),
                **NOT_FOUND,
            },
            tag="dead letters",
        )
    },
    "/api/redrives": {
        "post": operation(
            "Queue a redrive for the worker (editor, signed-in session; read tokens get 403)",
            (),
            {
                "202": response(
                    object_schema({"id": INTEGER, "state": {"enum": STATES}}), "Queued"
                ),
                **NOT_FOUND,
            },
            body=ref("RedriveRequest"),
            tag="dead letters",
        )
    },
    "/api/redrives/{id}": {
        "get": operation(
            "A redrive: state, counts and what moved where",
            REDRIVE_ID,
            {"200": response(ref("Redrive")), **NOT_FOUND},
            tag="dead letters",
        )
    },
    "/api/redrives/{id}/cancel": {
        "post": operation(
            "Cancel a redrive (editor): a queued one at once, a running one before its next message",
            REDRIVE_ID,
            {"200": response(ref("Redrive")), **NOT_FOUND, **CONFLICT},
            tag="dead letters",
        )
    },
}
