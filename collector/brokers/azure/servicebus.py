"""Azure Service Bus: queues, and topics' subscriptions, with their message counts.

`servicebus://<policy>:<key>@<namespace>.servicebus.windows.net` (see
`collector.brokers.azure`). The namespace's management endpoint lists
queues (`$Resources/queues`), topics (`$Resources/topics`) and each topic's
subscriptions (`<topic>/Subscriptions`); each description's CountDetails
give active, dead-lettered, scheduled and transfer counts.

A queue has no consumer groups: its lag (group '') is its active messages,
waiting and locked by receivers alike. A subscription is the consumer group
of its topic's channel. Dead-lettered messages wait in the entity's
`$DeadLetterQueue` sub-queue: their count is a detail (`dead_letter_depth`)
and, once it holds any, the sub-queue a `dead_letter` route
(`<entity>/$DeadLetterQueue`, or the entity named in
ForwardDeadLetteredMessagesTo, always shown). Auto-forwarding
(ForwardTo) is a `publish` route. Scheduled messages are not deliverable
yet and are shown apart. The namespace is kept apart from the bare names.
"""

import time

from collector.brokers import topology
from collector.brokers.azure import Namespace, number
from collector.brokers.samples import Reading, Report

SYSTEM = "servicebus"
DEAD_LETTER_QUEUE = "$DeadLetterQueue"


def entity_reading(namespace: str, channel: str, group: str, description: dict, now) -> Reading:
    active = number(description.get("ActiveMessageCount"))
    return Reading(
        system=SYSTEM,
        namespace=namespace,
        channel=channel,
        group=group,
        lag=active,
        time=now,
        depth_based=True,
        details={
            "active": active,
            "dead_letter_depth": number(description.get("DeadLetterMessageCount")),
            "scheduled": number(description.get("ScheduledMessageCount")),
            "transfer": number(description.get("TransferMessageCount")),
            "transfer_dead_letter": number(description.get("TransferDeadLetterMessageCount")),
            "max_delivery_count": number(description.get("MaxDeliveryCount")) or None,
        },
    )


def forwarding(channel: str, group: str, description: dict) -> list[topology.Route]:
    """Auto-forwarding and dead-letter routes of one queue or subscription."""
    source = topology.channel(SYSTEM, channel)
    entity = f"{channel}/Subscriptions/{group}" if group else channel
    routes = []
    # Every entity has a dead-letter sub-queue: it joins the graph once it
    # holds something, or when dead letters are forwarded elsewhere.
    forwarded = description.get("ForwardDeadLetteredMessagesTo")
    if forwarded or number(description.get("DeadLetterMessageCount")):
        routes.append(
            topology.Route(
                source,
                topology.channel(SYSTEM, forwarded or f"{entity}/{DEAD_LETTER_QUEUE}"),
                topology.DEAD_LETTER,
                group,
                {"max_delivery_count": number(description.get("MaxDeliveryCount")) or None},
            )
        )
    if description.get("ForwardTo"):
        routes.append(
            topology.Route(
                source, topology.channel(SYSTEM, description["ForwardTo"]), topology.PUBLISH,
                group, {"auto_forward": True},
            )
        )  # fmt: skip
    return routes


async def poll(url: str, timeout: float) -> Report:
    """Readings for every queue and topic subscription of the namespace, and their routes."""
    namespace = Namespace.from_url(url)
    async with namespace.client(timeout) as client:
        queues = await namespace.feed(client, "/$Resources/queues")
        topics = await namespace.feed(client, "/$Resources/topics")
        subscriptions = [
            (topic, name, description)
            for topic, _ in topics
            for name, description in await namespace.feed(client, f"/{topic}/Subscriptions")
        ]
    now = time.time()
    readings, routes = [], []
    for name, description in queues:
        readings.append(entity_reading(namespace.name, name, "", description, now))
        routes += forwarding(name, "", description)
    for topic, name, description in subscriptions:
        readings.append(entity_reading(namespace.name, topic, name, description, now))
        routes += forwarding(topic, name, description)
    return Report(readings, routes=routes)
