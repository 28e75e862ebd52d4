"""Amazon EventBridge: buses, rules and targets as routes; failed invocations.

A bus is a channel (`aws_eventbridge`, the bus name); each rule's target is
a route from the bus, with the rule as its group: into an SQS queue, an SNS
topic, a Kinesis stream or another bus (`publish`), to a Lambda function or
anything else (`consume` by the target's name). A target's dead-letter queue
is a `dead_letter` route. The rule's state, event pattern, the target's
retry policy and, where CloudWatch has them for the last minutes, the
rule's FailedInvocations and InvocationsSentToDlq are the route's details.
"""

import datetime as dt

from collector.brokers import aws, topology
from collector.brokers.samples import Report

SYSTEM = "aws_eventbridge"
# The channel systems of target services, by the service part of their ARN.
TARGET_SYSTEMS = {"sqs": "aws_sqs", "sns": "aws_sns", "kinesis": "aws_kinesis", "events": SYSTEM}
RULE_METRICS = ("FailedInvocations", "InvocationsSentToDlq", "InvocationsFailedToBeSentToDlq")


def target_node(arn: str) -> tuple[str, str]:
    """(node, route kind) of a target's ARN."""
    parts = arn.split(":")
    service = parts[2] if len(parts) > 2 else ""
    if service in TARGET_SYSTEMS:
        return topology.channel(TARGET_SYSTEMS[service], topology.arn_name(arn)), topology.PUBLISH
    return topology.service(topology.arn_name(arn)), topology.CONSUME


def read(url: str, timeout: float) -> Report:
    """The routes of every rule's targets on every bus of the region."""
    events = aws.client(url, "events", timeout)
    rules = []
    for bus in aws.pages(events.list_event_buses, "EventBuses"):
        for rule in aws.pages(events.list_rules, "Rules", EventBusName=bus["Name"]):
            targets = aws.pages(
                events.list_targets_by_rule, "Targets", Rule=rule["Name"], EventBusName=bus["Name"]
            )
            rules.append((bus["Name"], rule, targets))
    # Rule metrics are by rule name (and bus, off the default one); the
    # newest minute with data in the lookback.
    queries = []
    for index, (bus, rule, _) in enumerate(rules):
        dimensions = {"RuleName": rule["Name"]}
        if bus != "default":
            dimensions["EventBusName"] = bus
        queries += [(f"m{index}_{i}", m, dimensions, "Sum") for i, m in enumerate(RULE_METRICS)]
    metrics = (
        aws.latest_metrics(
            aws.client(url, "cloudwatch", timeout), "AWS/Events", queries, dt.datetime.now(dt.UTC)
        )
        if queries
        else {}
    )
    routes = []
    for index, (bus, rule, targets) in enumerate(rules):
        rule_details = {"rule": rule["Name"], "state": rule.get("State")}
        if rule.get("EventPattern"):
            rule_details["event_pattern"] = rule["EventPattern"]
        for i, metric in enumerate(RULE_METRICS):
            value = metrics.get(f"m{index}_{i}")
            if value is not None:
                rule_details[metric] = value
        source = topology.channel(SYSTEM, bus)
        for target in targets:
            node, kind = target_node(target["Arn"])
            details = {**rule_details, "target_id": target.get("Id")}
            if target.get("RetryPolicy"):
                details["retry_policy"] = target["RetryPolicy"]
            routes.append(topology.Route(source, node, kind, rule["Name"], details))
            dead_letter = (target.get("DeadLetterConfig") or {}).get("Arn")
            if dead_letter:
                routes.append(
                    topology.Route(
                        source,
                        topology.channel("aws_sqs", topology.arn_name(dead_letter)),
                        topology.DEAD_LETTER,
                        rule["Name"],
                        {"target": node, **rule_details},
                    )
                )
    return Report([], routes=routes)


poll = aws.poller(read)
