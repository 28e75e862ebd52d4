"""RabbitMQ dead letters: found through the management API, read and moved over AMQP.

Discovery: a queue holds dead letters when another queue dead-letters into
it (its `x-dead-letter-exchange` argument or `dead-letter-exchange` policy
names an exchange bound to it, or the default exchange with a
`x-dead-letter-routing-key` naming it), or when its name says so
(`orders.dlq`, `orders-dead-letter`).

Peek: `basic.get` without acknowledging, then `basic.nack(requeue=true)`:
the messages go back where they were, but RabbitMQ marks them redelivered
(there is no other way to read a queue without consuming it).

Move: one AMQP transaction per message on one channel: publish to the
destination, acknowledge the dead letter, commit. A worker killed before the
commit leaves both undone (the broker requeues the unacknowledged dead
letter when the connection drops); after it, both are done.
"""

import datetime as dt
from urllib.parse import parse_qsl, urlsplit

import httpx
import pika
from django.conf import settings

from collector.brokers.rabbitmq import api_base
from dashboard.deadletters.systems import (
    ERROR_HEADERS,
    EVENT_ID_HEADERS,
    ORIGIN_HEADERS,
    DeadLetterQueue,
    Hooks,
    Message,
    MoveStopped,
    Planned,
    digest,
    header,
    looks_like_dead_letters,
    origin_of_name,
    shown_headers,
    shown_payload,
)

SYSTEM = "rabbitmq"
PAGE_SIZE = 500
EXACTLY_ONCE = (
    "Each message moves in one AMQP transaction (publish to the destination, acknowledge "
    "the dead letter, commit): a crash before the commit undoes both, so none is lost or "
    "sent twice."
)
PEEK_SIDE_EFFECT = (
    "RabbitMQ cannot read a queue without taking messages: a peek gets them and puts them "
    "straight back, which marks them redelivered."
)
# Headers RabbitMQ writes on dead-lettering; republished, they would confuse its
# own counting (3.13 stopped counting, 4.x ignores them), so a redrive drops them.
DEATH_HEADERS = (
    "x-death",
    "x-first-death-queue",
    "x-first-death-reason",
    "x-first-death-exchange",
    "x-last-death-queue",
    "x-last-death-reason",
    "x-last-death-exchange",
)


def amqp_parameters(url: str, vhost: str) -> pika.ConnectionParameters:
    """AMQP parameters for the broker whose management API is at `url`.

    Same host and credentials; port 5672 (5671 with TLS for rabbitmq+https)
    unless the URL says `?amqp_port=`.
    """
    parts = urlsplit(url.removeprefix("rabbitmq+"))
    options = dict(parse_qsl(parts.query))
    tls = parts.scheme == "https"
    port = int(options.get("amqp_port") or (5671 if tls else 5672))
    ssl_options = None
    if tls:
        import ssl

        ssl_options = pika.SSLOptions(ssl.create_default_context(), parts.hostname)
    return pika.ConnectionParameters(
        host=parts.hostname or "127.0.0.1",
        port=port,
        virtual_host=vhost,
        credentials=pika.PlainCredentials(parts.username or "guest", parts.password or "guest"),
        ssl_options=ssl_options,
        connection_attempts=1,
        socket_timeout=settings.BROKER_TIMEOUT_SECONDS,
        blocked_connection_timeout=settings.BROKER_TIMEOUT_SECONDS,
        client_properties={"connection_name": "eventscope-dead-letters"},
    )


def _get(client: httpx.Client, path: str, params=None):
    response = client.get(path, params=params)
    if response.status_code == 401:
        raise ConnectionError("management API refused the credentials (401)")
    response.raise_for_status()
    return response.json()


def _queues_and_bindings(url: str) -> tuple[list[dict], list[dict]]:
    base, auth = api_base(url)
    with httpx.Client(base_url=base, auth=auth, timeout=settings.BROKER_TIMEOUT_SECONDS) as client:
        queues, page = [], 1
        while True:
            body = _get(
                client,
                "/api/queues",
                {"pagination": "true", "page": page, "page_size": PAGE_SIZE},
            )
            queues.extend(body.get("items", []))
            if page >= int(body.get("page_count") or 1):
                break
            page += 1
        bindings = _get(client, "/api/bindings")
    return queues, bindings


def _dead_letter_exchange(queue: dict) -> tuple[str | None, str | None]:
    """(exchange, routing key) a queue dead-letters to; an argument overrides a policy."""
    arguments = queue.get("arguments") or {}
    policy = queue.get("effective_policy_definition") or {}
    if not isinstance(policy, dict):
        policy = {}
    exchange = arguments.get("x-dead-letter-exchange", policy.get("dead-letter-exchange"))
    key = arguments.get("x-dead-letter-routing-key", policy.get("dead-letter-routing-key"))
    return exchange, key


