"""Pulsar, Google Pub/Sub and Azure (Service Bus, Event Hubs, Event Grid)
readers against a local HTTP server answering with the documented response
shapes (tests/fixtures/<system>/, each README naming the documentation
followed). Fixture times are written around 2026-01-01T00:00:00Z and moved
to now when served, so ages come out as the fixture states them."""

import asyncio
import re
import time

import pytest

from collector.brokers.poller import parse_broker, poll_broker
from tests.brokers.conftest import cloud_fixture, group_item

WINDOW = 600
ANCHOR_MS = 1767225600000  # 2026-01-01T00:00:00Z, "now" in the fixtures


def moved_to_now(text: str) -> str:
    """The fixture with its epoch-millisecond times moved so ANCHOR_MS is now."""
    delta = int(time.time() * 1000) - ANCHOR_MS
    return re.sub(r"\b17672\d{8}\b", lambda m: str(int(m.group()) + delta), text)


async def poll(url: str, project) -> None:
    assert await poll_broker(parse_broker(url), project.id, window=WINDOW)


def flow(client, viewer) -> dict:
    from django.db import connections

    try:
        client.force_login(viewer)
        return client.get("/api/flow?window=1h").json()
    finally:
        connections.close_all()


async def declared(client, viewer) -> dict:
    import asyncio

    graph = await asyncio.to_thread(flow, client, viewer)
    return {
        (e["source"], e["target"], e["kind"], e["group"]): e["declared"]
        for e in graph["edges"]
        if e["declared"] is not None
    }


# ---- Pulsar -------------------------------------------------------------------------------


def pulsar_routes(api, token="s3cret"):
    def guarded(body):
        def answer(path, query, headers, _):
            if headers.get("Authorization") != f"Bearer {token}":
                return 401, "application/json", '{"reason": "Authentication required"}'
            return 200, "application/json", moved_to_now(body)

        return answer

    base = "/admin/v2/persistent/public/default"
    api.routes.update(
        {
            "/admin/v2/tenants": guarded(cloud_fixture("pulsar", "tenants.json")),
            "/admin/v2/namespaces/public": guarded(cloud_fixture("pulsar", "namespaces.json")),
            base: guarded(cloud_fixture("pulsar", "topics.json")),
        }
    )
    for topic in ("orders-partition-0", "orders-partition-1", "orders-billing-DLQ"):
        api.routes[f"{base}/{topic}/stats"] = guarded(
            cloud_fixture("pulsar", f"stats-{topic}.json")
        )


async def test_pulsar_subscriptions_backlog_per_partition_with_exact_age(
    lag_db, project, documented_api, client, viewer
):
    pulsar_routes(documented_api)
    host = documented_api.url.removeprefix("http://")
    await poll(f"pulsar+http://:s3cret@{host}", project)

    billing = group_item(project.id, "pulsar", "orders", "billing", namespace="public/default")
    assert billing["lag"] == 150  # 120 + 30 across the two partitions
    by_partition = {p["partition"]: p for p in billing["partitions"]}
    assert (by_partition["0"]["lag"], by_partition["1"]["lag"]) == (120, 30)
    assert by_partition["0"]["unacked"] == 40 and by_partition["0"]["delayed"] == 5
    assert by_partition["0"]["type"] == "Shared" and by_partition["0"]["consumers"] == 1
    assert by_partition["0"]["dead_letter_depth"] == 3
    # The oldest message in partition 0's backlog was published 60 s before "now".
    assert billing["lag_seconds_method"] == "exact"
    assert 60 <= billing["lag_seconds"] < 75
    audit = group_item(project.id, "pulsar", "orders", "audit")
    assert audit["lag"] == 0 and audit["namespace"] == "public/default"
    dlq = group_item(project.id, "pulsar", "orders-billing-DLQ", "dlq-reader")
    assert dlq["lag"] == 3
    edges = await declared(client, viewer)
    assert edges == {
        ("channel:pulsar:orders", "channel:pulsar:orders-billing-DLQ", "dead_letter", "billing"): {
            "namespace": "public/default"
        }
    }
    # The stats were asked with the backlog's earliest time.
    stats = [r for r in documented_api.requests if r[1].endswith("/stats")]
    assert stats and all(r[2] == {"getEarliestTimeInBacklog": "true"} for r in stats)


