"""What lag adds to /api/openapi.json: GET /api/lag, and the schemas they answer with."""

from dashboard.jsonapi import (
    DATE_TIME_OR_NULL,
    INTEGER_OR_NULL,
    NUMBER_OR_NULL,
    OBJECT,
    PAGE,
    STRING,
    STRING_OR_NULL,
    list_of,
    object_schema,
    operation,
    ref,
    response,
)

SCHEMAS = {
    "Lag": object_schema(
        {
            "system": STRING,
            "vhost": {**STRING_OR_NULL, "description": "RabbitMQ vhost"},
            "account": {**STRING_OR_NULL, "description": "NATS account"},
            "namespace": {
                **STRING_OR_NULL,
                "description": "Pulsar tenant/namespace, Service Bus or Event Hubs namespace, "
                "Google Cloud project",
            },
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
        optional=("vhost", "account", "namespace"),
    ),
}

PATHS = {
    "/api/lag": {
        "get": operation(
            "Consumer lag per (system, channel, group)",
            PAGE,
            {
                "200": response(
                    list_of(
                        ref("Lag"),
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
}