def find_dead_letter_queues(queues: list[dict], bindings: list[dict]) -> dict:
    """{(vhost, queue): (source queues, why)} for every queue that receives dead letters."""
    names = {(q.get("vhost", "/"), q["name"]) for q in queues}
    bound: dict[tuple[str, str], list[tuple[str, str]]] = {}
    for b in bindings:
        if b.get("destination_type") == "queue":
            bound.setdefault((b.get("vhost", "/"), b.get("source", "")), []).append(
                (b["destination"], b.get("routing_key", ""))
            )
    found: dict[tuple[str, str], tuple[list[str], str]] = {}
    for q in queues:
        vhost = q.get("vhost", "/")
        exchange, key = _dead_letter_exchange(q)
        if exchange is None:
            continue
        if exchange == "":
            # The default exchange routes by queue name: the key (or the original one).
            targets = [key] if key else []
        else:
            targets = [
                dest
                for dest, binding_key in bound.get((vhost, exchange), [])
                if key is None or binding_key in (key, "#", "") or "*" in binding_key
            ]
        for target in targets:
            if (vhost, target) in names and target != q["name"]:
                sources, _ = found.get((vhost, target), ([], ""))
                found[(vhost, target)] = (
                    [*sources, q["name"]],
                    f"dead-letter exchange of {q['name']}"
                    if exchange == ""
                    else f"bound to dead-letter exchange {exchange!r}",
                )
    for vhost, name in names:
        if (vhost, name) not in found and looks_like_dead_letters(name):
            origin = origin_of_name(name)
            sources = [origin] if origin and (vhost, origin) in names else []
            found[(vhost, name)] = (sources, "named like a dead-letter queue")
    return found


def _ready(broker, vhost: str, name: str) -> int | None:
    """Messages ready in the queue now, over AMQP: the management API's figures
    are refreshed only every few seconds (and absent for a new queue)."""
    try:
        connection = _connect(broker, vhost)
    except Exception:
        return None
    try:
        return connection.channel().queue_declare(name, passive=True).method.message_count
    except Exception:
        return None
    finally:
        if connection.is_open:
            connection.close()


def discover(broker) -> list[DeadLetterQueue]:
    queues, bindings = _queues_and_bindings(broker.url)
    found = find_dead_letter_queues(queues, bindings)
    by_key = {(q.get("vhost", "/"), q["name"]): q for q in queues}
    result = []
    for (vhost, name), (sources, why) in sorted(found.items()):
        q = by_key[(vhost, name)]
        ready = _ready(broker, vhost, name)
        depth = (
            q.get("messages")
            if ready is None
            else ready + int(q.get("messages_unacknowledged") or 0)
        )
        result.append(
            DeadLetterQueue(
                system=SYSTEM,
                name=name,
                broker=broker.source,
                source_channel=", ".join(sources) or None,
                depth=depth,
                oldest_age_seconds=_oldest_age(broker, vhost, name) if depth else None,
                namespace=vhost,
                why=why,
            )
        )
    return result


def _oldest_age(broker, vhost: str, name: str) -> float | None:
    """Seconds since the message at the head of the queue was dead-lettered (or published)."""
    try:
        head = peek(broker, name, vhost, 1)
    except Exception:
        return None
    if not head or head[0].time is None:
        return None
    return max(0.0, (dt.datetime.now(dt.UTC) - head[0].time).total_seconds())


def _connect(broker, vhost: str) -> pika.BlockingConnection:
    return pika.BlockingConnection(amqp_parameters(broker.url, vhost))


def message_id(properties, body: bytes) -> str:
    """The message's own id, or a digest of what stays the same while it waits."""
    if properties.message_id:
        return str(properties.message_id)
    return digest(body, properties.headers or {}, properties.timestamp)


def _death_time(headers: dict, queue: str) -> dt.datetime | None:
    deaths = headers.get("x-death") or []
    for death in deaths:
        if isinstance(death, dict) and isinstance(death.get("time"), dt.datetime):
            when = death["time"]
            return when if when.tzinfo else when.replace(tzinfo=dt.UTC)
    return None


def original_queue(headers: dict) -> str | None:
    """The queue the message died in: the x-death entry of its first death."""
    first = headers.get("x-first-death-queue")
    if first:
        return first.decode() if isinstance(first, bytes) else str(first)
    deaths = [d for d in headers.get("x-death") or [] if isinstance(d, dict)]
    if deaths:
        queue = deaths[-1].get("queue")
        return queue.decode() if isinstance(queue, bytes) else queue
    return None


def to_message(name: str, method, properties, body: bytes) -> Message:
    headers = properties.headers or {}
    reason = None
    deaths = [d for d in headers.get("x-death") or [] if isinstance(d, dict)]
    if deaths:
        first = deaths[-1]
        reason = f"{first.get('reason')} in {first.get('queue')} ({first.get('count', 1)}×)"
    error = header(headers, ERROR_HEADERS[:-1]) or reason
    when = _death_time(headers, name)
    if when is None and properties.timestamp:
        when = dt.datetime.fromtimestamp(properties.timestamp, dt.UTC)
    shown = shown_headers(headers)
    if properties.message_id:
        shown.setdefault("message_id", properties.message_id)
    return Message(
        id=message_id(properties, body),
        headers=shown,
        payload=shown_payload(body),
        error=error,
        original_channel=header(headers, ORIGIN_HEADERS) or original_queue(headers),
        traceparent=header(headers, ("traceparent",)),
        event_id=header(headers, EVENT_ID_HEADERS) or properties.message_id,
        time=when,
        redelivered=bool(method.redelivered),
    )