async def test_pulsar_refusing_the_token_leaves_the_broker_unreachable_with_the_reason(
    lag_db, project, documented_api
):
    pulsar_routes(documented_api)
    host = documented_api.url.removeprefix("http://")
    broker = parse_broker(f"pulsar+http://:wrong@{host}")
    assert broker.source == f"pulsar+http://{host}"  # the token is never shown
    assert not await poll_broker(broker, project.id, window=WINDOW)
    from tests.brokers.conftest import read_current

    assert read_current(project.id) == []
    import psycopg

    from collector.db import conninfo

    with psycopg.connect(conninfo()) as conn:
        (error,) = conn.execute("SELECT error FROM brokers_brokerstate").fetchone()
    assert "refused the token (401)" in error


# ---- Google Pub/Sub -----------------------------------------------------------------------


def pubsub_routes(api):
    def guarded(answer_of):
        def answer(path, query, headers, _):
            if headers.get("Authorization") != "Bearer ya29.local":
                return 401, "application/json", '{"error": {"code": 401}}'
            return 200, "application/json", answer_of(query)

        return answer

    api.routes["/v1/projects/shop-prod/subscriptions"] = guarded(
        lambda q: cloud_fixture(
            "gcp_pubsub",
            "subscriptions-page-2.json" if q.get("pageToken") == "page-2" else "subscriptions.json",
        )
    )

    def series(query):
        metric = re.search(r'subscription/(\w+)"', query["filter"]).group(1)
        return cloud_fixture("gcp_pubsub", f"timeseries-{metric}.json")

    api.routes["/v3/projects/shop-prod/timeSeries"] = guarded(series)


async def test_pubsub_subscriptions_undelivered_and_oldest_unacked_age(
    lag_db, project, documented_api, service_account, client, viewer
):
    pubsub_routes(documented_api)
    await poll(f"pubsub://shop-prod?endpoint_url={documented_api.url}", project)

    billing = group_item(project.id, "gcp_pubsub", "orders", "billing", namespace="shop-prod")
    assert billing["lag"] == 240  # the newest point
    assert billing["lag_seconds_method"] == "exact"
    assert 95 <= billing["lag_seconds"] < 110
    (details,) = billing["partitions"]
    assert details["dead_letter_topic"] == "orders-dead-letter"
    assert details["max_delivery_attempts"] == 5
    assert details["dead_lettered"] == 3  # over the lookback
    push = group_item(project.id, "gcp_pubsub", "orders", "shipping-push")
    assert push["lag"] == 0 and push["lag_seconds"] == 0
    # The second page of subscriptions was read too.
    assert (
        group_item(project.id, "gcp_pubsub", "orders-dead-letter", "dead-letter-reader")["lag"] == 7
    )
    topic = "channel:gcp_pubsub:orders"
    assert await declared(client, viewer) == {
        (topic, "channel:gcp_pubsub:orders-dead-letter", "dead_letter", "billing"):
            {"max_delivery_attempts": 5},
        (topic, "service:shipping.example.com", "consume", "shipping-push"): {"push": True},
        # Subscriber spans name the subscription: the topic feeds a channel of that name.
        (topic, "channel:gcp_pubsub:billing", "publish", "billing"): {"subscription": True},
        (topic, "channel:gcp_pubsub:shipping-push", "publish", "shipping-push"):
            {"subscription": True},
        ("channel:gcp_pubsub:orders-dead-letter", "channel:gcp_pubsub:dead-letter-reader",
         "publish", "dead-letter-reader"): {"subscription": True},
    }  # fmt: skip
    # A consume edge from the subscription's channel (as the subscriber's
    # spans give it) carries the subscription's lag.
    from dashboard.lag.edges import lag_for_edges

    def edge_lag():
        from django.db import connections

        try:
            return lag_for_edges(project.id, [("gcp_pubsub", "billing", "")])
        finally:
            connections.close_all()

    edge = await asyncio.to_thread(edge_lag)
    assert edge[("gcp_pubsub", "billing", "")]["lag"] == 240
    # One token for the whole poll; every metric asked for its own series.
    assert [r[1] for r in documented_api.requests].count("/token") == 1
    filters = [r[2]["filter"] for r in documented_api.requests if r[1].endswith("timeSeries")]
    assert len(filters) == 3 and all('resource.type="pubsub_subscription"' in f for f in filters)


