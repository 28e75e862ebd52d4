"""What every system's dead-letter module shares, and the registry of them.

A system module (`rabbitmq`, `redis_streams`, `nats`, `sqs`) offers

    discover(broker) -> list[DeadLetterQueue]
    peek(broker, name, namespace, limit, ids=None) -> list[Message]   # never consumes
    open_mover(broker, name, namespace) -> Mover                      # for a redrive job

and its `EXACTLY_ONCE` says, in a sentence the page shows, how a message is
kept from being lost or moved twice when the worker dies mid-move.

A `Mover` walks the dead-letter queue its own way (a queue has no random
access, a stream has) and for each message it moves calls `hooks.begin()`
first (the job's pace, cancel and bookkeeping) and `hooks.done()` after the
broker confirmed the move.
"""

import datetime as dt
import hashlib
import json
import re
import secrets
from dataclasses import dataclass, field

from django.conf import settings

from collector.brokers.poller import Broker, parse_broker
from collector.redact import redact
from collector.traceparent import parse_traceparent

# The header every redriven message carries: how many times it has been redriven.
REDRIVE_COUNT = "eventscope-redrive-count"
# Which redrive (job id) moved it last.
REDRIVE_ID = "eventscope-redrive-id"
# Payloads shown on the page are cut here; the move always sends the whole message.
PAYLOAD_SHOWN = 64 * 1024
# Names people give dead-letter queues and streams: `orders.dlq`, `orders-dead-letter`,
# `ORDERS_DLQ`, `dlq.orders`, `orders.DLT` (Spring's dead-letter topics).
_DLQ_NAME = re.compile(
    r"(?:^|[._:\-/])(?:dlq|dlt|dead[._\-]?letters?|deadletters?|dead)$"
    r"|^(?:dlq|dead[._\-]?letters?)[._:\-/]",
    re.IGNORECASE,
)
_SUFFIX = re.compile(
    r"[._:\-/](?:dlq|dlt|dead[._\-]?letters?|deadletters?|dead)$|^(?:dlq|dead[._\-]?letters?)[._:\-/]",
    re.IGNORECASE,
)
# Header names that say where a message was headed or why it failed, in the
# order they are believed; compared case-insensitively.
ORIGIN_HEADERS = (
    "eventscope-original-channel",
    "x-original-queue",
    "x-original-stream",
    "x-original-subject",
    "original-channel",
    "original-queue",
    "original-stream",
    "original-subject",
    "nats-original-subject",
    "kafka_dlt-original-topic",
    "kafka_original-topic",
    "__connect.errors.topic",
)
ERROR_HEADERS = (
    "error",
    "x-error",
    "x-exception-message",
    "exception",
    "kafka_dlt-exception-message",
    "kafka_exception-message",
    "__connect.errors.exception.message",
    "x-first-death-reason",
)
EVENT_ID_HEADERS = ("ce-id", "ce_id", "cloudevents:id", "cloudevents_id", "event-id", "event_id")


def looks_like_dead_letters(name: str) -> bool:
    """Does the name say "dead letters" (`orders.dlq`, `dlq.orders`, `ORDERS_DLQ`, `x.DLT`)?"""
    return bool(_DLQ_NAME.search(name)) or name.lower().endswith(("_dlq", "_dead_letter"))


def origin_of_name(name: str) -> str | None:
    """`orders` from `orders.dlq`, `dlq.orders`, `orders_DLQ`; None when the name says nothing."""
    stripped = _SUFFIX.sub("", name)
    if stripped == name and name.lower().endswith(("_dlq", "_dead_letter")):
        stripped = name.rsplit("_", 1 if name.lower().endswith("_dlq") else 2)[0]
    return stripped if stripped and stripped != name else None


@dataclass(frozen=True)
class DeadLetterQueue:
    """One dead-letter queue or stream as GET /api/dead-letters shows it."""

    system: str
    name: str
    broker: str  # the broker's URL without credentials
    source_channel: str | None = None
    depth: int | None = None
    oldest_age_seconds: float | None = None
    namespace: str = ""  # RabbitMQ's vhost
    why: str = ""  # how it was recognised

    def json(self) -> dict:
        data = {
            "system": self.system,
            "name": self.name,
            "source_channel": self.source_channel,
            "depth": self.depth,
            "oldest_age_seconds": self.oldest_age_seconds,
            "broker": self.broker,
            "why": self.why,
        }
        if self.system == "rabbitmq":
            data["vhost"] = self.namespace
        return data


