"""AWS Lambda event source mappings: which function reads which queue or stream.

Each mapping is a `consume` route from its source's channel to the
function (the service of that name): an SQS queue (group '', as every
queue), a Kinesis or DynamoDB stream (group: the function, the consumer
that holds the shards), a Kafka topic (group: the mapping's UUID, the
consumer group id Lambda uses). Batch size, batching window, state and the
last processing result are the route's details; the on-failure destination
of stream and Kafka sources is a `dead_letter` route (SQS sources use the
queue's own redrive policy, which the SQS poller reads).

Lag, where CloudWatch reports it for the function: IteratorAge (the age of
the last record read, for streams) as an exact time lag of the function's
group on the stream, and OffsetLag for Kafka sources, in messages.
"""

import datetime as dt
import time

from collector.brokers import aws, topology
from collector.brokers.samples import Reading, Report

SOURCE_SYSTEMS = {"sqs": "aws_sqs", "kinesis": "aws_kinesis", "dynamodb": "aws_dynamodb"}
KAFKA = "kafka"


def source_channel(mapping: dict) -> tuple[str, str] | None:
    """(system, channel) a mapping reads."""
    arn = mapping.get("EventSourceArn") or ""
    topics = mapping.get("Topics") or []
    parts = arn.split(":")
    service = parts[2] if len(parts) > 2 else ""
    if topics and (service == "kafka" or not arn):
        return KAFKA, topics[0]
    if service == "dynamodb":  # …:table/<table>/stream/<label>
        return SOURCE_SYSTEMS[service], arn.split("/")[1] if "/" in arn else arn
    if service in SOURCE_SYSTEMS:
        return SOURCE_SYSTEMS[service], topology.arn_name(arn)
    return None


def group_of(system: str, function: str, mapping: dict) -> str:
    if system == "aws_sqs":
        return ""
    if system == KAFKA:
        return (mapping.get("AmazonManagedKafkaEventSourceConfig") or {}).get(
            "ConsumerGroupId"
        ) or mapping.get("UUID", "")
    return function


def read(url: str, timeout: float) -> Report:
    """Every event source mapping of the region as a route, and the lag CloudWatch gives."""
    client = aws.client(url, "lambda", timeout)
    mappings = aws.pages(
        client.list_event_source_mappings, "EventSourceMappings", "Marker", "NextMarker"
    )
    routes, timed = [], []
    for mapping in mappings:
        source = source_channel(mapping)
        if source is None:
            continue
        system, name = source
        function = topology.arn_name(mapping.get("FunctionArn", ""))
        group = group_of(system, function, mapping)
        details = {
            "uuid": mapping.get("UUID"),
            "batch_size": mapping.get("BatchSize"),
            "state": mapping.get("State"),
            "last_processing_result": mapping.get("LastProcessingResult"),
        }
        if mapping.get("MaximumBatchingWindowInSeconds") is not None:
            details["batching_window_seconds"] = mapping["MaximumBatchingWindowInSeconds"]
        channel = topology.channel(system, name)
        routes.append(
            topology.Route(channel, topology.service(function), topology.CONSUME, group, details)
        )
        failure = ((mapping.get("DestinationConfig") or {}).get("OnFailure") or {}).get(
            "Destination"
        )
        if failure:
            parts = failure.split(":")
            target_system = SOURCE_SYSTEMS.get(parts[2] if len(parts) > 2 else "", "aws_sns")
            routes.append(
                topology.Route(
                    channel,
                    topology.channel(target_system, topology.arn_name(failure)),
                    topology.DEAD_LETTER,
                    group,
                    {"function": function, "uuid": mapping.get("UUID")},
                )
            )
        if system != "aws_sqs":
            timed.append((system, name, group, function))
    return Report(mapping_lag(url, timeout, timed), routes=routes)


def mapping_lag(url: str, timeout: float, timed: list[tuple]) -> list[Reading]:
    if not timed:
        return []
    queries = [
        (
            aws.metric_id("lag", i),
            "OffsetLag" if system == KAFKA else "IteratorAge",
            {"FunctionName": function},
            "Maximum",
        )
        for i, (system, _, _, function) in enumerate(timed)
    ]
    figures = aws.latest_metrics(
        aws.client(url, "cloudwatch", timeout), "AWS/Lambda", queries, dt.datetime.now(dt.UTC)
    )
    now = time.time()
    readings = []
    for i, (system, channel, group, function) in enumerate(timed):
        value = figures.get(aws.metric_id("lag", i))
        if value is None:
            continue
        if system == KAFKA:
            reading = Reading(system, channel, group, lag=int(value), time=now)
        else:  # IteratorAge, milliseconds
            reading = Reading(
                system,
                channel,
                group,
                lag=0 if not value else None,
                oldest_at=now - value / 1000 if value else None,
                time=now,
            )
        reading.details = {"function": function}
        readings.append(reading)
    return readings


poll = aws.poller(read)