# ---- Azure Service Bus --------------------------------------------------------------------

SAS_KEY = "c2hvcC1rZXkvd2l0aCtzeW1ib2xzPQ=="  # keys are base64 text, "/" and "+" included


def sas_checked(body: str, host: str, api_version: str = "2021-05"):
    """An answer that checks the shared access signature as Service Bus does."""
    import base64
    import hashlib
    import hmac
    from urllib.parse import parse_qsl, quote_plus, unquote

    def answer(path, query, headers, _):
        token = headers.get("Authorization", "")
        if not token.startswith("SharedAccessSignature "):
            return 401, "application/xml", "<Error><Code>401</Code></Error>"
        parts = dict(parse_qsl(token.removeprefix("SharedAccessSignature ")))
        resource = quote_plus(unquote(parts.get("sr", "")))
        expected = base64.b64encode(
            hmac.new(
                SAS_KEY.encode(), f"{resource}\n{parts.get('se')}".encode(), hashlib.sha256
            ).digest()
        ).decode()
        if (
            parts.get("skn") != "RootManageSharedAccessKey"
            or unquote(parts.get("sr", "")) != f"https://{host}/"
            or not hmac.compare_digest(parts.get("sig", ""), expected)
            or int(parts.get("se", 0)) < time.time()
            or query.get("api-version") != api_version
        ):
            return 401, "application/xml", "<Error><Code>401</Code><Detail>bad SAS</Detail></Error>"
        return 200, "application/atom+xml;type=feed;charset=utf-8", body

    return answer


def servicebus_url(api, key=SAS_KEY) -> str:
    from urllib.parse import quote

    return (
        f"servicebus://RootManageSharedAccessKey:{quote(key, safe='')}"
        f"@shop.servicebus.windows.net?endpoint_url={api.url}"
    )


async def test_servicebus_queues_and_subscriptions_with_dead_letters(
    lag_db, project, documented_api, client, viewer
):
    host = "shop.servicebus.windows.net"
    for path, name in (
        ("/$Resources/queues", "queues.xml"),
        ("/$Resources/topics", "topics.xml"),
        ("/orders/Subscriptions", "subscriptions-orders.xml"),
    ):
        documented_api.routes[path] = sas_checked(cloud_fixture("servicebus", name), host)
    url = servicebus_url(documented_api)
    assert SAS_KEY not in parse_broker(url).source
    await poll(url, project)

    payments = group_item(project.id, "servicebus", "payments", "", namespace="shop")
    assert payments["lag"] == 42
    (queue,) = payments["partitions"]
    assert (queue["active"], queue["dead_letter_depth"], queue["scheduled"]) == (42, 3, 2)
    assert queue["max_delivery_count"] == 10
    billing = group_item(project.id, "servicebus", "orders", "billing", namespace="shop")
    assert billing["lag"] == 17 and billing["partitions"][0]["dead_letter_depth"] == 4
    shipping = group_item(project.id, "servicebus", "orders", "shipping")
    assert shipping["lag"] == 0 and shipping["partitions"][0]["scheduled"] == 1
    assert set(await declared(client, viewer)) == {
        ("channel:servicebus:payments", "channel:servicebus:payments/$DeadLetterQueue",
         "dead_letter", ""),
        ("channel:servicebus:refunds", "channel:servicebus:poison", "dead_letter", ""),
        ("channel:servicebus:refunds", "channel:servicebus:payments", "publish", ""),
        ("channel:servicebus:orders",
         "channel:servicebus:orders/Subscriptions/billing/$DeadLetterQueue", "dead_letter",
         "billing"),
    }  # fmt: skip
    # Paged as the management API pages.
    assert all(r[2]["$top"] == "100" and r[2]["$skip"] == "0" for r in documented_api.requests)


