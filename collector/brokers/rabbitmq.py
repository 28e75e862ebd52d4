"""RabbitMQ management API poller: every queue of every vhost, page by page.

One request per page of 500 queues per vhost, trimmed to the columns lag
needs. Depth is ready + unacknowledged; the cumulative acknowledgement
counters stand in for a committed offset (see offsets.rabbitmq_reading), so
the consume rate comes from our own samples rather than the management
plugin's short smoothing window, and time lag is a drain estimate.
"""

import time
from urllib.parse import quote, urlsplit, urlunsplit

import httpx

from collector.brokers.offsets import rabbitmq_reading
from collector.brokers.samples import Reading

PAGE_SIZE = 500
COLUMNS = ",".join(
    [
        "name",
        "vhost",
        "messages_ready",
        "messages_unacknowledged",
        "consumers",
        "message_stats.ack",
        "message_stats.deliver_no_ack",
        "message_stats.get_no_ack",
    ]
)


def api_base(url: str) -> tuple[str, tuple[str, str]]:
    """(http base URL without credentials, (user, password)) from rabbitmq+http://u:p@h:port."""
    parts = urlsplit(url.removeprefix("rabbitmq+"))
    auth = (parts.username or "guest", parts.password or "guest")
    netloc = parts.hostname or "127.0.0.1"
    if ":" in netloc:
        netloc = f"[{netloc}]"
    if parts.port:
        netloc += f":{parts.port}"
    return urlunsplit((parts.scheme, netloc, parts.path.rstrip("/"), "", "")), auth


def queue_reading(queue: dict, now: float) -> Reading:
    """One queue object of the management API as a reading."""
    stats = queue.get("message_stats") or {}
    # Automatic-ack deliveries leave the queue without an ack of their own.
    acked = sum(int(stats.get(k) or 0) for k in ("ack", "deliver_no_ack", "get_no_ack"))
    return rabbitmq_reading(
        queue.get("vhost", "/"),
        queue["name"],
        queue.get("messages_ready"),
        queue.get("messages_unacknowledged"),
        consumers=queue.get("consumers"),
        acked=acked,
        time=now,
    )


async def _get(client: httpx.AsyncClient, path: str, params=None):
    response = await client.get(path, params=params)
    if response.status_code == 401:
        raise ConnectionError("management API refused the credentials (401)")
    if response.status_code == 404 and path == "/api/vhosts":
        raise ConnectionError("no management API here (is the rabbitmq_management plugin on?)")
    response.raise_for_status()
    return response.json()


async def poll(url: str, timeout: float) -> list[Reading]:
    """Readings for every queue the management API at `url` shows."""
    base, auth = api_base(url)
    async with httpx.AsyncClient(base_url=base, auth=auth, timeout=timeout) as client:
        vhosts = [v["name"] for v in await _get(client, "/api/vhosts")]
        readings = []
        for vhost in vhosts:
            page = 1
            while True:
                body = await _get(
                    client,
                    f"/api/queues/{quote(vhost, safe='')}",
                    {
                        "pagination": "true",
                        "page": page,
                        "page_size": PAGE_SIZE,
                        "columns": COLUMNS,
                    },
                )
                now = time.time()
                readings.extend(queue_reading(q, now) for q in body.get("items", []))
                if page >= int(body.get("page_count") or 1):
                    break
                page += 1
        return readings
