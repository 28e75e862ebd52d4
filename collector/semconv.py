"""The OpenTelemetry messaging semantic conventions, old and new, in one table.

Instrumentations in the wild emit several generations of attribute names
(Python's kafka-python, pika and celery still use the v1.17-era ones, aiokafka
the current ones). Everything that reads messaging spans asks this module, so
a new alias is one line here.
"""

import re

from collector.batch import CONSUMER, PRODUCER

# field -> attribute names, current name first, then older ones.
ATTRIBUTES: dict[str, tuple[str, ...]] = {
    "system": ("messaging.system",),
    "destination": (
        "messaging.destination.name",
        "messaging.destination",
        "messaging.source.name",
    ),
    "destination_template": ("messaging.destination.template",),
    "operation_type": ("messaging.operation.type", "messaging.operation"),
    "operation_name": ("messaging.operation.name",),
    "consumer_group": (
        "messaging.consumer.group.name",
        "messaging.kafka.consumer.group",
        "messaging.kafka.consumer_group",
        "messaging.eventhubs.consumer.group",
        "messaging.rocketmq.client_group",
        # Pub/Sub, Service Bus and SNS subscriptions play the consumer group's part.
        "messaging.destination.subscription.name",
        "messaging.servicebus.destination.subscription_name",
    ),
    "message_id": ("messaging.message.id", "messaging.message_id"),
    "conversation_id": ("messaging.message.conversation_id", "messaging.conversation_id"),
    "partition": (
        "messaging.destination.partition.id",
        "messaging.kafka.destination.partition",
        "messaging.kafka.partition",
    ),
    "routing_key": ("messaging.rabbitmq.destination.routing_key", "messaging.rabbitmq.routing_key"),
    "batch_count": ("messaging.batch.message_count",),
    "body_size": (
        "messaging.message.body.size",
        "messaging.message.payload_size_bytes",
        "messaging.message_payload_size_bytes",
    ),
    "client_id": ("messaging.client.id", "messaging.client_id", "messaging.kafka.client_id"),
    "error_type": ("error.type",),
    # The AWS SDK instrumentations name the API call, not a messaging
    # operation (botocore's SQS spans are CLIENT spans with no operation):
    # see RPC_OPERATION_TYPE.
    "rpc_method": ("rpc.method",),
    # Eventscope's own override: an instrumentation that knows better (a
    # retry, a dead-letter hand-off) states the stage outright.
    "stage": ("eventscope.stage", "messaging.eventscope.stage"),
}

# Markers of messaging spans beyond messaging.system, for partial instrumentations.
MESSAGING_PREFIX = "messaging."

# messaging.operation.type (and the legacy messaging.operation) -> (stage, role).
# `settle` (ack/nack) is not a stage of its own: the process span carries the outcome.
OPERATION_STAGE: dict[str, tuple[str, str] | None] = {
    "create": ("published", PRODUCER),
    "send": ("published", PRODUCER),
    "publish": ("published", PRODUCER),
    "receive": ("received", CONSUMER),
    "process": ("processed", CONSUMER),
    "deliver": ("processed", CONSUMER),
    "settle": None,
}

# System-specific messaging.operation.name values, when no type is given.
OPERATION_NAME_TYPE = {
    "send": "send",
    "publish": "send",
    "produce": "send",
    "create": "create",
    "receive": "receive",
    "poll": "receive",
    "recv": "receive",
    "fetch": "receive",
    "process": "process",
    "consume": "process",
    "deliver": "process",
    "handle": "process",
    "ack": "settle",
    "nack": "settle",
    "complete": "settle",
    "abandon": "settle",
    "settle": "settle",
}

# API calls of messaging systems' SDKs (`rpc.method`, as the AWS SDK
# instrumentations set it) -> operation type, for messaging spans that give
# no operation of their own.
RPC_OPERATION_TYPE = {
    "SendMessage": "send",  # SQS
    "SendMessageBatch": "send",
    "ReceiveMessage": "receive",
    "Publish": "send",  # SNS
    "PublishBatch": "send",
    "PutRecord": "send",  # Kinesis
    "PutRecords": "send",
    "GetRecords": "receive",
    "PutEvents": "send",  # EventBridge
}

# messaging.system values of older or SDK-specific instrumentations -> the
# name the conventions use now (and Eventscope's channel ids): botocore says
# `aws.sqs` and `aws.sns`.
SYSTEM_NAMES = {
    "aws.sqs": "aws_sqs",
    "aws.sns": "aws_sns",
    "aws.kinesis": "aws_kinesis",
    "aws.eventbridge": "aws_eventbridge",
    "eventbridge": "aws_eventbridge",
    "azure.servicebus": "servicebus",
    "azure_servicebus": "servicebus",
    "azure.eventhubs": "eventhubs",
    "azure_eventhubs": "eventhubs",
    "microsoft.servicebus": "servicebus",
    "microsoft.eventhub": "eventhubs",
    "pubsub": "gcp_pubsub",
    "gcp.pubsub": "gcp_pubsub",
}
# Systems whose spans name a destination by its ARN (botocore's SNS spans):
# the channel is the bare name at its end.
ARN_DESTINATIONS = ("aws_sns",)
# Systems whose spans name a topic by its full URL (Pulsar's
# `persistent://tenant/namespace/topic[-partition-N]`): the channel is the
# bare topic, partitions included, as the broker pollers name it.
TOPIC_URL_DESTINATIONS = ("pulsar",)
_PARTITION_SUFFIX = re.compile(r"-partition-\d+$")

