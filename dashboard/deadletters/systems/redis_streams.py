"""Redis Streams dead letters: streams named for them (`orders:dlq`, `orders.dead-letter`).

Entries are read with XRANGE, which touches no consumer group. A field
`payload` (or `data`, `body`, `value`, `message`) is the payload; the other
fields are its headers. The original stream is named by a field
(`original-stream`, `eventscope-original-channel`, …) or else by the dead-letter
stream's name without its suffix.

Move: one Lua script deletes the entry from the dead-letter stream and adds
it to the destination, atomically; an entry already gone adds nothing, so a
retried move cannot send it twice. Both keys must live on one server (on a
cluster: give them the same hash tag).
"""

import datetime as dt
import time

import redis

from dashboard.deadletters.systems import (
    ERROR_HEADERS,
    EVENT_ID_HEADERS,
    ORIGIN_HEADERS,
    DeadLetterQueue,
    Hooks,
    Message,
    Planned,
    header,
    looks_like_dead_letters,
    origin_of_name,
    shown_headers,
    shown_payload,
)

SYSTEM = "redis"
SCAN_COUNT = 1000
BATCH = 500
PAYLOAD_FIELDS = ("payload", "data", "body", "value", "message")
EXACTLY_ONCE = (
    "Each entry moves in one Lua script (XDEL from the dead-letter stream, XADD to the "
    "destination): both happen or neither, so none is lost or sent twice."
)
PEEK_SIDE_EFFECT = ""
# KEYS[1] dead-letter stream, KEYS[2] destination; ARGV[1] entry id, then field, value, …
MOVE = """
if redis.call('XDEL', KEYS[1], ARGV[1]) == 1 then
  return redis.call('XADD', KEYS[2], '*', unpack(ARGV, 2))
end
return false
"""


def _client(broker):
    from django.conf import settings

    timeout = settings.BROKER_TIMEOUT_SECONDS
    return redis.Redis.from_url(
        broker.url, socket_timeout=timeout, socket_connect_timeout=timeout, decode_responses=False
    )


def _text(value) -> str:
    return value.decode("utf-8", errors="replace") if isinstance(value, bytes) else str(value)


def id_time(entry_id: str) -> dt.datetime | None:
    ms = entry_id.split("-", 1)[0]
    return dt.datetime.fromtimestamp(int(ms) / 1000, dt.UTC) if ms.isdigit() else None


def discover(broker) -> list[DeadLetterQueue]:
    client = _client(broker)
    try:
        found = []
        for raw in client.scan_iter(count=SCAN_COUNT, _type="stream"):
            name = _text(raw)
            if not looks_like_dead_letters(name):
                continue
            depth = client.xlen(raw)
            first = client.xrange(raw, count=1)
            oldest = id_time(_text(first[0][0])) if first else None
            origin = origin_of_name(name)
            source = None
            if first:
                source = to_message(name, *first[0]).original_channel
            elif origin and client.exists(origin):
                source = origin
            found.append(
                DeadLetterQueue(
                    system=SYSTEM,
                    name=name,
                    broker=broker.source,
                    source_channel=source,
                    depth=depth,
                    oldest_age_seconds=(
                        max(0.0, time.time() - oldest.timestamp()) if oldest else None
                    ),
                    why="named like a dead-letter stream",
                )
            )
        return sorted(found, key=lambda q: q.name)
    finally:
        client.close()


def to_message(name: str, entry_id, fields: dict) -> Message:
    fields = {_text(k): v for k, v in fields.items()}
    payload_key = next((k for k in PAYLOAD_FIELDS if k in fields), None)
    headers = {k: _text(v) for k, v in fields.items() if k != payload_key}
    entry = _text(entry_id)
    return Message(
        id=entry,
        headers=shown_headers(headers),
        payload=shown_payload(fields.get(payload_key)) if payload_key else "",
        error=header(headers, ERROR_HEADERS),
        original_channel=header(headers, ORIGIN_HEADERS) or origin_of_name(name),
        traceparent=header(headers, ("traceparent",)),
        event_id=header(headers, EVENT_ID_HEADERS),
        time=id_time(entry),
    )


def peek(broker, name: str, namespace: str = "", limit: int = 50, ids=None) -> list[Message]:
    client = _client(broker)
    try:
        found, start = [], "-"
        while len(found) < limit:
            entries = client.xrange(name, min=start, max="+", count=min(BATCH, limit))
            if not entries:
                break
            for entry_id, fields in entries:
                message = to_message(name, entry_id, fields)
                if ids is None or message.id in ids:
                    found.append(message)
            start = f"({_text(entries[-1][0])}"
            if ids is None and len(found) >= limit:
                break
        return found[:limit]
    finally:
        client.close()


class Mover:
    exactly_once = EXACTLY_ONCE

    def __init__(self, broker, name: str, namespace: str = ""):
        self.broker, self.name = broker, name
        self.client = _client(broker)
        self.script = self.client.register_script(MOVE)

    def close(self):
        self.client.close()

    def idle(self, seconds: float) -> None:
        time.sleep(seconds)

    def plan(self, selection, limit):
        return peek(self.broker, self.name, "", limit, ids=selection)

    def check_destination(self, destination: str) -> str | None:
        kind = _text(self.client.type(destination))
        if kind not in ("stream", "none"):
            return f"{destination!r} is a Redis {kind}, not a stream"
        return None

    def move(self, pending: list[Planned], hooks: Hooks) -> None:
        for planned in pending:
            entries = self.client.xrange(self.name, min=planned.message_id, max=planned.message_id)
            if not entries:
                continue  # gone: moved before a restart, or consumed
            if not hooks.begin(planned):
                return
            fields = {_text(k): v for k, v in entries[0][1].items()}
            fields = hooks.outgoing_headers(fields)
            flat = [part for pair in fields.items() for part in pair]
            self.script(keys=[self.name, planned.destination], args=[planned.message_id, *flat])
            hooks.done(planned)


def open_mover(broker, name: str, namespace: str = "") -> Mover:
    return Mover(broker, name, namespace)
