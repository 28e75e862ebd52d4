"""System name (as in channel ids) → the module that handles its dead letters."""

from collector.brokers.poller import SYSTEMS
from dashboard.deadletters.systems import nats, rabbitmq, redis_streams, sqs

MODULES = {
    "rabbitmq": rabbitmq,
    "redis": redis_streams,
    "nats": nats,
    "aws_sqs": sqs,
}
# Broker kind (collector.brokers.poller) → system name.
BY_KIND = {"rabbitmq": "rabbitmq", "redis": "redis", "nats": "nats", "aws_sqs": "aws_sqs"}
# The URL schemes of EVENTSCOPE_BROKERS, with SQS's `sqs://<region>` (CONTRACT §7).
SCHEMES = {**SYSTEMS, "sqs": "aws_sqs"}
