"""The rules that turn one event's stages into findings: pure functions.

An event is known by one key (`keys_of`): a CloudEvent by its source and id;
a span-derived publish by its own span context, and a consume stage by the
producer contexts it joins to (span links, a remote parent: the same joins
as the end-to-end latency), else by its messaging message id on its channel.
A consume stage known only by its message id (a consumer instrumented
without propagation) joins the span-derived publish of the same message id
(`by_message_id`): on the same channel, else on the one other channel all
such publishes went to (a RabbitMQ exchange and the queue bound to it).
A retried export is stored once (the writer's dedupe key is the span), so
every stage here is a distinct attempt.

Per consumer group (its `consumer_group`, else its service) of an event:

- duplicate: processed successfully two or more times. A failure followed
  by a success is a redelivery, not a duplicate.
- poison: failed, retried or dead-lettered at least N times
  (EVENTSCOPE_DELIVERY_POISON_ATTEMPTS), with the time between its first and
  last attempt and whether it ended dead-lettered.
- missing: a group expected on the channel the event was published to has
  not handled it (processed, failed or dead-lettered) within its deadline;
  late: it did, after the deadline.
- out of order is judged across events (engine.py, from `sequenced`).
"""

import datetime as dt
import hashlib
from dataclasses import dataclass, field

HANDLED = frozenset(("processed", "failed", "deadlettered"))
FAILED = frozenset(("failed", "retried", "deadlettered"))
ORIGIN_CLOUDEVENT = 2
EXAMPLES = 5

# Ordering keys named by the messaging conventions: (label, attribute names).
KAFKA_KEY = ("messaging.kafka.message.key", "messaging.kafka.message_key")
PARTITION = (
    "messaging.destination.partition.id",
    "messaging.kafka.destination.partition",
    "messaging.kafka.partition",
)
SQS_GROUP = ("messaging.aws.sqs.message_group_id", "aws.sqs.message_group_id")
ORDERING_ATTRIBUTES = KAFKA_KEY + PARTITION + SQS_GROUP


def _hash(*parts) -> bytes:
    raw = b"\x00".join(p if isinstance(p, bytes) else str(p or "").encode() for p in parts)
    return hashlib.blake2b(raw, digest_size=16).digest()


@dataclass(slots=True)
class Stage:
    project_id: int
    time: dt.datetime
    stage: str
    role: str
    system: str
    channel: str
    service: str
    consumer_group: str
    trace_id: bytes | None
    span_id: bytes | None
    parent_span_id: bytes | None
    linked: list
    event_id: str | None
    event_source: str | None
    origin: int

    @property
    def group(self) -> str:
        return self.consumer_group or self.service

    def example(self) -> dict:
        return {
            "time": self.time.isoformat(),
            "stage": self.stage,
            "service": self.service,
            "trace_id": self.trace_id.hex() if self.trace_id else None,
            "span_id": self.span_id.hex() if self.span_id else None,
        }


def context_key(trace_id: bytes, span_id: bytes) -> bytes:
    return _hash(b"c", trace_id, span_id)


def keys_of(s: Stage) -> list[bytes]:
    """The keys of the events a stage belongs to (several for a batch)."""
    if s.origin == ORIGIN_CLOUDEVENT and s.event_id:
        return [_hash(b"ce", s.event_source, s.event_id)]
    if s.role == "producer":
        if s.stage == "published" and s.trace_id and s.span_id:
            return [context_key(s.trace_id, s.span_id)]
        return []
    linked = _joins(s)
    if linked:
        return [context_key(t, sp) for t, sp in linked]
    if s.event_id:
        return [message_key(s)]
    return []


def _joins(s: Stage) -> list:
    """The producer contexts a consume stage joins to."""
    linked = s.linked
    if len(linked) > 1 and s.parent_span_id:
        # A process span under a batch receive links to its message's
        # producer; its parent is the receive, not another event.
        linked = [c for c in linked if c != (s.trace_id, s.parent_span_id)]
    return linked


def message_key(s: Stage) -> bytes:
    return _hash(b"m", s.system, s.channel, s.event_id)


def is_span_publish(s: Stage) -> bool:
    """A publish known by its span context (keyed by it), not a CloudEvent."""
    return (
        s.role == "producer"
        and s.stage == "published"
        and s.origin != ORIGIN_CLOUDEVENT
        and bool(s.trace_id and s.span_id)
    )


def by_message_id_only(s: Stage) -> bool:
    """A consume stage that carries a message id and no producer context."""
    return (
        s.role == "consumer"
        and bool(s.event_id)
        and s.origin != ORIGIN_CLOUDEVENT
        and not _joins(s)
    )


def by_message_id(stages) -> dict[bytes, bytes]:
    """{message-id key of the consume stages known only by their message id:
    the key of the publish they join}, from these stages (which hold every
    publish of those message ids).

    The publish is a span-derived one of the same system and message id: on
    the consumer's channel when there is one, else on the one other channel
    that all of them went to (a publish to an exchange, consumed from a queue
    bound to it); the earliest when the producer published the id more than
    once. Otherwise (no publish, or publishes to several other channels) the
    consumer stays known by its message id alone."""
    publishes: dict[tuple, list] = {}
    for s in stages:
        if is_span_publish(s) and s.event_id:
            publishes.setdefault((s.system, s.event_id), []).append(s)
    out: dict[bytes, bytes] = {}
    for s in stages:
        if not by_message_id_only(s):
            continue
        key = message_key(s)
        if key in out:
            continue
        candidates = publishes.get((s.system, s.event_id))
        if not candidates:
            continue
        same = [p for p in candidates if p.channel == s.channel]
        if not same and len({p.channel for p in candidates}) > 1:
            continue
        first = min(same or candidates, key=lambda p: (p.time, p.trace_id, p.span_id))
        out[key] = context_key(first.trace_id, first.span_id)
    return out


