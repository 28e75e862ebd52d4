"""Assembling readings from per-partition offset figures, whatever reported them.

Kafka's figures arrive as three separate series (the partition's end offset,
the group's committed offset, and the lag the exporter computed), from the
OTel Collector's kafkametrics receiver and from kafka_exporter alike; both
end up here so the same numbers give the same lag. RabbitMQ queues and
JetStream consumers get their readings built the same way whatever reported
them (management API or OTLP, Prometheus or the JetStream API).
"""

from collector.brokers.samples import Reading

NATS_DEFAULT_ACCOUNT = "$G"


def known(value) -> int | None:
    """Exporters say -1 for "not measured" (no committed offset yet): unknown, not negative."""
    if value is None:
        return None
    value = int(value)
    return value if value >= 0 else None


class KafkaOffsets:
    """Collects Kafka partition figures, then yields one reading per group partition.

    A group with members counts as active at the time of the figures: that
    is what tells a consumer that is connected but not committing (stalled)
    from one that is gone (stopped).
    """

    def __init__(self):
        self.end: dict[tuple[str, str], int | None] = {}
        self.committed: dict[tuple[str, str, str], int | None] = {}
        self.lag: dict[tuple[str, str, str], int | None] = {}
        self.members: dict[str, int] = {}
        self.times: dict[tuple, float] = {}

    def _time(self, key, time):
        if time:
            self.times[key] = max(self.times.get(key, 0.0), time)

    def add_end(self, topic: str, partition: str, value, time: float | None = None):
        self.end[(topic, partition)] = known(value)
        self._time((topic, partition), time)

    def add_committed(self, group: str, topic: str, partition: str, value, time=None):
        self.committed[(group, topic, partition)] = known(value)
        self._time((group, topic, partition), time)

    def add_lag(self, group: str, topic: str, partition: str, value, time=None):
        self.lag[(group, topic, partition)] = known(value)
        self._time((group, topic, partition), time)

    def add_members(self, group: str, value):
        self.members[group] = known(value) or 0

    def ends(self) -> dict[tuple[str, str, str, str], int]:
        """End offsets by (system, namespace, topic, partition), grouped or not.

        kafka_exporter drops a group's series once it has no members, while
        its topics' end offsets keep coming; these let such a group be held
        at its last committed offset (see samples.store).
        """
        return {
            ("kafka", "", topic, partition): end
            for (topic, partition), end in self.end.items()
            if end is not None
        }

    def readings(self) -> list[Reading]:
        readings = []
        for group, topic, partition in sorted(set(self.committed) | set(self.lag)):
            key = (group, topic, partition)
            end = self.end.get((topic, partition))
            committed = self.committed.get(key)
            lag = self.lag.get(key)
            if lag is None and end is not None and committed is not None:
                lag = max(0, end - committed)
            if committed is None:
                # Without a committed offset the exporters' lag is meaningless.
                lag = None
            time = self.times.get(key) or self.times.get((topic, partition))
            readings.append(
                Reading(
                    system="kafka",
                    channel=topic,
                    group=group,
                    partition=partition,
                    end_offset=end,
                    committed_offset=committed,
                    lag=lag,
                    active_at=time if self.members.get(group, 0) > 0 else None,
                    time=time,
                )
            )
        return readings


def rabbitmq_reading(
    vhost: str,
    queue: str,
    ready,
    unacked,
    consumers=None,
    acked=None,
    time: float | None = None,
) -> Reading:
    """A queue as a partition: depth = ready + unacked, position = cumulative acks.

    A queue has no offsets, but its acknowledgement counter only grows while
    consumers make progress, so it stands in for the committed offset (and
    acks + depth for the end offset): stalls and interpolation then work
    as for Kafka. A queue with consumers attached counts as active. The
    channel is the bare queue name, as spans name it; the vhost is kept
    apart, so queue "a/b" in vhost "/" and queue "b" in vhost "a" differ.
    """
    depth = int(ready or 0) + int(unacked or 0)
    committed = int(acked) if acked is not None else None
    return Reading(
        system="rabbitmq",
        namespace=vhost or "/",
        channel=queue,
        group="",
        lag=depth,
        committed_offset=committed,
        end_offset=committed + depth if committed is not None else None,
        active_at=time if consumers and time else None,
        time=time,
        depth_based=True,
        counter=True,
    )


def jetstream_reading(
    stream: str,
    consumer: str,
    num_pending,
    num_ack_pending,
    ack_floor_stream_seq=None,
    active_at: float | None = None,
    oldest_at: float | None = None,
    time: float | None = None,
    account: str = "",
) -> Reading:
    """A JetStream consumer: backlog = not yet delivered + delivered but unacknowledged.

    `account` keeps streams of the same name in different accounts apart;
    the default account ("$G", what a server without accounts uses) is ''.
    """
    lag = int(num_pending or 0) + int(num_ack_pending or 0)
    committed = int(ack_floor_stream_seq) if ack_floor_stream_seq is not None else None
    return Reading(
        system="nats",
        namespace="" if account in ("", NATS_DEFAULT_ACCOUNT) else account,
        channel=stream,
        group=consumer,
        lag=lag,
        committed_offset=committed,
        end_offset=committed + lag if committed is not None else None,
        active_at=active_at,
        oldest_at=oldest_at,
        time=time,
        depth_based=True,
    )
