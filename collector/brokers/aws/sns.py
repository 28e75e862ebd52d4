"""Amazon SNS: topics and their subscriptions as routes of the flow graph.

A topic has no depth of its own; what it does is fan out. Each
subscription is a route from the topic: to an SQS queue (`publish`: the
topic publishes into the queue), to a Lambda function or an HTTP(S)
endpoint (`consume`: the function or the endpoint's host reads the topic),
to a Firehose stream or another protocol (`consume` by `<protocol>`; e-mail
addresses and phone numbers are not put in the graph). A subscription's own
dead-letter queue (its RedrivePolicy) is a `dead_letter` route from the
topic; its filter policy and raw delivery are in the route's details.
"""

import json
from urllib.parse import urlsplit

from collector.brokers import aws, topology
from collector.brokers.aws.sqs import SYSTEM as SQS
from collector.brokers.samples import Report

SYSTEM = "aws_sns"


def subscriber(protocol: str, endpoint: str) -> tuple[str, str]:
    """(node, route kind) of a subscription's endpoint."""
    protocol = protocol.lower()
    if protocol == "sqs":
        return topology.channel(SQS, topology.arn_name(endpoint)), topology.PUBLISH
    if protocol == "lambda":
        return topology.service(topology.arn_name(endpoint)), topology.CONSUME
    if protocol in ("http", "https"):
        return topology.service(urlsplit(endpoint).hostname or endpoint), topology.CONSUME
    if protocol == "firehose":
        return topology.service(topology.arn_name(endpoint)), topology.CONSUME
    return topology.service(protocol), topology.CONSUME


def subscription_routes(topic: str, subscription: dict, attributes: dict) -> list[topology.Route]:
    target, kind = subscriber(subscription.get("Protocol", ""), subscription.get("Endpoint", ""))
    details = {"protocol": subscription.get("Protocol")}
    if attributes.get("FilterPolicy"):
        details["filter_policy"] = attributes["FilterPolicy"]
    if attributes.get("RawMessageDelivery") == "true":
        details["raw_delivery"] = True
    routes = [topology.Route(topology.channel(SYSTEM, topic), target, kind, details=details)]
    try:
        redrive = json.loads(attributes.get("RedrivePolicy") or "null")
    except ValueError:
        redrive = None
    if isinstance(redrive, dict) and redrive.get("deadLetterTargetArn"):
        dead_letter = topology.arn_name(redrive["deadLetterTargetArn"])
        details["dead_letter_queue"] = dead_letter
        routes.append(
            topology.Route(
                topology.channel(SYSTEM, topic),
                topology.channel(SQS, dead_letter),
                topology.DEAD_LETTER,
                details={"subscriber": target},
            )
        )
    return routes


def read(url: str, timeout: float) -> Report:
    """The routes of every subscription of every topic of the region."""
    sns = aws.client(url, "sns", timeout)
    routes = []
    for topic in aws.pages(sns.list_topics, "Topics"):
        arn = topic["TopicArn"]
        name = topology.arn_name(arn)
        for subscription in aws.pages(
            sns.list_subscriptions_by_topic, "Subscriptions", TopicArn=arn
        ):
            sub_arn = subscription.get("SubscriptionArn", "")
            attributes = {}
            if sub_arn.startswith("arn:"):  # not "PendingConfirmation"
                try:
                    attributes = sns.get_subscription_attributes(SubscriptionArn=sub_arn)[
                        "Attributes"
                    ]
                except sns.exceptions.NotFoundException:
                    continue
            routes.extend(subscription_routes(name, subscription, attributes))
    return Report([], routes=routes)


poll = aws.poller(read)
