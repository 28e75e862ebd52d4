"""Amazon Kinesis Data Streams: how far behind each consumer is, per shard.

Kinesis keeps no consumer positions itself. Consumers built on the Kinesis
Client Library (KCL, and the frameworks on it) keep theirs in a DynamoDB
lease table named after the application: one item per shard with its
`checkpoint` (the sequence number last processed, or TRIM_HORIZON, LATEST,
SHARD_END). Each such application is a consumer group; for each shard it
holds, the records after its checkpoint are counted with GetRecords (at
most MAX_PAGES pages; beyond that the lag is a lower bound, said in the
details) and the first of them gives the exact time lag (its
ApproximateArrivalTimestamp; GetRecords' MillisBehindLatest is kept as a
detail).

Lease tables are found among the region's DynamoDB tables by their key
(`leaseKey`); which stream a table follows is in its keys for multi-stream
applications (`account:stream:epoch:shardId`), is the only stream when the
region has one, or is named in the URL: `kinesis://<region>?kcl=app@stream,…`.
Enhanced fan-out consumers (SubscribeToShard) have no checkpoint the API
shows: their lag in seconds comes from CloudWatch's
SubscribeToShardEvent.MillisBehindLatest where it is published.

Reading records costs the shard's read throughput (5 GetRecords a second
per shard, shared with the consumers): a backlog is counted from at most
MAX_PAGES requests per shard and poll.
"""

import datetime as dt
import logging
import time

from collector.brokers import aws
from collector.brokers.samples import Reading, Report

log = logging.getLogger(__name__)

SYSTEM = "aws_kinesis"
MAX_PAGES = 3
PAGE_RECORDS = 10_000
SPECIAL_CHECKPOINTS = ("TRIM_HORIZON", "LATEST", "AT_TIMESTAMP", "SHARD_END")


def lease_tables(dynamodb, named: dict[str, str]) -> list[str]:
    """The DynamoDB tables that are KCL lease tables (keyed by `leaseKey`)."""
    tables = []
    for name in aws.pages(
        dynamodb.list_tables, "TableNames", "ExclusiveStartTableName", "LastEvaluatedTableName"
    ):
        if name in named:
            tables.append(name)
            continue
        schema = dynamodb.describe_table(TableName=name)["Table"].get("KeySchema") or []
        if [k["AttributeName"] for k in schema] == ["leaseKey"]:
            tables.append(name)
    return tables


def leases(dynamodb, table: str) -> list[dict]:
    """(stream or None, shard id, checkpoint) of every lease in a table."""
    found, start = [], None
    while True:
        response = dynamodb.scan(
            TableName=table,
            ProjectionExpression="leaseKey, checkpoint, leaseOwner",
            **({"ExclusiveStartKey": start} if start else {}),
        )
        for item in response.get("Items") or []:
            key = item.get("leaseKey", {}).get("S", "")
            checkpoint = item.get("checkpoint", {}).get("S")
            stream = None
            if key.count(":") >= 3:  # multi-stream: account:stream:epoch:shardId
                parts = key.split(":")
                stream, key = parts[1], parts[-1]
            found.append({"stream": stream, "shard": key, "checkpoint": checkpoint})
        start = response.get("LastEvaluatedKey")
        if not start:
            return found


def shard_backlog(kinesis, stream: str, shard: str, checkpoint: str | None):
    """(records after the checkpoint, counted in full?, first one's arrival, ms behind);
    None when the shard is finished or the position is not one we can read from."""
    if checkpoint in (None, "SHARD_END", "AT_TIMESTAMP"):
        return None
    if checkpoint == "LATEST":
        return 0, True, None, 0
    if checkpoint == "TRIM_HORIZON":
        where = {"ShardIteratorType": "TRIM_HORIZON"}
    else:
        where = {"ShardIteratorType": "AFTER_SEQUENCE_NUMBER", "StartingSequenceNumber": checkpoint}
    iterator = kinesis.get_shard_iterator(StreamName=stream, ShardId=shard, **where)[
        "ShardIterator"
    ]
    count, first, behind = 0, None, None
    for _ in range(MAX_PAGES):
        response = kinesis.get_records(ShardIterator=iterator, Limit=PAGE_RECORDS)
        records = response.get("Records") or []
        if records and first is None:
            first = records[0]["ApproximateArrivalTimestamp"].timestamp()
        count += len(records)
        behind = response.get("MillisBehindLatest", behind)
        iterator = response.get("NextShardIterator")
        if not iterator or (not records and not behind):
            return count, True, first, behind
    return count, False, first, behind


def stream_of(table: str, lease: dict, named: dict[str, str], streams: list[str]) -> str | None:
    if lease["stream"]:
        return lease["stream"]
    if table in named:
        return named[table]
    return streams[0] if len(streams) == 1 else None


def read(url: str, timeout: float) -> Report:
    """Lag per KCL application and shard, and per enhanced fan-out consumer."""
    _, query = aws.options(url)
    named = dict(item.split("@", 1) for item in (query.get("kcl") or "").split(",") if "@" in item)
    kinesis = aws.client(url, "kinesis", timeout)
    streams = []
    for page in kinesis.get_paginator("list_streams").paginate():
        streams.extend(page.get("StreamNames") or [])
    readings = []
    dynamodb = aws.client(url, "dynamodb", timeout)
    for table in lease_tables(dynamodb, named):
        for lease in leases(dynamodb, table):
            stream = stream_of(table, lease, named, streams)
            if stream not in streams:
                log.debug("kinesis: lease table %s: no stream for %s", table, lease["shard"])
                continue
            backlog = shard_backlog(kinesis, stream, lease["shard"], lease["checkpoint"])
            if backlog is None:
                continue
            count, complete, first, behind = backlog
            details = {"millis_behind_latest": behind}
            if not complete:
                details["lag_at_least"] = True
            readings.append(
                Reading(
                    system=SYSTEM,
                    channel=stream,
                    group=table,
                    partition=lease["shard"],
                    lag=count,
                    oldest_at=first if count else None,
                    time=time.time(),
                    details=details,
                )
            )
    readings += fan_out_readings(url, timeout, kinesis, streams)
    return Report(readings)


def fan_out_readings(url, timeout, kinesis, streams) -> list[Reading]:
    """Enhanced fan-out consumers, timed by CloudWatch where it has figures."""
    consumers = []
    for stream in streams:
        arn = kinesis.describe_stream_summary(StreamName=stream)["StreamDescriptionSummary"][
            "StreamARN"
        ]
        for consumer in aws.pages(kinesis.list_stream_consumers, "Consumers", StreamARN=arn):
            consumers.append((stream, consumer["ConsumerName"]))
    if not consumers:
        return []
    behind = aws.latest_metrics(
        aws.client(url, "cloudwatch", timeout),
        "AWS/Kinesis",
        [
            (
                aws.metric_id("behind", i),
                "SubscribeToShardEvent.MillisBehindLatest",
                {"StreamName": stream, "ConsumerName": name},
                "Maximum",
            )
            for i, (stream, name) in enumerate(consumers)
        ],
        dt.datetime.now(dt.UTC),
    )
    now = time.time()
    readings = []
    for i, (stream, name) in enumerate(consumers):
        millis = behind.get(aws.metric_id("behind", i))
        if millis is None:
            continue
        readings.append(
            Reading(
                system=SYSTEM,
                channel=stream,
                group=name,
                oldest_at=now - millis / 1000 if millis else None,
                lag=0 if not millis else None,
                time=now,
                details={"millis_behind_latest": millis, "enhanced_fan_out": True},
            )
        )
    return readings


poll = aws.poller(read)
