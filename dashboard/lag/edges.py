"""Consumer lag for flow graph edges: the graph's consume edges are
(channel → service, consumer group), and each can carry the lag of the
group that consumes it."""

from django.db import connection

from collector.brokers import lag

# Systems whose queues are consumed without a named group: a consume edge
# whose spans do name one still gets the queue's lag.
GROUPLESS = ("rabbitmq", "aws_sqs", "servicebus")
# Systems whose consumer spans name the subscription, not the topic, as
# their destination (google-cloud-pubsub): a consume edge from a channel of
# a subscription's name gets that subscription's lag.
SUBSCRIPTION_CHANNELS = ("gcp_pubsub",)


def lag_for_edges(project_id: int, keys) -> dict[tuple[str, str, str], dict]:
    """{(system, channel, group): {"lag", "lag_seconds", "lag_status"}} for the keys known.

    One query over the groups' present state, whatever the number of keys.
    Keys without a known group are left out. Where one key matches several
    groups (a queue of that name in several RabbitMQ vhosts, a stream in
    several NATS accounts), the lags add up and the time lag and status are
    the worst of them, as the edge carries the traffic of all.
    """
    keys = sorted(set(keys))
    if not keys:
        return {}
    with connection.cursor() as cursor:
        cursor.execute(
            """
            SELECT k.system, k.channel, k.consumer_group, g.lag, g.lag_seconds, g.status
            FROM unnest(%s::text[], %s::text[], %s::text[]) AS k(system, channel, consumer_group)
            JOIN brokers_groupstate g
              ON g.project_id = %s AND g.system = k.system
             AND ((g.channel = k.channel
                   AND (g.consumer_group = k.consumer_group
                        OR (g.consumer_group = '' AND k.system = ANY(%s))))
                  -- a consumer whose spans name its subscription (Pub/Sub)
                  OR (k.system = ANY(%s) AND k.consumer_group = ''
                      AND g.consumer_group = k.channel))
            """,
            [
                [k[0] for k in keys],
                [k[1] for k in keys],
                [k[2] for k in keys],
                project_id,
                list(GROUPLESS),
                list(SUBSCRIPTION_CHANNELS),
            ],
        )
        rows = cursor.fetchall()
    found: dict[tuple[str, str, str], dict] = {}
    for system, channel, group, messages, seconds, status in rows:
        edge = found.setdefault(
            (system, channel, group), {"lag": None, "lag_seconds": None, "lag_status": lag.OK}
        )
        if messages is not None:
            edge["lag"] = (edge["lag"] or 0) + messages
        if seconds is not None:
            edge["lag_seconds"] = max(edge["lag_seconds"] or 0.0, seconds)
        if lag.SEVERITY.get(status, 0) > lag.SEVERITY.get(edge["lag_status"], 0):
            edge["lag_status"] = status
    return found
