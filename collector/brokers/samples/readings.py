"""What a source hands to `store()`: readings of partitions, and the report of one poll."""

from dataclasses import dataclass, field


@dataclass(slots=True)
class Reading:
    """What a broker says about one partition of one consumer group, now.

    Offsets may be absent (RabbitMQ has none of its own); `oldest_at` is the
    write time of the oldest message still waiting, when the broker gives it
    (then the time lag is exact); `depth_based` asks for a drain estimate
    rather than interpolation; `active_at` is when the consumer last acted;
    `namespace` is the space the channel name lives in (a RabbitMQ vhost, a
    NATS account; '' where there is none). Times are Unix seconds.
    """

    system: str
    channel: str
    group: str
    partition: str = ""
    end_offset: int | None = None
    committed_offset: int | None = None
    lag: int | None = None
    oldest_at: float | None = None
    active_at: float | None = None
    time: float | None = None
    depth_based: bool = False
    # The committed offset is a statistics counter (RabbitMQ acks) that
    # restarts with the broker: going down means a reset, not a rewind.
    counter: bool = False
    namespace: str = ""
    # Not reported by the broker this time but held at its last committed
    # offset against the partition's current end (see `store`).
    carried: bool = False
    # What else the system says about this partition or queue, shown with it
    # on /api/lag (visible, in flight and delayed messages, the dead-letter
    # queue and its depth...); plain JSON values.
    details: dict | None = None

    @property
    def key(self) -> tuple[str, str, str, str, str]:
        """(system, namespace, channel, group, partition); a group is key[:4]."""
        return (self.system, self.namespace, self.channel, self.group, self.partition)


@dataclass(slots=True)
class Report:
    """What one poll of a broker said: its readings, the end offsets it gave
    for partitions by (system, namespace, channel, partition), grouped or not,
    and the routes it declares (`topology.Route`; None when the system has no
    routes of its own to tell, so stored ones are left alone)."""

    readings: list[Reading]
    ends: dict[tuple[str, str, str, str], int] = field(default_factory=dict)
    routes: list | None = None