@dataclass
class Message:
    """One dead letter as a peek shows it (and a redrive plans it)."""

    id: str
    headers: dict
    payload: str
    error: str | None = None
    original_channel: str | None = None
    traceparent: str | None = None
    event_id: str | None = None
    time: dt.datetime | None = None
    redelivered: bool = False
    raw: object = field(default=None, repr=False, compare=False)

    def json(self) -> dict:
        return {
            "id": self.id,
            "headers": self.headers,
            "payload": self.payload,
            "error": self.error,
            "original_channel": self.original_channel,
            "traceparent": self.traceparent,
            "event_id": self.event_id,
            "time": self.time.isoformat().replace("+00:00", "Z") if self.time else None,
        }


@dataclass(frozen=True)
class Planned:
    """One message a redrive job moves: the item's row id, the message and where to."""

    item_id: int
    message_id: str
    destination: str


class Hooks:
    """What a Mover calls around each move (implemented by the job runner)."""

    def begin(self, planned: Planned) -> bool:  # pragma: no cover - interface
        """Wait for the job's pace and record the move as started; False: stop now."""
        raise NotImplementedError

    def done(self, planned: Planned, error: str = "", note: str = "") -> None:  # pragma: no cover
        """Record that the broker confirmed the move (or why it failed)."""
        raise NotImplementedError

    def outgoing_headers(self, headers: dict) -> dict:  # pragma: no cover
        raise NotImplementedError


class MoveStopped(Exception):
    """The destination refused a message after its dead letter was removed; the job stops."""


def plain(value):
    """Broker header values (bytes, datetimes, decimals, nested tables) as JSON values."""
    if isinstance(value, bytes):
        try:
            return value.decode()
        except UnicodeDecodeError:
            return value.hex()
    if isinstance(value, dt.datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=dt.UTC)
        return value.isoformat().replace("+00:00", "Z")
    if isinstance(value, dict):
        return {str(plain(k)): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return str(value)


def shown_payload(body: bytes | str | None) -> str:
    """The payload as the page shows it: JSON with secrets redacted, else text, cut."""
    if body is None:
        return ""
    if isinstance(body, bytes):
        text = body.decode("utf-8", errors="replace")
    else:
        text = body
    try:
        value = json.loads(text)
    except ValueError:
        return text[:PAYLOAD_SHOWN]
    return json.dumps(redact(value), ensure_ascii=False)[:PAYLOAD_SHOWN]


def shown_headers(headers: dict) -> dict:
    return redact(plain(headers or {}))


def header(headers: dict, names) -> str | None:
    """The first of `names` present in `headers` (case-insensitive), as text."""
    lowered = {str(k).lower(): v for k, v in (headers or {}).items()}
    for name in names:
        value = lowered.get(name)
        if value not in (None, "", b""):
            value = plain(value)
            return value if isinstance(value, str) else json.dumps(value)
    return None


def digest(*parts) -> str:
    """A stable id for a message that has none of its own."""
    h = hashlib.sha256()
    for part in parts:
        h.update(
            part if isinstance(part, bytes) else json.dumps(plain(part), sort_keys=True).encode()
        )
        h.update(b"\x00")
    return "sha-" + h.hexdigest()[:24]


def continue_trace(traceparent: str | None) -> str | None:
    """The same trace with a new span id: the redrive becomes the message's next hop."""
    parsed = parse_traceparent(traceparent)
    if parsed is None:
        return None
    trace_id, _, flags = parsed
    return f"00-{trace_id.hex()}-{secrets.token_hex(8)}-{flags:02x}"


def redrive_count(headers: dict) -> int:
    value = header(headers, (REDRIVE_COUNT,))
    try:
        return int(value) if value is not None else 0
    except ValueError:
        return 0


def brokers_of(project_slug: str, system: str | None = None) -> list[Broker]:
    """The configured brokers whose figures and dead letters belong to the project."""
    from dashboard.deadletters.systems import registry

    found = []
    for url in settings.BROKERS:
        broker = parse_broker(url)
        if broker.project != project_slug or broker.kind not in registry.BY_KIND:
            continue
        if system is None or registry.BY_KIND[broker.kind] == system:
            found.append(broker)
    return found
