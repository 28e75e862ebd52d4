"""Azure Event Grid: topics' event subscriptions as routes, with their delivery failures.

`eventgrid://<Azure subscription id>[?resource_group=<name>&endpoint_url=…]`
reads through Azure Resource Manager: the custom and system topics of the
subscription (or of one resource group), each topic's event subscriptions
(destination, dead-letter destination, retry policy), and Azure Monitor's
per-subscription delivery metrics over the last LOOKBACK:
DeliveryAttemptFailCount, DeadLetteredCount, DroppedEventCount and
DeliverySuccessCount (dimension EventSubscriptionName, which Monitor
reports in upper case).

Event Grid pushes: it has no backlog a consumer could fall behind on, so it
gives no lag. Each event subscription is a route from the topic's channel,
named for the event subscription (the group): to a Service Bus queue or
topic or an event hub (`publish` into that channel), to a webhook's host, a
function or anything else (`consume`). The dead-letter destination (a blob
container) is a `dead_letter` route; failure counts are the routes' details.

Credentials (Microsoft Entra ID), in order: a service principal in
AZURE_TENANT_ID, AZURE_CLIENT_ID and AZURE_CLIENT_SECRET (client
credentials at AZURE_AUTHORITY_HOST, default login.microsoftonline.com),
as azure-identity's EnvironmentCredential reads them; else the machine's
managed identity (the instance metadata service).
"""

import datetime as dt
import os
import time
from urllib.parse import parse_qsl, urlsplit

import httpx

from collector.brokers import topology
from collector.brokers.samples import Report

SYSTEM = "eventgrid"
ARM = "https://management.azure.com"
ARM_SCOPE = "https://management.azure.com/.default"
IMDS = "http://169.254.169.254/metadata/identity/oauth2/token"
EVENTGRID_API = "2022-06-15"
METRICS_API = "2018-01-01"
METRICS = ("DeliveryAttemptFailCount", "DeadLetteredCount", "DroppedEventCount",
           "DeliverySuccessCount")  # fmt: skip
LOOKBACK = dt.timedelta(minutes=15)
# Destination endpoint types that are channels of another system.
CHANNEL_DESTINATIONS = {
    "ServiceBusQueue": "servicebus",
    "ServiceBusTopic": "servicebus",
    "EventHub": "eventhubs",
    "StorageQueue": "azure_storage_queue",
}

_tokens: dict[str, tuple[str, float]] = {}


async def access_token(client: httpx.AsyncClient) -> str:
    """A Resource Manager token: service principal from the environment, else managed identity."""
    tenant, client_id = os.environ.get("AZURE_TENANT_ID"), os.environ.get("AZURE_CLIENT_ID")
    secret = os.environ.get("AZURE_CLIENT_SECRET")
    cache_key = f"{tenant}/{client_id}" if secret else "managed identity"
    cached = _tokens.get(cache_key)
    if cached and cached[1] > time.time() + 60:
        return cached[0]
    if tenant and client_id and secret:
        authority = os.environ.get("AZURE_AUTHORITY_HOST", "https://login.microsoftonline.com")
        response = await client.post(
            f"{authority.rstrip('/')}/{tenant}/oauth2/v2.0/token",
            data={"grant_type": "client_credentials", "client_id": client_id,
                  "client_secret": secret, "scope": ARM_SCOPE},
        )  # fmt: skip
    else:
        response = await client.get(
            IMDS,
            params={"api-version": "2018-02-01", "resource": "https://management.azure.com/"},
            headers={"Metadata": "true"},
        )
    if response.status_code >= 400:
        raise ConnectionError(
            f"no Microsoft Entra ID token ({response.status_code}): {response.text[:200]}"
        )
    body = response.json()
    _tokens[cache_key] = (body["access_token"], time.time() + int(body.get("expires_in") or 300))
    return body["access_token"]


async def _values(client: httpx.AsyncClient, url: str, params: dict | None = None) -> list:
    """Every item of a Resource Manager list, following nextLink."""
    found = []
    while url:
        response = await client.get(url, params=params)
        if response.status_code in (401, 403):
            raise ConnectionError(f"Resource Manager refused the token ({response.status_code})")
        response.raise_for_status()
        body = response.json()
        found.extend(body.get("value") or [])
        url, params = body.get("nextLink"), None  # nextLink carries its own query
    return found


