"""Apache Pulsar: every subscription of every persistent topic, through the admin REST API.

`pulsar+http://[:<token>@]host:8080` (https too; the token, if any, is sent
as a bearer token). Tenants, their namespaces and their topics are listed,
then each topic's stats (`/admin/v2/persistent/{tenant}/{namespace}/{topic}/stats`,
Pulsar's TopicStats and SubscriptionStats) give per subscription:

- the backlog (`msgBacklog`: everything not yet acknowledged, so waiting
  plus unacknowledged deliveries) as the lag,
- the publish time of the oldest message in it
  (`earliestMsgPublishTimeInBacklog`, asked for with
  `getEarliestTimeInBacklog=true`, Pulsar 2.11+) as an exact time lag,
- unacknowledged, delayed and redelivered messages, the consume rate and
  the subscription type as details,
- when a consumer last consumed (`lastConsumedTimestamp`) as activity, when
  consumers are attached.

A partitioned topic is listed partition by partition (`<topic>-partition-N`):
each is a partition of one channel. The namespace (`tenant/namespace`) is
kept apart from the bare topic name. A dead-letter topic named by Pulsar's
default (`<topic>-<subscription>-DLQ`) that exists is a `dead_letter` route
from the topic, for that subscription, and its depth (the DLQ topic's
storage backlog across its subscriptions) is a detail of the subscription.
"""

import re
import time
from urllib.parse import quote, urlsplit, urlunsplit

import httpx

from collector.brokers import topology
from collector.brokers.samples import Reading, Report

SYSTEM = "pulsar"
PARTITION = re.compile(r"^(?P<topic>.+)-partition-(?P<n>\d+)$")


def api_base(url: str) -> tuple[str, dict]:
    parts = urlsplit(url.removeprefix("pulsar+"))
    headers = {"Accept": "application/json"}
    if parts.password:
        headers["Authorization"] = f"Bearer {parts.password}"
    netloc = parts.hostname or "127.0.0.1"
    if ":" in netloc:
        netloc = f"[{netloc}]"
    if parts.port:
        netloc += f":{parts.port}"
    return urlunsplit((parts.scheme, netloc, parts.path.rstrip("/"), "", "")), headers


async def _get(client: httpx.AsyncClient, path: str, params=None):
    response = await client.get(path, params=params)
    if response.status_code in (401, 403):
        raise ConnectionError(f"Pulsar admin API refused the token ({response.status_code})")
    response.raise_for_status()
    return response.json()


def split_topic(full: str) -> tuple[str, str, str]:
    """(tenant/namespace, topic, partition) of `persistent://tenant/ns/topic[-partition-N]`."""
    path = full.split("://", 1)[-1]
    tenant, namespace, local = path.split("/", 2)
    match = PARTITION.match(local)
    if match:
        return f"{tenant}/{namespace}", match["topic"], match["n"]
    return f"{tenant}/{namespace}", local, ""


def subscription_reading(namespace, topic, partition, name, stats: dict, now) -> Reading:
    consumers = stats.get("consumers") or []
    last = int(stats.get("lastConsumedTimestamp") or 0)
    earliest = int(stats.get("earliestMsgPublishTimeInBacklog") or 0)
    backlog = int(stats.get("msgBacklog") or 0)
    return Reading(
        system=SYSTEM,
        namespace=namespace,
        channel=topic,
        group=name,
        partition=partition,
        lag=backlog,
        oldest_at=earliest / 1000 if earliest > 0 and backlog else None,
        active_at=last / 1000 if consumers and last > 0 else None,
        time=now,
        depth_based=True,
        details={
            "unacked": int(stats.get("unackedMessages") or 0),
            "delayed": int(stats.get("msgDelayed") or 0),
            "rate_out": stats.get("msgRateOut"),
            "rate_redeliver": stats.get("msgRateRedeliver"),
            "type": stats.get("type"),
            "consumers": len(consumers),
        },
    )


async def poll(url: str, timeout: float) -> Report:
    """Readings for every subscription of every persistent topic the admin API shows."""
    base, headers = api_base(url)
    async with httpx.AsyncClient(base_url=base, headers=headers, timeout=timeout) as client:
        topics = []
        for tenant in await _get(client, "/admin/v2/tenants"):
            for namespace in await _get(client, f"/admin/v2/namespaces/{quote(tenant)}"):
                topics += await _get(client, f"/admin/v2/persistent/{namespace}")
        stats = {}
        for full in topics:
            if not full.startswith("persistent://"):
                continue
            path = full.removeprefix("persistent://")
            tenant_ns, local = path.rsplit("/", 1)
            stats[full] = await _get(
                client,
                f"/admin/v2/persistent/{tenant_ns}/{quote(local)}/stats",
                {"getEarliestTimeInBacklog": "true"},
            )
    now = time.time()
    readings, routes = [], []
    names = {split_topic(full)[:2]: full for full in stats}
    for full, topic_stats in stats.items():
        namespace, topic, partition = split_topic(full)
        for name, sub in (topic_stats.get("subscriptions") or {}).items():
            reading = subscription_reading(namespace, topic, partition, name, sub, now)
            dead_letter = f"{topic}-{name}-DLQ"
            if (namespace, dead_letter) in names:
                dlq_stats = stats[names[(namespace, dead_letter)]]
                reading.details["dead_letter_topic"] = dead_letter
                reading.details["dead_letter_depth"] = max(
                    (int(s.get("msgBacklog") or 0) for s in dlq_stats["subscriptions"].values()),
                    default=0,
                )
                routes.append(
                    topology.Route(
                        topology.channel(SYSTEM, topic),
                        topology.channel(SYSTEM, dead_letter),
                        topology.DEAD_LETTER,
                        name,
                        {"namespace": namespace},
                    )
                )
            readings.append(reading)
    return Report(readings, routes=routes)
