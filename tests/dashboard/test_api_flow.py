"""GET /api/flow: the graph from the rollups, per CONTRACT §3."""

import datetime as dt
import time

import pytest

from tests.dashboard.world import store_order

pytestmark = pytest.mark.usefixtures("telemetry_db")


def test_flow_has_publish_consume_and_call_edges_with_figures(client, viewer, project):
    store_order(project.id)
    client.force_login(viewer)
    response = client.get("/api/flow?window=1h")
    assert response.status_code == 200
    graph = response.json()
    nodes = {n["id"]: n for n in graph["nodes"]}
    assert nodes["service:orders"] == {
        "id": "service:orders",
        "kind": "service",
        "name": "orders",
        "system": "",
        "label": "orders",
    }
    assert nodes["channel:kafka:orders"] == {
        "id": "channel:kafka:orders",
        "kind": "channel",
        "name": "orders",
        "system": "kafka",
        "label": "orders",
    }
    edges = {(e["source"], e["target"], e["kind"], e["group"]): e for e in graph["edges"]}
    publish = edges[("service:orders", "channel:kafka:orders", "publish", "")]
    assert publish["count"] == 1 and publish["errors"] == 0
    assert publish["p50_ms"] is not None and publish["p95_ms"] <= 10
    email = edges[("channel:kafka:orders", "service:email", "consume", "email")]
    assert email["count"] == 1 and email["errors"] == 1
    payments = edges[("channel:kafka:orders", "service:payments", "consume", "payments")]
    assert payments["errors"] == 0
    assert payments["e2e_p95_ms"] is not None and 20 <= payments["e2e_p95_ms"] <= 100
    # One message, seen in one minute: the rate divides from that minute's
    # start, not from the start of the hour-long window.
    first = dt.datetime.fromisoformat(payments["first_seen"])
    assert payments["last_seen"] == payments["first_seen"]
    ran = (dt.datetime.now(dt.UTC) - first).total_seconds()
    assert payments["rate_per_s"] == pytest.approx(1 / ran, rel=0.1)
    assert payments["rate_now_per_s"] == pytest.approx(1 / 300, rel=0.01)
    call = edges[("service:web", "service:orders", "call", "")]
    assert call["count"] == 1
    assert set(publish) == {
        "source",
        "target",
        "kind",
        "group",
        "count",
        "rate_per_s",
        "rate_now_per_s",
        "first_seen",
        "last_seen",
        "errors",
        "deadlettered",
        "retries",
        "p50_ms",
        "p95_ms",
        "e2e_p95_ms",
        "lag",
        "lag_seconds",
        "lag_status",
        "declared",
        "delivery",
    }
    assert publish["declared"] is None  # seen in spans; no system declares it
    assert publish["delivery"] is None
    assert payments["delivery"] == dict.fromkeys(
        ("duplicate", "missing", "late", "out_of_order", "poison"), 0
    )


def test_flow_window_excludes_older_traffic(client, viewer, project):
    import time

    store_order(project.id, start_ns=time.time_ns() - 3 * 3600 * 10**9)
    client.force_login(viewer)
    assert client.get("/api/flow?window=1h").json()["edges"] == []
    assert client.get("/api/flow?window=6h").json()["edges"] != []


def test_flow_accepts_since_until_and_rejects_bad_windows(client, viewer, project):
    client.force_login(viewer)
    ok = client.get("/api/flow?since=2026-01-01T00:00:00Z&until=2026-01-01T01:00:00Z")
    assert ok.status_code == 200 and ok.json()["edges"] == []
    bad = client.get("/api/flow?window=2y")
    assert bad.status_code == 400 and "window" in bad.json()["error"]
    backwards = client.get("/api/flow?since=2026-01-02T00:00:00Z&until=2026-01-01T00:00:00Z")
    assert backwards.status_code == 400


def test_flow_works_with_a_read_token_and_not_an_ingest_token(
    client, project, read_token, ingest_token
):
    store_order(project.id)
    ok = client.get("/api/flow", HTTP_AUTHORIZATION=f"Bearer {read_token}")
    assert ok.status_code == 200 and ok.json()["edges"]
    assert client.get("/api/flow", HTTP_AUTHORIZATION=f"Bearer {ingest_token}").status_code == 401
    assert client.get("/api/flow").status_code == 401


@pytest.fixture
def busy_and_quiet(project):
    """Three orders through "orders", one through "refunds": their edges differ in count."""
    for i in range(3):
        store_order(project.id, event_id=f"evt-busy-{i}")
    store_order(
        project.id,
        event_id="evt-quiet",
        names={"orders": "refunder", "payments": "ledger", "email": "notify", "topic": "refunds"},
    )