def destination(properties: dict) -> tuple[str, str, dict]:
    """(node, route kind, details) of an event subscription's destination."""
    target = properties.get("destination") or {}
    kind = target.get("endpointType", "")
    props = target.get("properties") or {}
    resource = props.get("resourceId") or ""
    details = {"endpoint_type": kind}
    if kind in CHANNEL_DESTINATIONS:
        name = props.get("queueName") or resource.rstrip("/").rsplit("/", 1)[-1]
        return topology.channel(CHANNEL_DESTINATIONS[kind], name), topology.PUBLISH, details
    if kind == "WebHook":
        base = props.get("endpointBaseUrl") or props.get("endpointUrl") or ""
        return topology.service(urlsplit(base).hostname or base), topology.CONSUME, details
    return (
        topology.service(resource.rstrip("/").rsplit("/", 1)[-1] or kind),
        topology.CONSUME,
        details,
    )


async def delivery_metrics(client, topic_id: str, now: dt.datetime) -> dict[str, dict[str, float]]:
    """{EVENT SUBSCRIPTION NAME: {metric: total over LOOKBACK}} of one topic."""
    timespan = f"{(now - LOOKBACK).isoformat()}/{now.isoformat()}".replace("+00:00", "Z")
    items = await _values(
        client,
        f"{topic_id}/providers/Microsoft.Insights/metrics",
        {
            "api-version": METRICS_API,
            "metricnames": ",".join(METRICS),
            "aggregation": "Total",
            "interval": "PT1M",
            "timespan": timespan,
            "$filter": "EventSubscriptionName eq '*'",
        },
    )
    found: dict[str, dict[str, float]] = {}
    for metric in items:
        name = (metric.get("name") or {}).get("value")
        for series in metric.get("timeseries") or []:
            labels = {
                (m.get("name") or {}).get("value", "").lower(): m.get("value")
                for m in series.get("metadatavalues") or []
            }
            subscription = (labels.get("eventsubscriptionname") or "").upper()
            total = sum(point.get("total") or 0 for point in series.get("data") or [])
            found.setdefault(subscription, {})[name] = total
    return found


async def poll(url: str, timeout: float) -> Report:
    """Every event subscription of every topic as a route, with its delivery figures."""
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query))
    arm = (query.get("endpoint_url") or ARM).rstrip("/")
    scope = f"/subscriptions/{parts.hostname}"
    if query.get("resource_group"):
        scope += f"/resourceGroups/{query['resource_group']}"
    routes = []
    async with httpx.AsyncClient(base_url=arm, timeout=timeout) as client:
        client.headers["Authorization"] = f"Bearer {await access_token(client)}"
        topics = []
        for kind, path in (
            ("topics", "eventSubscriptions"),
            ("systemTopics", "eventSubscriptions"),
        ):
            for topic in await _values(
                client, f"{scope}/providers/Microsoft.EventGrid/{kind}",
                {"api-version": EVENTGRID_API},
            ):  # fmt: skip
                prefix = "/providers/Microsoft.EventGrid" if kind == "topics" else ""
                topics.append((topic, f"{topic['id']}{prefix}/{path}"))
        now = dt.datetime.now(dt.UTC)
        for topic, subscriptions_path in topics:
            subscriptions = await _values(
                client, subscriptions_path, {"api-version": EVENTGRID_API}
            )
            figures = await delivery_metrics(client, topic["id"], now) if subscriptions else {}
            channel = topology.channel(SYSTEM, topic["name"])
            for subscription in subscriptions:
                properties = subscription.get("properties") or {}
                node, kind, details = destination(properties)
                name = subscription["name"]
                details.update(figures.get(name.upper(), {}))
                if properties.get("retryPolicy"):
                    details["retry_policy"] = properties["retryPolicy"]
                dead = properties.get("deadLetterDestination") or {}
                container = (dead.get("properties") or {}).get("blobContainerName")
                if container:
                    account = ((dead.get("properties") or {}).get("resourceId") or "").rsplit(
                        "/", 1
                    )[-1]
                    details["dead_letter_destination"] = f"{account}/{container}"
                    routes.append(
                        topology.Route(
                            channel, topology.channel("azure_blob", f"{account}/{container}"),
                            topology.DEAD_LETTER, name, {"account": account},
                        )
                    )  # fmt: skip
                routes.append(topology.Route(channel, node, kind, name, details))
    return Report([], routes=routes)
