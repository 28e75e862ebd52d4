"""A keyed stream with delivery trouble, for the Delivery page (a part of Shop).

For some orders the warehouse publishes two status events, picked then
packed, to the Kafka topic shop.order-status keyed by the order id;
`tracking` consumes them one at a time. Now and then it takes the packed
event before the picked one (out of order), processes one twice (a
rebalance hands it over again after the work was done: a duplicate), skips
one (missing) or gets to it minutes later (late, past the default deadline).
Its draws come from a Random of its own, so the rest of the shop tells the
same story with or without it.
"""

import random
import zlib

from opentelemetry.trace import SpanKind

from dashboard.demo.model import MS, PARTITIONS, Message, S

STATUS_TOPIC = "shop.order-status"
STATUS_SHARE = 0.25  # orders that get status events
OUT_OF_ORDER = 0.06
DUPLICATE = 0.04
SKIPPED = 0.02
LATE = 0.02
LATE_S = (90, 150)  # past the 60 s default deadline


class Tracking:
    """The Shop's warehouse and tracking services."""

    def _start_tracking(self, seed: int | None) -> None:
        self.tracking_random = random.Random(None if seed is None else seed + 7919)
        self.tracking_busy_ns = 0

    def _publish_statuses(self, message: Message, at_ns: int) -> None:
        rnd = self.tracking_random
        if rnd.random() >= STATUS_SHARE:
            return
        order = message.order
        partition = zlib.crc32(order.id.encode()) % PARTITIONS
        statuses = []
        for n, status in enumerate(("OrderPicked", "OrderPacked")):
            event = Message(order, f"{order.id}-{status}", STATUS_TOPIC, partition=partition)
            start = at_ns + n * 4 * MS
            self._send(
                "warehouse",
                event,
                message.context(),
                start,
                start + MS,
                {
                    "messaging.system": "kafka",
                    "messaging.operation.name": "send",
                    "messaging.kafka.message.key": order.id,
                    "messaging.destination.partition.id": str(partition),
                    "shop.event.type": status,
                },
            )
            statuses.append(event)
        if rnd.random() < OUT_OF_ORDER:
            statuses.reverse()
        start = max(statuses[-1].published_ns, self.tracking_busy_ns) + int(rnd.uniform(5, 20) * MS)
        for event in statuses:
            fate = rnd.random()
            if fate < SKIPPED:
                continue
            late = fate < SKIPPED + LATE
            # A late one is set aside and taken up minutes later; the rest go on.
            at = start + (int(rnd.uniform(*LATE_S) * S) if late else 0)
            end = at + int(rnd.uniform(2, 8) * MS)
            self.scheduler.at(end, self._track, event, at, end)
            if rnd.random() < DUPLICATE:
                again = end + int(rnd.uniform(200, 400) * MS)
                self.scheduler.at(again + 3 * MS, self._track, event, again, again + 3 * MS)
            if not late:
                start = end + MS
        self.tracking_busy_ns = start

    def _track(self, event: Message, start: int, end: int) -> None:
        span = self.tracer("tracking").start_span(
            f"process {STATUS_TOPIC}",
            context=event.context(),
            kind=SpanKind.CONSUMER,
            start_time=start,
            attributes={
                "messaging.system": "kafka",
                "messaging.destination.name": STATUS_TOPIC,
                "messaging.operation.type": "process",
                "messaging.operation.name": "process",
                "messaging.consumer.group.name": "tracking",
                "messaging.message.id": event.id,
                "messaging.kafka.message.key": event.order.id,
                "messaging.destination.partition.id": str(event.partition),
            },
        )
        self.tally.processed += 1
        span.end(end_time=end)