async def test_servicebus_wrong_key_says_the_key_was_refused(lag_db, project, documented_api):
    documented_api.routes["/$Resources/queues"] = sas_checked(
        cloud_fixture("servicebus", "queues.xml"), "shop.servicebus.windows.net"
    )
    broker = parse_broker(servicebus_url(documented_api, key="bm90IHRoZSBrZXk="))
    assert not await poll_broker(broker, project.id, window=WINDOW)
    import psycopg

    from collector.db import conninfo

    with psycopg.connect(conninfo()) as conn:
        (error,) = conn.execute("SELECT error FROM brokers_brokerstate").fetchone()
    assert "refused the shared access key 'RootManageSharedAccessKey' (401" in error


# ---- Azure Event Hubs ---------------------------------------------------------------------

CONTAINER_SAS = "sv=2021-08-06&sr=c&sp=rl&se=2030-01-01T00%3A00%3A00Z&sig=c2FzLXNpZ25hdHVyZQ%3D%3D"


def eventhubs_routes(api):
    host = "shop.servicebus.windows.net"
    api.routes["/$Resources/EventHubs"] = sas_checked(
        cloud_fixture("eventhubs", "eventhubs.xml"), host, "2014-01"
    )
    api.routes["/orders/consumergroups/$Default/partitions"] = sas_checked(
        cloud_fixture("eventhubs", "partitions-orders.xml"), host, "2014-01"
    )

    def blobs(path, query, headers, _):
        if query.get("sig") != "c2FzLXNpZ25hdHVyZQ==" or query.get("sp") != "rl":
            return 403, "application/xml", "<Error><Code>AuthenticationFailed</Code></Error>"
        assert (query["restype"], query["comp"], query["include"]) == (
            "container",
            "list",
            "metadata",
        )
        assert query["prefix"] == "shop.servicebus.windows.net/orders/"
        return 200, "application/xml", cloud_fixture("eventhubs", "checkpoints.xml")

    api.routes["/eventhub-checkpoints"] = blobs


def eventhubs_url(api) -> str:
    from urllib.parse import quote

    container = f"{api.url}/eventhub-checkpoints?{CONTAINER_SAS}"
    return (
        f"eventhubs://RootManageSharedAccessKey:{quote(SAS_KEY, safe='')}"
        f"@shop.servicebus.windows.net?endpoint_url={api.url}"
        f"&checkpoints={quote(container, safe='')}"
    )


async def test_eventhubs_lag_per_consumer_group_and_partition_from_checkpoints(
    lag_db, project, documented_api
):
    eventhubs_routes(documented_api)
    broker = parse_broker(eventhubs_url(documented_api))
    # Neither the namespace key nor the storage SAS is shown.
    assert "sig=" not in broker.source and SAS_KEY not in broker.source
    assert "checkpoints=" in broker.source
    await poll(eventhubs_url(documented_api), project)

    default = group_item(project.id, "eventhubs", "orders", "$default", namespace="shop")
    assert default["lag"] == 120  # 1500 − 1380 on partition 0, caught up on 1
    assert [(p["partition"], p["lag"], p["end_offset"], p["committed_offset"])
            for p in default["partitions"]] == [("0", 120, 1500, 1380), ("1", 0, 900, 900)]  # fmt: skip
    assert default["partitions"][0]["last_enqueued_at"] == "2025-12-31T23:59:58.512Z"
    analytics = group_item(project.id, "eventhubs", "orders", "analytics")
    # Only partition 0 was ever checkpointed by this group.
    assert [(p["partition"], p["lag"]) for p in analytics["partitions"]] == [("0", 1460)]


