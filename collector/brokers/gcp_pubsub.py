"""Google Cloud Pub/Sub: every subscription of a project, through its documented APIs.

`pubsub://<gcp-project>[?endpoint_url=http://host:port]`. The Pub/Sub API
(`GET /v1/projects/{p}/subscriptions`) names each subscription's topic, its
dead-letter policy and push endpoint; Cloud Monitoring
(`GET /v3/projects/{p}/timeSeries`) gives, per subscription, the newest
point of:

- `subscription/num_undelivered_messages`: the backlog, as the lag (the
  subscription is the consumer group of its topic's channel),
- `subscription/oldest_unacked_message_age` (seconds): an exact time lag,
- `subscription/dead_letter_message_count`: messages forwarded to the
  dead-letter topic over the last minutes, a detail.

Monitoring samples every minute and shows a point a few minutes later, so
the figures trail the subscription by that much. Each subscription is a
`publish` route from its topic to a channel of the subscription's name
(subscriber spans name the subscription as their destination, so that is
where their consume edges start, and they get the subscription's lag); a
push subscription is also a `consume` route to its endpoint's host; a
dead-letter policy is a `dead_letter` route to the dead-letter topic. The namespace is the Google
Cloud project.

Credentials, in order: an access token in GOOGLE_OAUTH_ACCESS_TOKEN; a
service account key file in GOOGLE_APPLICATION_CREDENTIALS (a signed JWT
exchanged at the key's `token_uri`); none when `endpoint_url` names a local
endpoint (an emulator); else the metadata server of the machine (Compute
Engine, GKE, Cloud Run).
"""

import base64
import datetime as dt
import json
import os
import time
from urllib.parse import parse_qsl, urlsplit

import httpx

from collector.brokers import topology
from collector.brokers.samples import Reading, Report

SYSTEM = "gcp_pubsub"
PUBSUB = "https://pubsub.googleapis.com"
MONITORING = "https://monitoring.googleapis.com"
METADATA_TOKEN = (
    "http://metadata.google.internal/computeMetadata/v1/instance/service-accounts/default/token"
)
SCOPES = "https://www.googleapis.com/auth/pubsub https://www.googleapis.com/auth/monitoring.read"
METRICS = {
    "undelivered": "pubsub.googleapis.com/subscription/num_undelivered_messages",
    "oldest_age": "pubsub.googleapis.com/subscription/oldest_unacked_message_age",
    "dead_lettered": "pubsub.googleapis.com/subscription/dead_letter_message_count",
}
# How far back Monitoring is asked: points show a few minutes late.
LOOKBACK = dt.timedelta(minutes=10)

# access token and its expiry (Unix seconds), by what it was obtained from
_tokens: dict[str, tuple[str, float]] = {}


def bare(resource: str) -> str:
    """`projects/p/topics/orders` → `orders`."""
    return resource.rsplit("/", 1)[-1]


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def service_account_assertion(key: dict, now: float) -> str:
    """The signed JWT (RS256) a service account exchanges for an access token."""
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import padding

    header = {"alg": "RS256", "typ": "JWT", "kid": key.get("private_key_id")}
    claims = {
        "iss": key["client_email"],
        "scope": SCOPES,
        "aud": key["token_uri"],
        "iat": int(now),
        "exp": int(now) + 3600,
    }
    signing_input = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims).encode())}"
    private_key = serialization.load_pem_private_key(key["private_key"].encode(), None)
    signature = private_key.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
    return f"{signing_input}.{_b64(signature)}"


async def access_token(client: httpx.AsyncClient, local: bool) -> str | None:
    """A bearer token by the credential chain above; None for a local endpoint without one."""
    if os.environ.get("GOOGLE_OAUTH_ACCESS_TOKEN"):
        return os.environ["GOOGLE_OAUTH_ACCESS_TOKEN"]
    key_file = os.environ.get("GOOGLE_APPLICATION_CREDENTIALS")
    if not key_file and local:
        return None
    cache_key = key_file or "metadata"
    cached = _tokens.get(cache_key)
    if cached and cached[1] > time.time() + 60:
        return cached[0]
    if key_file:
        with open(key_file) as f:
            key = json.load(f)
        if key.get("type") != "service_account":
            raise ValueError(f"{key_file}: not a service account key (type {key.get('type')!r})")
        response = await client.post(
            key["token_uri"],
            data={
                "grant_type": "urn:ietf:params:oauth:grant-type:jwt-bearer",
                "assertion": service_account_assertion(key, time.time()),
            },
        )
    else:
        response = await client.get(METADATA_TOKEN, headers={"Metadata-Flavor": "Google"})
    if response.status_code >= 400:
        raise ConnectionError(
            f"no Google access token ({response.status_code}): {response.text[:200]}"
        )
    body = response.json()
    _tokens[cache_key] = (body["access_token"], time.time() + int(body.get("expires_in") or 300))
    return body["access_token"]


