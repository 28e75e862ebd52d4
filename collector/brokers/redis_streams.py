"""Redis Streams poller: every consumer group of every stream key.

Backlog = the group's lag (entries not yet delivered, XINFO GROUPS) +
pending (delivered, not acknowledged). Stream ids start with the
millisecond they were added, so the time lag is exact: now minus the id of
the oldest entry the group still owes, which is the smaller of the oldest
pending id (XPENDING summary) and the first entry after last-delivered-id.
The consumers' idle times say whether anyone is still reading.
"""

import time

import redis.asyncio as aioredis

from collector.brokers.samples import Reading

SCAN_COUNT = 1000


def id_time(stream_id) -> float | None:
    """Unix seconds of a stream id "<ms>-<seq>"."""
    if stream_id is None:
        return None
    text = stream_id.decode() if isinstance(stream_id, bytes) else str(stream_id)
    ms = text.split("-", 1)[0]
    return int(ms) / 1000 if ms.isdigit() else None


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _pairs(reply) -> dict:
    """XINFO replies as a dict with str keys (RESP2 gives flat lists or dicts)."""
    if isinstance(reply, dict):
        return {_text(k): v for k, v in reply.items()}
    return {_text(reply[i]): reply[i + 1] for i in range(0, len(reply) - 1, 2)}


async def group_reading(client, key: str, group: dict, entries_added, now: float) -> Reading:
    name = _text(group["name"])
    pending = int(group.get("pending") or 0)
    undelivered = group.get("lag")
    entries_read = group.get("entries-read")
    if undelivered is None and entries_added is not None and entries_read is not None:
        undelivered = max(0, int(entries_added) - int(entries_read))
    lag = int(undelivered) + pending if undelivered is not None else None
    oldest = []
    if pending:
        summary = await client.xpending(key, name)
        oldest.append(id_time(summary.get("min")))
    if undelivered:
        last = _text(group.get("last-delivered-id") or "0-0")
        after = await client.xrange(key, min=f"({last}", max="+", count=1)
        if after:
            oldest.append(id_time(after[0][0]))
    oldest = [t for t in oldest if t is not None]
    active_at = None
    if int(group.get("consumers") or 0):
        consumers = await client.xinfo_consumers(key, name)
        idle = [int(_pairs(c).get("idle") or 0) for c in consumers]
        active_at = now - min(idle) / 1000 if idle else None
    end = int(entries_added) if entries_added is not None else None
    return Reading(
        system="redis",
        channel=key,
        group=name,
        end_offset=end,
        committed_offset=end - lag if end is not None and lag is not None else None,
        lag=lag,
        oldest_at=min(oldest) if oldest else None,
        active_at=active_at,
        time=now,
    )


async def poll(url: str, timeout: float) -> list[Reading]:
    """Readings for every consumer group of every stream in the database at `url`."""
    client = aioredis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout)
    try:
        readings = []
        async for raw_key in client.scan_iter(count=SCAN_COUNT, _type="stream"):
            key = _text(raw_key)
            groups = await client.xinfo_groups(key)
            if not groups:
                continue
            info = _pairs(await client.execute_command("XINFO", "STREAM", key))
            entries_added = info.get("entries-added")
            for group in groups:
                now = time.time()
                group = {_text(k): v for k, v in group.items()}
                readings.append(await group_reading(client, key, group, entries_added, now))
        return readings
    finally:
        await client.aclose()