@dataclass
class GroupView:
    """One consumer group's stages of one event."""

    system: str
    channel: str
    group: str
    service: str
    stages: list = field(default_factory=list)

    @property
    def successes(self) -> list:
        return [s for s in self.stages if s.stage == "processed"]

    @property
    def failures(self) -> list:
        return [s for s in self.stages if s.stage in FAILED]

    @property
    def first_handled(self) -> Stage | None:
        handled = [s for s in self.stages if s.stage in HANDLED]
        return min(handled, key=lambda s: s.time) if handled else None


@dataclass
class Event:
    key: bytes
    stages: list
    # Message-id keys of consume stages that joined this event's publish
    # (findings kept under them before the publish was stored go).
    aliases: list = field(default_factory=list)

    @property
    def publish(self) -> Stage | None:
        publishes = [s for s in self.stages if s.role == "producer" and s.stage == "published"]
        return min(publishes, key=lambda s: s.time) if publishes else None

    def groups(self) -> dict[tuple, GroupView]:
        out: dict[tuple, GroupView] = {}
        for s in sorted(self.stages, key=lambda s: s.time):
            if s.role != "consumer" or not s.channel:
                continue
            ident = (s.system, s.channel, s.group)
            view = out.get(ident)
            if view is None:
                view = out[ident] = GroupView(s.system, s.channel, s.group, s.service)
            view.stages.append(s)
        return out

    def first_seen(self) -> Stage:
        return min(self.stages, key=lambda s: s.time)


def _finding(event: Event, kind: str, view, **extra) -> dict:
    anchor = event.publish or event.first_seen()
    ident = next((s for s in event.stages if s.event_id), None)
    return {
        "kind": kind,
        "system": view.system,
        "channel": view.channel,
        "group": view.group,
        "service": view.service,
        "event_key": event.key,
        "event_time": anchor.time,
        "event_id": ident.event_id if ident else None,
        "event_source": ident.event_source if ident else None,
        "trace_id": anchor.trace_id.hex() if anchor.trace_id else None,
        **extra,
    }


@dataclass(frozen=True)
class Expected:
    system: str
    channel: str
    group: str
    service: str
    deadline: dt.timedelta


def judge(event: Event, expected: list[Expected], now: dt.datetime, poison_attempts: int):
    """Findings (dicts of Finding's fields) of one event, except out of order."""
    found = []
    views = event.groups()
    for view in views.values():
        successes = view.successes
        if len(successes) >= 2:
            found.append(
                _finding(
                    event,
                    "duplicate",
                    view,
                    successes=len(successes),
                    failures=len(view.failures),
                    examples=[s.example() for s in successes[:EXAMPLES]],
                )
            )
        failures = view.failures
        if len(failures) >= poison_attempts:
            attempts = [s for s in view.stages if s.stage in FAILED or s.stage == "processed"]
            found.append(
                _finding(
                    event,
                    "poison",
                    view,
                    successes=len(successes),
                    failures=len(failures),
                    retry_ms=(attempts[-1].time - attempts[0].time).total_seconds() * 1000,
                    deadlettered=any(s.stage == "deadlettered" for s in failures),
                    examples=[s.example() for s in failures[:EXAMPLES]],
                )
            )
    publish = event.publish
    if publish is None:
        return found
    for want in expected:
        view = views.get((want.system, want.channel, want.group))
        first = view.first_handled if view else None
        due = publish.time + want.deadline
        if first is None:
            if now >= due:
                found.append(
                    _finding(
                        event,
                        "missing",
                        view or want,
                        examples=[publish.example()],
                    )
                )
        elif first.time > due:
            found.append(
                _finding(
                    event,
                    "late",
                    view,
                    delay_ms=(first.time - publish.time).total_seconds() * 1000,
                    examples=[publish.example(), first.example()],
                )
            )
    return found


def consumed(event: Event) -> list[tuple]:
    """(system, publish channel, channel, group, service, publish time) of every
    group that handled this event after its publish was seen: what teaches
    the expected groups."""
    publish = event.publish
    if publish is None:
        return []
    return [
        (publish.system, publish.channel, v.channel, v.group, v.service, publish.time)
        for v in event.groups().values()
        if v.first_handled is not None
    ]


def ordering_key(attrs: dict, extensions: dict, attribute: str) -> str:
    """The ordering key of a message from its span attributes or CloudEvents
    extensions: the channel's own attribute when set, else Kafka partition and
    key, an SQS FIFO message group, or CloudEvents `partitionkey`."""
    if attribute:
        for source in (attrs, extensions):
            if source.get(attribute) is not None:
                return f"{attribute}={source[attribute]}"
        return ""
    key = next((attrs[a] for a in KAFKA_KEY if attrs.get(a) is not None), None)
    if key is not None:
        partition = next((attrs[a] for a in PARTITION if attrs.get(a) is not None), None)
        return f"partition {partition} key {key}" if partition is not None else f"key {key}"
    group = next((attrs[a] for a in SQS_GROUP if attrs.get(a) is not None), None)
    if group is not None:
        return f"message group {group}"
    if extensions.get("partitionkey") is not None:
        return f"partitionkey {extensions['partitionkey']}"
    return ""