async def _pages(client, url: str, key: str, params: dict) -> list:
    found, token = [], None
    while True:
        response = await client.get(
            url, params={**params, **({"pageToken": token} if token else {})}
        )
        if response.status_code in (401, 403):
            raise ConnectionError(f"{url} refused the credentials ({response.status_code})")
        response.raise_for_status()
        body = response.json()
        found.extend(body.get(key) or [])
        token = body.get("nextPageToken")
        if not token:
            return found


def _value(point: dict) -> float | None:
    value = point.get("value") or {}
    for kind in ("int64Value", "doubleValue"):
        if kind in value:
            return float(value[kind])  # int64 values are JSON strings
    return None


async def metric(client, monitoring: str, project: str, name: str, now: dt.datetime,
                 newest: bool = True) -> dict[str, float]:  # fmt: skip
    """{subscription id: newest value (or the sum over the lookback)} of one metric."""
    series = await _pages(
        client,
        f"{monitoring}/v3/projects/{project}/timeSeries",
        "timeSeries",
        {
            "filter": f'metric.type="{METRICS[name]}" AND resource.type="pubsub_subscription"',
            "interval.startTime": (now - LOOKBACK).isoformat().replace("+00:00", "Z"),
            "interval.endTime": now.isoformat().replace("+00:00", "Z"),
        },
    )
    found = {}
    for item in series:
        subscription = ((item.get("resource") or {}).get("labels") or {}).get("subscription_id")
        values = [v for v in (_value(p) for p in item.get("points") or []) if v is not None]
        if subscription and values:
            # Points come newest first.
            found[subscription] = values[0] if newest else sum(values)
    return found


def options(url: str) -> tuple[str, str, str]:
    """(project, Pub/Sub base URL, Monitoring base URL) of a pubsub:// URL."""
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query))
    endpoint = (query.get("endpoint_url") or "").rstrip("/")
    return parts.hostname or "", endpoint or PUBSUB, endpoint or MONITORING


async def poll(url: str, timeout: float) -> Report:
    """Readings for every subscription of the project, and its declared routes."""
    project, pubsub, monitoring = options(url)
    async with httpx.AsyncClient(timeout=timeout) as client:
        token = await access_token(client, local=pubsub != PUBSUB)
        if token:
            client.headers["Authorization"] = f"Bearer {token}"
        subscriptions = await _pages(
            client, f"{pubsub}/v1/projects/{project}/subscriptions", "subscriptions",
            {"pageSize": 1000},
        )  # fmt: skip
        now = dt.datetime.now(dt.UTC)
        undelivered = await metric(client, monitoring, project, "undelivered", now)
        ages = await metric(client, monitoring, project, "oldest_age", now)
        dead = await metric(client, monitoring, project, "dead_lettered", now, newest=False)
    readings, routes = [], []
    t = now.timestamp()
    for subscription in subscriptions:
        name, topic = bare(subscription["name"]), bare(subscription.get("topic") or "")
        lag = undelivered.get(name)
        age = ages.get(name)
        details = {"ack_deadline_seconds": subscription.get("ackDeadlineSeconds")}
        policy = subscription.get("deadLetterPolicy") or {}
        channel = topology.channel(SYSTEM, topic)
        if policy.get("deadLetterTopic"):
            dead_topic = bare(policy["deadLetterTopic"])
            # 0 or absent means the default, 5.
            attempts = int(policy.get("maxDeliveryAttempts") or 5)
            details.update(dead_letter_topic=dead_topic, max_delivery_attempts=attempts)
            if name in dead:
                details["dead_lettered"] = int(dead[name])
            routes.append(
                topology.Route(
                    channel, topology.channel(SYSTEM, dead_topic), topology.DEAD_LETTER, name,
                    {"max_delivery_attempts": attempts},
                )
            )  # fmt: skip
        # google-cloud-pubsub's subscriber spans name the subscription as
        # their destination: its consume edges start at a channel of the
        # subscription's name, which the topic feeds.
        routes.append(
            topology.Route(
                channel, topology.channel(SYSTEM, name), topology.PUBLISH, name,
                {"subscription": True},
            )
        )  # fmt: skip
        push = (subscription.get("pushConfig") or {}).get("pushEndpoint")
        if push:
            details["push_endpoint_host"] = urlsplit(push).hostname
            routes.append(
                topology.Route(
                    channel, topology.service(urlsplit(push).hostname or push), topology.CONSUME,
                    name, {"push": True},
                )
            )  # fmt: skip
        readings.append(
            Reading(
                system=SYSTEM,
                namespace=project,
                channel=topic,
                group=name,
                lag=int(lag) if lag is not None else None,
                oldest_at=t - age if age and lag else None,
                time=t,
                depth_based=True,
                details=details,
            )
        )
    return Report(readings, routes=routes)