async def test_eventhubs_without_a_checkpoint_container_says_what_is_missing(
    lag_db, project, documented_api
):
    eventhubs_routes(documented_api)
    url = eventhubs_url(documented_api).split("&checkpoints=")[0]
    assert not await poll_broker(parse_broker(url), project.id, window=WINDOW)
    import psycopg

    from collector.db import conninfo

    with psycopg.connect(conninfo()) as conn:
        (error,) = conn.execute("SELECT error FROM brokers_brokerstate").fetchone()
    assert "needs ?checkpoints=" in error


# ---- Azure Event Grid ---------------------------------------------------------------------

AZURE_SUB = "8f2d3c1a-0b4e-4c7a-9d61-2e5f7a9b0c11"


@pytest.fixture
def service_principal(monkeypatch, documented_api):
    """A service principal in the environment; its authority is the local server."""
    from urllib.parse import parse_qsl

    from collector.brokers.azure import eventgrid

    monkeypatch.setattr(eventgrid, "_tokens", {})
    monkeypatch.setenv("AZURE_TENANT_ID", "shop-tenant")
    monkeypatch.setenv("AZURE_CLIENT_ID", "eventscope-reader")
    monkeypatch.setenv("AZURE_CLIENT_SECRET", "s3cret-value")
    monkeypatch.setenv("AZURE_AUTHORITY_HOST", documented_api.url)

    def token(path, query, headers, body):
        form = dict(parse_qsl(body.decode()))
        if form != {
            "grant_type": "client_credentials",
            "client_id": "eventscope-reader",
            "client_secret": "s3cret-value",
            "scope": "https://management.azure.com/.default",
        }:
            return 401, "application/json", '{"error": "invalid_client"}'
        return 200, "application/json", cloud_fixture("eventgrid", "token.json")

    documented_api.routes["/shop-tenant/oauth2/v2.0/token"] = token


def eventgrid_routes(api):
    bearer = "Bearer eyJ0eXAiOiJKV1QiLCJhbGciOiJSUzI1NiJ9.local.signature"

    def arm(name, api_version):
        def answer(path, query, headers, _):
            if headers.get("Authorization") != bearer:
                return 401, "application/json", '{"error": {"code": "InvalidAuthenticationToken"}}'
            if query.get("api-version") != api_version:
                return 400, "application/json", '{"error": {"code": "InvalidApiVersion"}}'
            return 200, "application/json", cloud_fixture("eventgrid", name)

        return answer

    scope = f"/subscriptions/{AZURE_SUB}"
    topic = f"{scope}/resourceGroups/shop/providers/Microsoft.EventGrid/topics/orders"
    api.routes.update(
        {
            f"{scope}/providers/Microsoft.EventGrid/topics": arm("topics.json", "2022-06-15"),
            f"{scope}/providers/Microsoft.EventGrid/systemTopics": arm(
                "system-topics.json", "2022-06-15"
            ),
            f"{topic}/providers/Microsoft.EventGrid/eventSubscriptions": arm(
                "event-subscriptions-orders.json", "2022-06-15"
            ),
            f"{topic}/providers/Microsoft.Insights/metrics": arm(
                "metrics-orders.json", "2018-01-01"
            ),
        }
    )


async def test_eventgrid_subscriptions_are_routes_with_delivery_failures(
    lag_db, project, documented_api, service_principal, client, viewer
):
    eventgrid_routes(documented_api)
    await poll(f"eventgrid://{AZURE_SUB}?endpoint_url={documented_api.url}", project)

    edges = await declared(client, viewer)
    topic = "channel:eventgrid:orders"
    assert set(edges) == {
        (topic, "channel:servicebus:billing", "publish", "billing"),
        (topic, "channel:azure_blob:shopdeadletters/eventgrid-dead", "dead_letter", "billing"),
        (topic, "service:crm.example.com", "consume", "crm-webhook"),
        (topic, "service:SendReceipt", "consume", "receipts"),
    }
    billing = edges[(topic, "channel:servicebus:billing", "publish", "billing")]
    assert billing["DeliveryAttemptFailCount"] == 5  # 2 + 3 over the lookback
    assert billing["DeadLetteredCount"] == 1 and billing["DeliverySuccessCount"] == 120
    assert billing["dead_letter_destination"] == "shopdeadletters/eventgrid-dead"
    assert billing["retry_policy"] == {"maxDeliveryAttempts": 10, "eventTimeToLiveInMinutes": 60}
    webhook = edges[(topic, "service:crm.example.com", "consume", "crm-webhook")]
    assert webhook["DeliveryAttemptFailCount"] == 15 and webhook["endpoint_type"] == "WebHook"
    # Every metric named in one request per topic, per event subscription.
    (metrics,) = [r for r in documented_api.requests if r[1].endswith("/metrics")]
    assert metrics[2]["$filter"] == "EventSubscriptionName eq '*'"
    assert metrics[2]["metricnames"].split(",") == [
        "DeliveryAttemptFailCount", "DeadLetteredCount", "DroppedEventCount",
        "DeliverySuccessCount",
    ]  # fmt: skip