def test_flow_keeps_the_busiest_edges_and_says_when_it_cut(client, viewer, busy_and_quiet):
    client.force_login(viewer)
    whole = client.get("/api/flow?window=1h").json()
    assert whole["truncated"] is False and len(whole["edges"]) == 10
    cut = client.get("/api/flow?window=1h&limit=4").json()
    assert cut["truncated"] is True and len(cut["edges"]) == 4
    assert {e["count"] for e in cut["edges"]} == {3}  # only the busy journey's edges
    touched = {e["source"] for e in cut["edges"]} | {e["target"] for e in cut["edges"]}
    assert {n["id"] for n in cut["nodes"]} == touched  # no node without a kept edge
    assert "channel:kafka:refunds" not in touched
    for limit in ("0", "2001", "many"):
        response = client.get(f"/api/flow?limit={limit}")
        assert response.status_code == 400 and "limit" in response.json()["error"]


def test_flow_page_is_bounded_the_same_way(client, viewer, busy_and_quiet):
    client.force_login(viewer)
    html = client.get("/?window=1h&limit=4").content.decode()
    assert html.count("<tr data-edge=") == 4
    assert "the busiest; more are left out" in html
    assert "ws/flow/?window=1h&amp;project=shop&amp;limit=4" in html
    assert "more are left out" not in client.get("/?window=1h").content.decode()


def test_flow_edges_link_to_their_failures_and_lag_in_the_same_window(client, viewer, project):
    store_order(project.id)
    client.force_login(viewer)
    html = client.get("/?window=6h").content.decode()
    email = html[html.index('data-edge="channel:kafka:orders|service:email|consume|email"') :]
    email = email[: email.index("</tr>")]
    assert (
        'href="/failures/?window=6h&amp;project=shop&amp;channel=orders&amp;system=kafka'
        '&amp;service=email&amp;group=email"' in email
    )
    assert 'href="/lag/kafka/orders/email/?window=6h&amp;project=shop"' in email
    custom = client.get("/?since=2026-01-01T00:00:00Z&until=2026-01-01T06:00:00Z")
    assert (
        'data-search-url="/search/?since=2026-01-01T00%3A00%3A00Z'
        '&amp;until=2026-01-01T06%3A00%3A00Z&amp;project=shop"'
    ) in custom.content.decode()


def _page_graph(html: str) -> dict:
    import json

    start = html.index('id="flow-data" type="application/json">') + len(
        'id="flow-data" type="application/json">'
    )
    return json.loads(html[start : html.index("</script>", start)])


def test_the_pages_graph_carries_the_links_the_script_shows(client, viewer, project):
    # static/js/flow.js draws its menus and table from these; it builds no URL itself.
    store_order(project.id)
    client.force_login(viewer)
    graph = _page_graph(client.get("/?window=6h").content.decode())
    email = next(e for e in graph["edges"] if e["target"] == "service:email")
    assert email["links"] == [
        {
            "label": "failures",
            "url": "/failures/?window=6h&project=shop&channel=orders&system=kafka"
            "&service=email&group=email",
        },
        {"label": "lag", "url": "/lag/kafka/orders/email/?window=6h&project=shop"},
    ]
    orders = next(n for n in graph["nodes"] if n["id"] == "channel:kafka:orders")
    assert orders["links"][0] == {
        "label": "failures",
        "url": "/failures/?window=6h&project=shop&channel=orders&system=kafka",
    }
    assert {
        "label": "lag of email",
        "url": "/lag/kafka/orders/email/?window=6h&project=shop",
    } in orders["links"]
    service = next(n for n in graph["nodes"] if n["id"] == "service:email")
    assert service["links"] == [
        {"label": "failures", "url": "/failures/?window=6h&project=shop&service=email"},
        {"label": "recent traces", "url": "/search/?window=6h&project=shop&service=email"},
    ]
    assert {
        "label": "recent traces",
        "url": "/search/?window=6h&project=shop&channel=orders&system=kafka",
    } in orders["links"]
    # The API's graph is the contract's: no links.
    assert all("links" not in e for e in client.get("/api/flow?window=6h").json()["edges"])


def test_a_rabbitmq_queue_links_to_its_lag_page_in_the_default_vhost(db):
    from dashboard.links import lag_url, with_query

    url = lag_url("rabbitmq", "payments", "")
    assert url == "/lag/rabbitmq/payments/-/"
    assert with_query(url, {"window": "1h"}) == "/lag/rabbitmq/payments/-/?window=1h"
    other = lag_url("rabbitmq", "payments", "", namespace="shop")
    assert with_query(other, {"window": "1h"}) == "/lag/rabbitmq/payments/-/?vhost=shop&window=1h"