# A channel whose name ends like this holds dead letters.
DEAD_LETTER_SUFFIXES = (".dlq", "-dlq", "_dlq", ".dlt", "-dlt", "_dlt", ".deadletter")
DEAD_LETTER_WORDS = ("dead-letter", "dead_letter", "deadletter")


# attribute name -> (field, rank): rank 0 is the current name, higher ones older.
_FIELD_OF: dict[str, tuple[str, int]] = {
    name: (field, rank) for field, names in ATTRIBUTES.items() for rank, name in enumerate(names)
}


def fields(attributes: dict) -> dict:
    """{field: value} of a span's attributes, each under its current or any legacy
    name (the current one wins); empty values count as absent.

    One pass over the span's attributes: cheaper than asking for each field
    under each of its names, which is what every span would cost otherwise.
    """
    found: dict = {}
    ranks: dict[str, int] = {}
    for key, value in attributes.items():
        hit = _FIELD_OF.get(key)
        if hit is None or value is None or value == "":
            continue
        field, rank = hit
        if field not in ranks or rank < ranks[field]:
            found[field] = value
            ranks[field] = rank
    return found


def text(found: dict, field: str) -> str:
    """A field of `fields()` as a string ('' when absent), for columns never NULL."""
    value = found.get(field)
    return "" if value is None else str(value)


def is_messaging(attributes: dict, found: dict) -> bool:
    """True when a span carries messaging attributes of any generation
    (`found` is fields(attributes))."""
    if len(found) > ("error_type" in found) + ("rpc_method" in found):
        return True
    # One search over the joined keys instead of a Python loop, for
    # messaging attributes this table does not name.
    return _KEY_MARKER in _KEY_SEPARATOR + _KEY_SEPARATOR.join(attributes)


_KEY_SEPARATOR = "\x00"  # never in a key: normalisation replaces NUL
_KEY_MARKER = _KEY_SEPARATOR + MESSAGING_PREFIX


def operation_type(found: dict) -> str | None:
    """The normalised operation type (create/send/receive/process/settle), or None."""
    value = found.get("operation_type")
    if isinstance(value, str) and value.lower() in OPERATION_STAGE:
        lowered = value.lower()
        return {"publish": "send", "deliver": "process"}.get(lowered, lowered)
    name = found.get("operation_name")
    if isinstance(name, str):
        return OPERATION_NAME_TYPE.get(name.lower())
    method = found.get("rpc_method")
    if isinstance(method, str) and "system" in found:
        return RPC_OPERATION_TYPE.get(method)
    return None


def system(found: dict) -> str:
    """messaging.system under the name the current conventions give it."""
    name = text(found, "system")
    return SYSTEM_NAMES.get(name.lower(), name) if name else name


def is_legacy_receive(attributes: dict) -> bool:
    """True when a span says `receive` only under the legacy `messaging.operation`
    name (v1.17-era conventions, as pika and aio-pika emit).

    Those instrumentations wrap the whole handling of one pushed message in
    that span and make no process span of their own; the current conventions'
    `messaging.operation.type` = `receive` means a receipt and nothing more.
    """
    if attributes.get("messaging.operation.type") not in (None, ""):
        return False
    value = attributes.get("messaging.operation")
    return isinstance(value, str) and value.lower() == "receive"


def channel(found: dict, role: str) -> str:
    """The channel (topic, queue, subject, stream) a messaging span talks to.

    RabbitMQ names destinations `{exchange}:{routing_key}` when producing and
    `{exchange}:{routing_key}:{queue}` when consuming (empty parts omitted,
    key and queue de-duplicated): a consumer's channel is its queue, the last
    part; a producer's stays `exchange:routing_key`, which is just the queue
    name when publishing through the default exchange.
    """
    name = text(found, "destination") or text(found, "destination_template")
    if name.startswith("arn:") and system(found) in ARN_DESTINATIONS:
        return name.rsplit(":", 1)[-1]
    if "://" in name and system(found) in TOPIC_URL_DESTINATIONS:
        return _PARTITION_SUFFIX.sub("", name.rsplit("/", 1)[-1])
    if name and text(found, "system").lower() == "rabbitmq":
        if name.startswith("amq.default:"):
            name = name[len("amq.default:") :]
        # Older pika instrumentation reports only the exchange (or the key
        # for the default exchange) on both sides, which already agrees.
        if role == CONSUMER and ":" in name:
            name = name.rsplit(":", 1)[1] or name
    return name


def is_dead_letter_channel(name: str) -> bool:
    """True for dead-letter queue/topic names by common convention (orders.dlq, orders-DLT...)."""
    verdict = _dead_letter_verdicts.get(name)
    if verdict is None:
        lowered = name.lower()
        verdict = lowered.endswith(DEAD_LETTER_SUFFIXES) or any(
            w in lowered for w in DEAD_LETTER_WORDS
        )
        # Channel names are few; the bound only guards against name churn.
        if len(_dead_letter_verdicts) >= 10_000:
            _dead_letter_verdicts.clear()
        _dead_letter_verdicts[name] = verdict
    return verdict


_dead_letter_verdicts: dict[str, bool] = {}


def origin_of_dead_letter_channel(name: str) -> str:
    """The channel a dead-letter channel collects for: `orders.dlq` -> `orders`."""
    lowered = name.lower()
    for suffix in DEAD_LETTER_SUFFIXES:
        if lowered.endswith(suffix):
            return name[: -len(suffix)]
    for word in DEAD_LETTER_WORDS:
        index = lowered.find(word)
        if index >= 0:
            stripped = (name[:index] + name[index + len(word) :]).strip(".-_:")
            return stripped or name
    return name
