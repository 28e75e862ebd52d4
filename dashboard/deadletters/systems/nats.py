"""NATS JetStream dead letters: streams named for them (`ORDERS_DLQ`, `orders-dlq`),
into which applications republish what they gave up on (JetStream itself has
no dead-letter object; see PROTOCOLS2 §3).

Messages are read by sequence with the stream's MSG.GET API, which no
consumer sees. The original subject comes from a header
(`Nats-Original-Subject`, `original-subject`, …) or from the dead-letter
subject without its `dlq.` prefix or `.dlq` suffix.

Move: publish to the original subject with a `Nats-Msg-Id` made of the
dead-letter stream, sequence and time, then delete the message from the
dead-letter stream. A worker killed between the two publishes again on
resume with the same id, which JetStream drops as a duplicate within the
destination stream's duplicate window (2 minutes by default): exactly once
as long as the worker is back within that window.
"""

import asyncio
import time

import nats
from django.conf import settings
from nats.js.errors import NotFoundError

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

SYSTEM = "nats"
EXACTLY_ONCE = (
    "Each message is published with a Nats-Msg-Id derived from it, then deleted from the "
    "dead-letter stream; a move retried after a crash is dropped by JetStream as a duplicate "
    "within the destination stream's duplicate window (2 minutes unless configured)."
)
PEEK_SIDE_EFFECT = ""
LIST_PAGE = 256


class Session:
    """A NATS connection driven from synchronous code, on a loop of its own."""

    def __init__(self, broker):
        self.loop = asyncio.new_event_loop()
        timeout = settings.BROKER_TIMEOUT_SECONDS
        self.nc = self.run(
            nats.connect(
                broker.url,
                connect_timeout=timeout,
                allow_reconnect=False,
                max_reconnect_attempts=0,
                name="eventscope-dead-letters",
            )
        )
        self.js = self.nc.jetstream(timeout=timeout)
        self.jsm = self.nc.jsm(timeout=timeout)

    def run(self, coroutine):
        return self.loop.run_until_complete(coroutine)

    def close(self):
        try:
            self.run(self.nc.close())
        finally:
            self.loop.close()

    def streams(self) -> list:
        found, offset = [], 0
        while True:
            page = self.run(self.jsm.streams_info(offset=offset))
            found.extend(page)
            if len(page) < LIST_PAGE:
                return found
            offset += len(page)

    def messages(self, stream: str, limit: int, ids=None):
        """Up to `limit` stored messages from the first, deleted ones skipped."""
        info = self.run(self.jsm.stream_info(stream))
        seq, last = info.state.first_seq, info.state.last_seq
        found = []
        while seq and seq <= last and len(found) < limit:
            try:
                raw = self.run(self.jsm.get_msg(stream, seq=seq, subject=">", next=True))
            except NotFoundError:
                break
            seq = raw.seq + 1
            if ids is None or str(raw.seq) in ids:
                found.append(raw)
        return found

    def message(self, stream: str, seq: int):
        try:
            return self.run(self.jsm.get_msg(stream, seq=seq))
        except NotFoundError:
            return None


def to_message(stream: str, raw) -> Message:
    headers = dict(raw.headers or {})
    return Message(
        id=str(raw.seq),
        headers=shown_headers(headers),
        payload=shown_payload(raw.data),
        error=header(headers, ERROR_HEADERS),
        original_channel=header(headers, ORIGIN_HEADERS) or origin_of_name(raw.subject),
        traceparent=header(headers, ("traceparent",)),
        event_id=header(headers, (*EVENT_ID_HEADERS, "nats-msg-id")),
        time=raw.time,
    )


def discover(broker) -> list[DeadLetterQueue]:
    session = Session(broker)
    try:
        found = []
        for stream in session.streams():
            name = stream.config.name
            if not looks_like_dead_letters(name):
                continue
            first = session.messages(name, 1) if stream.state.messages else []
            oldest = first[0].time if first else None
            found.append(
                DeadLetterQueue(
                    system=SYSTEM,
                    name=name,
                    broker=broker.source,
                    source_channel=to_message(name, first[0]).original_channel if first else None,
                    depth=stream.state.messages,
                    oldest_age_seconds=max(0.0, time.time() - oldest.timestamp())
                    if oldest
                    else None,
                    why="named like a dead-letter stream",
                )
            )
        return sorted(found, key=lambda q: q.name)
    finally:
        session.close()


def peek(broker, name: str, namespace: str = "", limit: int = 50, ids=None) -> list[Message]:
    session = Session(broker)
    try:
        return [to_message(name, raw) for raw in session.messages(name, limit, ids)]
    finally:
        session.close()


def msg_id(stream: str, raw) -> str:
    """The Nats-Msg-Id of a redriven message: the same on every try, unique to this dead letter."""
    stamp = raw.time.timestamp() if raw.time else 0
    return f"eventscope-redrive:{stream}:{raw.seq}:{stamp:.6f}"


class Mover:
    exactly_once = EXACTLY_ONCE

    def __init__(self, broker, name: str, namespace: str = ""):
        self.name = name
        self.session = Session(broker)

    def close(self):
        self.session.close()

    def idle(self, seconds: float) -> None:
        time.sleep(seconds)

    def plan(self, selection, limit):
        return [
            to_message(self.name, r) for r in self.session.messages(self.name, limit, selection)
        ]

    def check_destination(self, destination: str) -> str | None:
        try:
            self.session.run(self.session.jsm.find_stream_name_by_subject(destination))
        except NotFoundError:
            return f"no JetStream stream takes subject {destination!r}"
        return None

    def move(self, pending: list[Planned], hooks: Hooks) -> None:
        for planned in pending:
            raw = self.session.message(self.name, int(planned.message_id))
            if raw is None:
                continue  # gone: moved before a restart, or deleted
            if not hooks.begin(planned):
                return
            headers = hooks.outgoing_headers(dict(raw.headers or {}))
            headers["Nats-Msg-Id"] = msg_id(self.name, raw)
            self.session.run(
                self.session.js.publish(planned.destination, raw.data or b"", headers=headers)
            )
            self.session.run(self.session.jsm.delete_msg(self.name, raw.seq))
            hooks.done(planned)


def open_mover(broker, name: str, namespace: str = "") -> Mover:
    return Mover(broker, name, namespace)