async def test_eventhubs_checkpoints_written_to_azurite_give_the_lag(
    lag_db, project, documented_api, azurite
):
    """The checkpoint store's blobs in a real Blob service (Azurite): written as
    the Event Hubs SDKs write them, listed by the reader with a list+read SAS."""
    import uuid
    from urllib.parse import quote

    import httpx

    from tests.brokers.azurite import account_sas

    container = f"checkpoints-{uuid.uuid4().hex[:8]}"
    writer_sas = account_sas("rwdlac")
    prefix = "shop.servicebus.windows.net/orders"
    blobs = {
        f"{prefix}/$default/checkpoint/0": {"offset": "200704", "sequencenumber": "1380"},
        f"{prefix}/$default/checkpoint/1": {"offset": "186112", "sequencenumber": "900"},
        f"{prefix}/$default/ownership/0": {"ownerid": "5b0c7c1e-4e2d-4ad6-9a34-0f2f1c0b7a10"},
        f"{prefix}/analytics/checkpoint/0": {"offset": "8192", "sequencenumber": "40"},
        # Another event hub's checkpoints share the container.
        "shop.servicebus.windows.net/refunds/$default/checkpoint/0": {"sequencenumber": "7"},
    }
    async with httpx.AsyncClient(headers={"x-ms-version": "2021-08-06"}) as storage:
        created = await storage.put(f"{azurite.url}/{container}?restype=container&{writer_sas}")
        assert created.status_code == 201, created.text
        for name, metadata in blobs.items():
            put = await storage.put(
                f"{azurite.url}/{container}/{quote(name, safe='/$')}?{writer_sas}",
                content=b"",
                headers={"x-ms-blob-type": "BlockBlob",
                         **{f"x-ms-meta-{k}": v for k, v in metadata.items()}},
            )  # fmt: skip
            assert put.status_code == 201, put.text
    eventhubs_routes(documented_api)

    def url_with(sas: str) -> str:
        checkpoints = f"{azurite.url}/{container}?{sas}"
        return (
            f"eventhubs://RootManageSharedAccessKey:{quote(SAS_KEY, safe='')}"
            f"@shop.servicebus.windows.net?endpoint_url={documented_api.url}"
            f"&checkpoints={quote(checkpoints, safe='')}"
        )

    await poll(url_with(account_sas("rl")), project)
    default = group_item(project.id, "eventhubs", "orders", "$default", namespace="shop")
    assert [(p["partition"], p["lag"]) for p in default["partitions"]] == [("0", 120), ("1", 0)]
    analytics = group_item(project.id, "eventhubs", "orders", "analytics")
    assert [(p["partition"], p["lag"]) for p in analytics["partitions"]] == [("0", 1460)]

    # A SAS that may read but not list is refused, and the reason is shown.
    refused = parse_broker(url_with(account_sas("r")))
    assert not await poll_broker(refused, project.id, window=WINDOW)
    import psycopg

    from collector.db import conninfo

    with psycopg.connect(conninfo()) as conn:
        errors = [e for (e,) in conn.execute("SELECT error FROM brokers_brokerstate")]
    assert any("needs the list and read permissions" in e for e in errors)
