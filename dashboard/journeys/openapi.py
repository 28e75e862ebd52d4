"""What journeys adds to /api/openapi.json: GET /api/traces/{trace_id}, GET /api/events/{event_id}, GET /api/search, GET /api/traces, and the schemas they answer with."""

from dashboard.jsonapi import (
    BOOLEAN,
    DATE_TIME,
    INTEGER,
    INTEGER_OR_NULL,
    NOT_FOUND,
    NUMBER_OR_NULL,
    OBJECT,
    PAGE,
    STAGES,
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
    "Span": object_schema(
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
    "Stage": object_schema(
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
            "batch_size": {
                **INTEGER_OR_NULL,
                "description": "a consumer stage that took several messages at once "
                "(a batch receive): how many; its trace_id and span_id are the batch",
            },
        }
    ),
    "Envelope": {
        **object_schema(
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
    "Log": object_schema(
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
    "Journey": object_schema(
        {
            "trace_id": {"type": "string", "description": "traces only"},
            "event_id": {"type": "string", "description": "events only"},
            "source": {**STRING_OR_NULL, "description": "events only: the CloudEvents source"},
            "spans": {"type": "array", "items": ref("Span")},
            "stages": {"type": "array", "items": ref("Stage")},
            "errors": {
                "type": "array",
                "items": ref("Stage"),
                "description": "events only: the stages with an error",
            },
            "envelope": {
                "oneOf": [ref("Envelope"), {"type": "null"}],
                "description": "events only",
            },
            "envelopes": {"type": "array", "items": ref("Envelope")},
            "logs": {"type": "array", "items": ref("Log")},
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
    "SearchHit": object_schema(
        {
            "kind": {"enum": ["trace", "event"]},
            "id": {"type": "string", "description": "the trace id (hex) or the event id"},
            "source": {**STRING_OR_NULL, "description": "the CloudEvents source of an event"},
            "matched": {
                "enum": ["trace_id", "event_id", "message_id", "subject", "payload"],
                "description": "what the search matched: a trace id, a CloudEvents id, a "
                "messaging message id, the CloudEvents subject, or a payload field",
            },
            "prefix": {"type": "boolean", "description": "the id only starts with the search"},
            "time": {**DATE_TIME, "description": "first seen (ids) or the newest envelope"},
            "service": STRING_OR_NULL,
            "trace_id": STRING_OR_NULL,
            "type": {**STRING_OR_NULL, "description": "subject and payload hits"},
            "subject": {**STRING_OR_NULL, "description": "subject and payload hits"},
            "url": {"type": "string", "description": "the journey page"},
        },
        optional=("type", "subject"),
    ),
    "TraceSummary": object_schema(
        {
            "trace_id": STRING,
            "time": {
                **DATE_TIME,
                "description": "its newest root span or stage matching the filters",
            },
            "start": DATE_TIME,
            "duration_ms": {"type": "number"},
            "root_service": STRING_OR_NULL,
            "root_name": STRING_OR_NULL,
            "spans": INTEGER,
            "errors": {**INTEGER, "description": "spans with error status"},
            "stages": INTEGER,
            "failed_stages": {**INTEGER, "description": "failed or dead-lettered stages"},
            "services": {"type": "array", "items": STRING},
            "channels": {"type": "array", "items": STRING},
            "url": {"type": "string", "description": "the trace's journey page"},
        }
    ),
}

SEARCH_SYNTAX = (
    "a trace id, an event id or a messaging message id (whole, or its first 8+ "
    "characters), subject=<CloudEvents subject>, or data.<field>=<value> (also "
    "payload.<field>; dots go deeper) for stored CloudEvents payloads"
)

PATHS = {
    "/api/search": {
        "get": operation(
            "What the search box finds, newest first; each hit links to its journey",
            [param("q", SEARCH_SYNTAX, required=True), *PAGE],
            {
                "200": response(
                    list_of(
                        ref("SearchHit"),
                        query=STRING,
                        kind={"enum": ["id", "subject", "payload"]},
                    )
                )
            },
            tag="journeys",
        )
    },
    "/api/traces": {
        "get": operation(
            "Recent traces, newest first, with duration, spans and errors",
            [
                param("service", "traces whose root span or a messaging stage is this service's"),
                param("channel", "traces with a messaging stage on this channel"),
                param("system", "the channel's messaging system (with channel)"),
                param(
                    "status",
                    "error: traces whose root span has error status, or with a failed or "
                    "dead-lettered stage",
                    {"enum": ["error"]},
                ),
                *WINDOW,
                *PAGE,
            ],
            {"200": response(list_of(ref("TraceSummary"), windowed=True))},
            tag="journeys",
        )
    },
    "/api/traces/{trace_id}": {
        "get": operation(
            "A trace: spans and event stages in time order, with linked consumers",
            [param("trace_id", "32 hex digits", where="path")],
            {"200": response(ref("Journey")), **NOT_FOUND},
            tag="journeys",
        )
    },
    "/api/events/{event_id}": {
        "get": operation(
            "An event's envelope (payload redacted) and journey",
            [
                param("event_id", "event id", where="path"),
                param("source", "CloudEvents source, when ids repeat across sources"),
            ],
            {"200": response(ref("Journey")), **NOT_FOUND},
            tag="journeys",
        )
    },
}
