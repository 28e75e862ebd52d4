"""NATS JetStream poller: every consumer of every stream, through the JetStream API.

Backlog = num_pending (not yet delivered) + num_ack_pending (delivered, not
acknowledged). The oldest message the consumer still owes is the first one
after its ack floor on the subjects it is filtered to (`filter_subject`, or
since NATS 2.10 `filter_subjects`); its stored time gives an exact time lag.
It is looked up as "the next message at or after" that sequence, so
deleted or expired messages in between do not lose the exact figure. When
no message can be read (permissions), the lag falls back to a drain
estimate from the ack floor's progress.
"""

import logging
import time

import nats
from nats.js.errors import Error as JetStreamError

from collector.brokers.offsets import jetstream_reading
from collector.brokers.samples import Reading

log = logging.getLogger(__name__)

# The JetStream API lists at most this many streams or consumers per request.
LIST_PAGE = 256
# A consumer filtered to more subjects than this is looked up on its first ones.
MAX_FILTER_SUBJECTS = 16


def _epoch(moment) -> float | None:
    return moment.timestamp() if moment is not None else None


async def _all(list_page, *args) -> list:
    found, offset = [], 0
    while True:
        page = await list_page(*args, offset=offset)
        found.extend(page)
        if len(page) < LIST_PAGE:
            return found
        offset += len(page)


def filter_subjects(config) -> list[str]:
    """The subjects a consumer is filtered to; [">"] (everything) when it is not."""
    subjects = list(getattr(config, "filter_subjects", None) or [])
    single = getattr(config, "filter_subject", None)
    if single and single not in subjects:
        subjects.append(single)
    return subjects[:MAX_FILTER_SUBJECTS] or [">"]


async def _oldest_waiting(js, stream, consumer, first_seq: int) -> float | None:
    """Write time of the first message after the consumer's ack floor, if readable."""
    floor = consumer.ack_floor.stream_seq if consumer.ack_floor else 0
    seq = max(floor + 1, first_seq)
    found = []
    for subject in filter_subjects(consumer.config):
        try:
            found.append(await js.get_msg(stream, seq=seq, subject=subject, next=True))
        except (TimeoutError, JetStreamError) as exc:
            log.debug("nats: no message on %s of %s after seq %s: %s", subject, stream, seq, exc)
    if not found:
        return None
    return _epoch(min(found, key=lambda message: message.seq).time)


def consumer_reading(consumer, now: float, oldest_at: float | None) -> Reading:
    delivered, floor = consumer.delivered, consumer.ack_floor
    active = [
        _epoch(info.last_active)
        for info in (delivered, floor)
        if info is not None and info.last_active is not None
    ]
    return jetstream_reading(
        consumer.stream_name,
        consumer.name,
        consumer.num_pending,
        consumer.num_ack_pending,
        floor.stream_seq if floor else None,
        active_at=max(active) if active else None,
        oldest_at=oldest_at,
        time=now,
    )


async def poll(url: str, timeout: float) -> list[Reading]:
    """Readings for every JetStream consumer the server at `url` shows."""
    nc = await nats.connect(
        url,
        connect_timeout=timeout,
        allow_reconnect=False,
        max_reconnect_attempts=0,
        name="eventscope-lag-poller",
    )
    try:
        js = nc.jsm(timeout=timeout)
        readings = []
        for stream in await _all(js.streams_info):
            name = stream.config.name
            for consumer in await _all(js.consumers_info, name):
                now = time.time()
                backlog = (consumer.num_pending or 0) + (consumer.num_ack_pending or 0)
                oldest = (
                    await _oldest_waiting(js, name, consumer, stream.state.first_seq)
                    if backlog
                    else None
                )
                readings.append(consumer_reading(consumer, now, oldest))
        return readings
    finally:
        await nc.close()