def test_consume_edges_carry_their_groups_present_lag(client, viewer, project):
    from collector.brokers import samples
    from collector.brokers.samples import Reading

    store_order(project.id)
    samples.store_sync(
        project.id, [Reading("kafka", "orders", "payments", "0", 1_250, 1_000)], "test"
    )
    client.force_login(viewer)
    edges = {
        (e["source"], e["target"], e["kind"], e["group"]): e
        for e in client.get("/api/flow?window=1h").json()["edges"]
    }
    payments = edges[("channel:kafka:orders", "service:payments", "consume", "payments")]
    assert (payments["lag"], payments["lag_status"]) == (250, "ok")
    email = edges[("channel:kafka:orders", "service:email", "consume", "email")]
    assert (email["lag"], email["lag_seconds"], email["lag_status"]) == (None, None, None)
    publish = edges[("service:orders", "channel:kafka:orders", "publish", "")]
    assert publish["lag_status"] is None
    page = client.get("/?window=1h").content.decode()
    assert "250 msg · ok" in page


def test_lag_links_open_for_channels_and_groups_named_with_dots(client, viewer, project):
    from dashboard.links import lag_url

    for channel, group in (("..", "."), ("orders/../x", "..")):
        url = lag_url("kafka", channel, group)
        assert url is not None and "/../" not in url and not url.endswith("/./")
        client.force_login(viewer)
        # The page resolves the names back (an unknown group is a 404, not a 400 or 500).
        assert client.get(url).status_code == 404
    assert lag_url("..", "orders", "g") is None


# ---- honest rates: divide by the time a stream ran, not by the whole window ----------


def stream(project_id, *, first_s_ago, messages, topic="orders", service="orders"):
    """`messages` publishes one second apart, the first `first_s_ago` seconds ago,
    sent as OTLP through the real decoder, normaliser and writer."""
    from tests.dashboard.world import (
        KIND_PRODUCER,
        messaging,
        new_span_id,
        new_trace_id,
        request,
        span,
        store,
        traces_batch,
    )

    start = time.time_ns() - first_s_ago * 10**9
    spans = [
        span(
            new_trace_id(),
            new_span_id(),
            f"{topic} publish",
            KIND_PRODUCER,
            start + i * 10**9,
            2,
            attrs=messaging("kafka", topic, "send"),
        )  # fmt: skip
        for i in range(messages)
    ]
    store(traces_batch(request({service: spans}), project_id))
    return start


def minute_of(ns: int) -> str:
    moment = dt.datetime.fromtimestamp(ns // 10**9 // 60 * 60, dt.UTC)
    return moment.isoformat().replace("+00:00", "Z")


def publish_edge(client, window, topic="orders", service="orders"):
    edges = client.get(f"/api/flow?window={window}").json()["edges"]
    (edge,) = [
        e
        for e in edges
        if e["target"] == f"channel:kafka:{topic}" and e["source"] == f"service:{service}"
    ]
    return edge


def test_a_steady_stream_reads_its_rate_whatever_the_window(client, viewer, project):
    start = stream(project.id, first_s_ago=120, messages=120)
    client.force_login(viewer)
    for window in ("15m", "1h", "24h", "7d"):
        edge = publish_edge(client, window)
        assert edge["count"] == 120
        assert 0.8 <= edge["rate_per_s"] <= 1.2, (window, edge)
        assert edge["rate_now_per_s"] == pytest.approx(120 / 300, abs=0.01)
        assert edge["first_seen"] == minute_of(start)
        assert edge["last_seen"] == minute_of(start + 119 * 10**9)


def test_a_stopped_stream_reads_zero_now_and_its_average_since_it_began(client, viewer, project):
    start = stream(project.id, first_s_ago=20 * 60, messages=60)
    client.force_login(viewer)
    edge = publish_edge(client, "1h")
    assert edge["rate_now_per_s"] == 0
    assert (edge["first_seen"], edge["last_seen"]) == (
        minute_of(start),
        minute_of(start + 59 * 10**9),
    )
    # It divides up to now: 60 messages over the ~20 minutes since it began.
    began = dt.datetime.fromisoformat(edge["first_seen"])
    ran = (dt.datetime.now(dt.UTC) - began).total_seconds()
    assert edge["rate_per_s"] == pytest.approx(60 / ran, rel=0.05)
    assert edge["rate_per_s"] < 0.06


def test_long_windows_from_hourly_rollups_know_the_first_and_last_minute(client, viewer, project):
    from dashboard.flow import hours as flowhours

    start = stream(project.id, first_s_ago=5 * 3600, messages=90)
    stream(project.id, first_s_ago=100, messages=10, topic="fresh")
    assert flowhours.compact_now() is not None
    client.force_login(viewer)
    edge = publish_edge(client, "7d")
    assert (edge["first_seen"], edge["last_seen"]) == (
        minute_of(start),
        minute_of(start + 89 * 10**9),
    )
    assert edge["rate_now_per_s"] == 0
    assert 0.8 * 90 / (5 * 3600) <= edge["rate_per_s"] <= 1.2 * 90 / (5 * 3600)
    assert publish_edge(client, "7d", topic="fresh")["rate_now_per_s"] == pytest.approx(
        10 / 300, abs=0.001
    )
