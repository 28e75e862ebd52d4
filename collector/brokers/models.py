"""Consumer lag storage: a bounded time series of samples and the current
state per consumer group.

Every source (OTLP broker metrics, Prometheus scrapes, direct pollers) ends
up as `LagSample` rows, one per (project, system, channel, group, partition)
and poll. `GroupState` is the evaluated present (lag, time lag, Burrow
status with its reason, one entry per partition) that /api/lag, the lag page
and the alert rules read without scanning history. `BrokerState` remembers
whether each configured broker answered its last poll, so an unreachable
broker is shown as such instead of silently looking idle.
"""

from django.db import models

# Ways a time lag was obtained; the API and page say which.
EXACT = "exact"  # the broker told us when the oldest waiting message was written
INTERPOLATED = "interpolated"  # kafka-lag-exporter: history of (end offset, time)
DRAIN_ESTIMATE = "drain_estimate"  # backlog / consume rate: time until drained
TIME_METHODS = (EXACT, INTERPOLATED, DRAIN_ESTIMATE)


class LagSample(models.Model):
    """One observation of one partition (or queue / stream / consumer) of one group."""

    id = models.BigAutoField(primary_key=True)
    project_id = models.IntegerField()
    time = models.DateTimeField()
    system = models.TextField()
    # The space channel names live in: a RabbitMQ vhost, a NATS account
    # ('' where the broker has none, or for NATS' default account).
    namespace = models.TextField(default="", db_default="")
    channel = models.TextField()
    consumer_group = models.TextField()
    # '' for brokers without partitions (a RabbitMQ queue, a JetStream consumer).
    partition = models.TextField(default="")
    # End offset (Kafka log end, JetStream last sequence, Redis entries added,
    # RabbitMQ acks + depth) and committed offset (the consumer's position).
    end_offset = models.BigIntegerField(null=True)
    committed_offset = models.BigIntegerField(null=True)
    lag = models.BigIntegerField(null=True)
    lag_seconds = models.FloatField(null=True)
    lag_seconds_method = models.TextField(default="")
    # True when the time lag is extrapolated past the history or a drain estimate.
    estimated = models.BooleanField(default=False)
    consume_rate = models.FloatField(null=True)
    # When the consumer last did something (delivery, fetch, ack), if the broker says.
    active_at = models.DateTimeField(null=True)
    source = models.TextField(default="")

    class Meta:
        indexes = [
            # "History of this group" for charts.
            models.Index(
                fields=["project_id", "system", "channel", "consumer_group", "namespace", "time"],
                name="brokers_sample_group_ns_time",
            ),
            # "The latest samples of this partition": every store reads them
            # (ORDER BY time DESC LIMIT n per partition) for time lag and status.
            models.Index(
                fields=[
                    "project_id",
                    "system",
                    "channel",
                    "consumer_group",
                    "namespace",
                    "partition",
                    "-time",
                ],
                name="brokers_sample_partition_ns",
            ),
            # Retention deletes by time alone.
            models.Index(fields=["time"], name="brokers_sample_time"),
        ]


class GroupState(models.Model):
    """The evaluated present of one consumer group on one channel."""

    project_id = models.IntegerField()
    system = models.TextField()
    namespace = models.TextField(default="", db_default="")  # as LagSample.namespace
    channel = models.TextField()
    consumer_group = models.TextField()
    lag = models.BigIntegerField(null=True)
    lag_seconds = models.FloatField(null=True)
    lag_seconds_method = models.TextField(default="")
    estimated = models.BooleanField(default=False)
    consume_rate = models.FloatField(null=True)  # messages/s, all partitions
    status = models.TextField(default="ok")
    reason = models.TextField(default="")
    partitions = models.JSONField(default=list)
    updated_at = models.DateTimeField()  # the time of the newest figures
    source = models.TextField(default="")
    # When the broker last reported the group itself; figures after that are
    # its last committed offsets held against the current end offsets (a
    # Kafka group without members, which kafka_exporter no longer lists).
    reported_at = models.DateTimeField(null=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["project_id", "system", "namespace", "channel", "consumer_group"],
                name="brokers_groupstate_ns_key",
            )
        ]


class BrokerState(models.Model):
    """Whether a configured broker answered its last poll, and since when it does not."""

    project_id = models.IntegerField()
    source = models.TextField()  # the broker URL without credentials
    system = models.TextField()
    error = models.TextField(default="")
    error_since = models.DateTimeField(null=True)
    last_ok_at = models.DateTimeField(null=True)
    updated_at = models.DateTimeField()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["project_id", "source"], name="brokers_brokerstate_key")
        ]


class TopologyEdge(models.Model):
    """A route the system itself declares: an SNS subscription, an EventBridge
    rule's target, a Lambda event source mapping, a queue's dead-letter queue.

    Pollers replace the edges of their source on every answer, so a deleted
    subscription or rule disappears with the next poll. The flow graph shows
    them next to the edges measured from spans, with no traffic until spans
    or events say otherwise. Node ids are those of the flow graph
    (`channel:<system>:<name>`, `service:<name>`).
    """

    project_id = models.IntegerField()
    source = models.TextField()  # the broker URL without credentials that declared it
    from_node = models.TextField()
    to_node = models.TextField()
    # publish (a channel feeding another), consume (a function or endpoint
    # reading a channel), dead_letter (where a channel's failures go)
    kind = models.TextField()
    consumer_group = models.TextField(default="")
    # What the system says about the route: protocol, batch size, state,
    # filter, retry policy, failure counts...
    details = models.JSONField(default=dict)
    updated_at = models.DateTimeField()

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["project_id", "source", "from_node", "to_node", "kind", "consumer_group"],
                name="brokers_topologyedge_key",
            )
        ]
        indexes = [models.Index(fields=["project_id", "from_node"], name="brokers_topology_from")]