def peek(broker, name: str, namespace: str = "/", limit: int = 50, ids=None) -> list[Message]:
    """Up to `limit` messages from the head of the queue, all put back (see PEEK_SIDE_EFFECT).

    A consumer with a prefetch of `limit` takes them in one stream rather than
    one round trip each; none is acknowledged, and all are requeued in one
    `basic.nack`, which puts them back in their places.
    """
    connection = _connect(broker, namespace or "/")
    try:
        channel = connection.channel()
        waiting = channel.queue_declare(name, passive=True).method.message_count
        expected = min(limit, waiting)
        found, seen, last = [], 0, None
        if expected:
            channel.basic_qos(prefetch_count=min(expected, 65535))
            for method, properties, body in channel.consume(
                name, auto_ack=False, inactivity_timeout=1.0
            ):
                if method is None:
                    break
                last, seen = method.delivery_tag, seen + 1
                message = to_message(name, method, properties, body)
                if ids is None or message.id in ids:
                    found.append(message)
                if seen >= expected:
                    break
            channel.cancel()
        if last is not None:
            channel.basic_nack(delivery_tag=last, multiple=True, requeue=True)
        return found
    finally:
        if connection.is_open:
            connection.close()


def split_destination(destination: str) -> tuple[str, str]:
    """(exchange, routing key): `queue` goes through the default exchange, `exchange/key` as said."""
    if "/" in destination:
        exchange, _, key = destination.partition("/")
        return exchange, key
    return "", destination


class Mover:
    """Moves messages of one dead-letter queue, one AMQP transaction each."""

    exactly_once = EXACTLY_ONCE

    def __init__(self, broker, name: str, namespace: str = "/"):
        self.broker, self.name, self.vhost = broker, name, namespace or "/"
        self.connection = _connect(broker, self.vhost)
        self.returned: list = []

    def close(self):
        if self.connection.is_open:
            self.connection.close()

    def idle(self, seconds: float) -> None:
        # Sleeping inside pika keeps the connection's heartbeats going.
        self.connection.sleep(seconds)

    def plan(self, selection: set[str] | None, limit: int) -> list[Message]:
        if selection is None:
            return peek(self.broker, self.name, self.vhost, limit)
        return peek(self.broker, self.name, self.vhost, limit, ids=selection)

    def check_destination(self, destination: str) -> str | None:
        """Why `destination` cannot take messages, or None when it can."""
        exchange, key = split_destination(destination)
        channel = self.connection.channel()  # a refused passive declare closes its channel
        try:
            if exchange:
                channel.exchange_declare(exchange, passive=True)
            else:
                channel.queue_declare(key, passive=True)
        except pika.exceptions.ChannelClosedByBroker as exc:
            return f"{destination!r} does not exist on {self.broker.source} vhost {self.vhost!r}: {exc.reply_text}"
        if channel.is_open:
            channel.close()
        return None

    def move(self, pending: list[Planned], hooks: Hooks) -> None:
        waiting: dict[str, list[Planned]] = {}
        for planned in pending:
            waiting.setdefault(planned.message_id, []).append(planned)
        channel = self.connection.channel()
        channel.add_on_return_callback(lambda *args: self.returned.append(args))
        channel.tx_select()
        held = None
        try:
            while waiting:
                method, properties, body = channel.basic_get(self.name, auto_ack=False)
                if method is None:
                    break
                mine = waiting.get(message_id(properties, body))
                if not mine:
                    held = method.delivery_tag  # not picked: put back at the end
                    continue
                planned = mine.pop(0)
                if not mine:
                    del waiting[planned.message_id]
                if not hooks.begin(planned):
                    held = method.delivery_tag
                    break
                exchange, key = split_destination(planned.destination)
                headers = {
                    k: v for k, v in (properties.headers or {}).items() if k not in DEATH_HEADERS
                }
                properties.headers = hooks.outgoing_headers(headers)
                channel.basic_publish(exchange, key, body, properties, mandatory=True)
                channel.basic_ack(method.delivery_tag)
                channel.tx_commit()
                self.connection.process_data_events(0)
                if self.returned:
                    hooks.done(planned, error=f"returned unroutable by {planned.destination!r}")
                    raise MoveStopped(
                        f"{planned.destination!r} no longer routes messages (deleted during the "
                        "redrive?); one message was returned after its dead letter was removed"
                    )
                hooks.done(planned)
        finally:
            if held is not None and channel.is_open:
                channel.basic_nack(held, multiple=True, requeue=True)
                channel.tx_commit()
            if channel.is_open:
                channel.close()


def open_mover(broker, name: str, namespace: str = "/") -> Mover:
    return Mover(broker, name, namespace)
