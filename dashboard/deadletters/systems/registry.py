"""System name (as in channel ids) → the module that handles its dead letters."""

from dashboard.deadletters.systems import nats, rabbitmq, redis_streams, sqs

MODULES = {
    "rabbitmq": rabbitmq,
    "redis": redis_streams,
    "nats": nats,
    "aws_sqs": sqs,
}
# Broker kind (collector.brokers.poller) → system name.
BY_KIND = {"rabbitmq": "rabbitmq", "redis": "redis", "nats": "nats", "aws_sqs": "aws_sqs"}
