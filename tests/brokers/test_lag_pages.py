"""GET /api/lag, the lag pages and their live updates."""

import asyncio
import datetime as dt

import pytest
from channels.testing import WebsocketCommunicator

from collector.brokers import samples
from collector.brokers.offsets import rabbitmq_reading
from collector.brokers.samples import Reading
from dashboard.lag.views import LagConsumer
from dashboard.live import listener

NOW = dt.datetime.now(dt.UTC).replace(microsecond=0)


def store(project, readings, seconds_ago=0, source="test"):
    return samples.store_sync(
        project.id, readings, source, now=NOW - dt.timedelta(seconds=seconds_ago)
    )


@pytest.fixture
def groups(lag_db, project, other_project, settings):
    """A healthy Kafka group, a stalled RabbitMQ queue, and another project's group."""
    # Two minutes of samples fill a 200-second window enough to be judged.
    settings.LAG_WINDOW_SECONDS = 200
    for age, committed in ((120, 100), (60, 150), (0, 200)):
        store(
            project,
            [
                Reading(
                    "kafka",
                    "orders",
                    "billing",
                    "0",
                    end_offset=220,
                    committed_offset=committed,
                    time=(NOW - dt.timedelta(seconds=age)).timestamp(),
                ),
                Reading(
                    "kafka",
                    "orders",
                    "billing",
                    "1",
                    end_offset=230,
                    committed_offset=committed,
                    time=(NOW - dt.timedelta(seconds=age)).timestamp(),
                ),
            ],
            seconds_ago=age,
        )
    for age in (120, 60, 0):
        t = (NOW - dt.timedelta(seconds=age)).timestamp()
        store(
            project,
            [
                Reading(
                    "rabbitmq",
                    "payments",
                    "",
                    namespace="/",
                    lag=40,
                    committed_offset=7,
                    end_offset=47,
                    active_at=t,
                    time=t,
                    depth_based=True,
                )
            ],
            seconds_ago=age,
        )
    store(other_project, [Reading("redis", "secret-stream", "spy", lag=9, end_offset=9)])


def test_the_api_needs_a_session_or_a_read_token(client, groups, read_token):
    assert client.get("/api/lag").status_code == 401
    response = client.get("/api/lag", HTTP_AUTHORIZATION=f"Bearer {read_token}")
    assert response.status_code == 200


def test_the_api_lists_groups_worst_first_with_partitions(client, groups, viewer):
    client.force_login(viewer)
    body = client.get("/api/lag").json()
    assert [(i["system"], i["channel"], i["status"]) for i in body["items"]] == [
        ("rabbitmq", "payments", "stalled"),
        ("kafka", "orders", "ok"),
    ]
    kafka = body["items"][1]
    assert kafka["lag"] == 50  # catching up: 20 + 30 left of 120 + 130
    assert [p["partition"] for p in kafka["partitions"]] == ["0", "1"]
    assert kafka["partitions"][1]["end_offset"] == 230
    assert kafka["lag_seconds_method"] == "interpolated"
    assert kafka["updated_at"].endswith("Z")
    assert body["next_cursor"] is None
    # another project's groups never show
    assert "secret-stream" not in str(body)


def test_the_api_filters_and_paginates(client, groups, viewer):
    client.force_login(viewer)
    only = client.get("/api/lag?system=kafka").json()["items"]
    assert [i["channel"] for i in only] == ["orders"]
    assert client.get("/api/lag?status=stalled,stopped").json()["items"][0]["channel"] == "payments"
    first = client.get("/api/lag?limit=1").json()
    assert len(first["items"]) == 1 and first["next_cursor"]
    second = client.get(f"/api/lag?limit=1&cursor={first['next_cursor']}").json()
    assert second["items"][0]["channel"] == "orders" and second["next_cursor"] is None


def test_pages_follow_a_stable_order_while_figures_change(client, lag_db, project, viewer):
    for n in range(5):
        store(project, [Reading("redis", f"s{n}", "g", lag=n + 1, end_offset=10)])
    client.force_login(viewer)
    first = client.get("/api/lag?limit=2").json()
    assert [i["channel"] for i in first["items"]] == ["s0", "s1"]
    # Between two pages the figures move: s4 gets far behind, s0 catches up.
    store(project, [Reading("redis", "s4", "g", lag=9000, end_offset=9000)])
    store(project, [Reading("redis", "s0", "g", lag=0, end_offset=10)])
    seen = [i["channel"] for i in first["items"]]
    cursor = first["next_cursor"]
    while cursor:
        body = client.get(f"/api/lag?limit=2&cursor={cursor}").json()
        seen += [i["channel"] for i in body["items"]]
        cursor = body["next_cursor"]
    # every group once, none skipped or repeated
    assert seen == ["s0", "s1", "s2", "s3", "s4"]


def test_the_api_filters_by_vhost(client, lag_db, project, viewer):
    store(project, [rabbitmq_reading("/", "q", 1, 0), rabbitmq_reading("shop", "q", 2, 0)])
    client.force_login(viewer)
    items = client.get("/api/lag?system=rabbitmq&vhost=shop").json()["items"]
    assert [(i["vhost"], i["lag"]) for i in items] == [("shop", 2)]


def _cursor(value) -> str:
    from dashboard.query_params import encode_cursor

    return encode_cursor(value)


@pytest.mark.parametrize(
    "query, message",
    [
        ("status=late", "status='late'"),
        ("limit=0", "limit must be"),
        ("cursor=%%%", "cursor"),
        (f"cursor={_cursor(True)}", "cursor is not one this API returned"),
        (f"cursor={_cursor(2)}", "cursor is not one this API returned"),
        (f"cursor={_cursor([True, 'a', 'b', 'c', 'd'])}", "cursor is not one"),
        (f"cursor={_cursor([-99, 'a', 'b', 'c', 'd'])}", "cursor is not one"),
        (f"cursor={_cursor([0, 'a', 'b', 'c', 5])}", "cursor is not one"),
    ],
)
def test_bad_api_parameters_are_400_with_a_message(client, groups, viewer, query, message):
    client.force_login(viewer)
    response = client.get(f"/api/lag?{query}")
    assert response.status_code == 400
    assert message in response.json()["error"]


def test_the_page_shows_groups_by_severity_with_reasons(client, groups, viewer):
    client.force_login(viewer)
    page = client.get("/lag/").content.decode()
    assert page.index("payments") < page.index("orders")
    assert "consumer active" in page and "stayed at 7" in page
    assert 'ws-connect="/ws/lag/?project=shop"' in page
    assert "uPlot-1.6.32.iife.min.js" in page
    assert "secret-stream" not in page


def test_an_unreachable_broker_is_named_on_the_page(client, lag_db, project, viewer):
    import psycopg

    from collector.db import conninfo

    with psycopg.connect(conninfo()) as conn, conn.cursor() as cursor:
        samples.broker_failed(cursor, project.id, "nats://10.1.1.1:4222", "nats", "timed out")
    client.force_login(viewer)
    page = client.get("/lag/").content.decode()
    assert "nats://10.1.1.1:4222" in page and "unreachable since" in page
    body = client.get("/api/lag").json()
    assert body["brokers"][0]["source"] == "nats://10.1.1.1:4222"


def test_the_group_page_shows_partitions_history_and_failure_links(client, groups, viewer):
    client.force_login(viewer)
    response = client.get("/lag/kafka/orders/billing/?window=15m")
    assert response.status_code == 200
    page = response.content.decode()
    assert 'id="lag-partitions"' in page
    # a partition opens in the same window
    assert 'href="?window=15m&amp;partition=1"' in page
    assert "channel=orders" in page and "group=billing" in page
    assert 'data-series="{&quot;t&quot;: [' in page
    queue = client.get("/lag/rabbitmq/payments/-/")
    assert queue.status_code == 200 and b"stalled" in queue.content
    assert client.get("/lag/kafka/orders/nobody/").status_code == 404
    assert client.get("/lag/kafka/orders/billing/?window=2y").status_code == 400


def test_hostile_names_are_escaped(client, lag_db, project, viewer):
    store(project, [Reading("kafka", "<script>alert(1)</script>", "g", "0", lag=1, end_offset=2)])
    client.force_login(viewer)
    page = client.get("/lag/").content.decode()
    assert "<script>alert(1)</script>" not in page
    assert "&lt;script&gt;" in page


@pytest.mark.usefixtures("lag_db", "consumer_connections")
async def test_new_samples_are_pushed_to_the_open_page(groups, project, viewer):
    communicator = WebsocketCommunicator(LagConsumer.as_asgi(), "/ws/lag/?project=shop")
    communicator.scope["user"] = viewer
    connected, _ = await communicator.connect()
    assert connected
    try:
        first = await communicator.receive_from(timeout=5)
        assert 'id="lag-live" hx-swap-oob="true"' in first and "payments" in first
        await asyncio.wait_for(listener.connected.wait(), 5)
        await asyncio.to_thread(
            samples.store_sync,
            project.id,
            [Reading("redis", "invoices", "mailer", lag=1234, end_offset=1234)],
            "test",
        )
        pushed = await communicator.receive_from(timeout=5)
        assert "invoices" in pushed and "1234" in pushed
    finally:
        await communicator.disconnect()
        await listener.stop()


@pytest.mark.usefixtures("lag_db", "consumer_connections")
async def test_the_group_page_is_pushed_its_own_fragment(groups, project, viewer):
    query = "project=shop&system=kafka&channel=orders&group=billing&window=15m"
    communicator = WebsocketCommunicator(LagConsumer.as_asgi(), f"/ws/lag/?{query}")
    communicator.scope["user"] = viewer
    connected, _ = await communicator.connect()
    assert connected
    try:
        first = await communicator.receive_from(timeout=5)
        assert 'id="lag-group-live" hx-swap-oob="true"' in first
        assert 'id="lag-partitions"' in first and "payments" not in first
    finally:
        await communicator.disconnect()
        await listener.stop()


def test_a_group_not_reported_for_a_while_is_marked_stale(client, lag_db, project, viewer):
    store(project, [Reading("nats", "ORDERS", "mailer", lag=4)], seconds_ago=3600)
    client.force_login(viewer)
    page = client.get("/lag/").content.decode()
    assert "stale" in page


def test_queues_of_the_same_name_in_two_vhosts_are_two_groups(client, lag_db, project, viewer):
    # Queue "a/b" in vhost "/" and queue "b" in vhost "a" were both named "a/b".
    store(project, [rabbitmq_reading("/", "a/b", 3, 0), rabbitmq_reading("a", "b", 5, 0)])
    client.force_login(viewer)
    items = client.get("/api/lag").json()["items"]
    assert sorted((i["vhost"], i["channel"], i["lag"]) for i in items) == [
        ("/", "a/b", 3),
        ("a", "b", 5),
    ]
    assert all(i["account"] is None for i in items)
    overview = client.get("/lag/").content.decode()
    assert 'href="/lag/rabbitmq/a%252Fb/-/"' in overview
    assert 'href="/lag/rabbitmq/b/-/?vhost=a"' in overview and "vhost a" in overview
    slash = client.get("/lag/rabbitmq/a%252Fb/-/").content.decode()
    assert "<strong data-lag>3</strong>" in slash and "vhost /" in slash
    in_a = client.get("/lag/rabbitmq/b/-/?vhost=a").content.decode()
    assert "<strong data-lag>5</strong>" in in_a and 'id="group-namespace">vhost a<' in in_a
    assert client.get("/lag/rabbitmq/b/-/").status_code == 404  # no queue "b" in vhost "/"


def test_failures_of_a_queue_are_found_by_the_name_spans_give_it(client, lag_db, project, viewer):
    store(project, [rabbitmq_reading("shop", "payments", 3, 0)])
    client.force_login(viewer)
    page = client.get("/lag/rabbitmq/payments/-/?vhost=shop&window=6h").content.decode()
    link = page.split('id="failures-link"')[0].rsplit('href="', 1)[1].split('"')[0]
    assert "channel=payments&amp;" in link and "shop" not in link


@pytest.mark.parametrize(
    "channel, group",
    [("orders/eu", "team/app"), ("50% off", "-"), ("..", "."), ("a%2Fb", "ünïcode grp")],
)
def test_names_with_any_characters_open_their_page(client, lag_db, project, viewer, channel, group):
    store(project, [Reading("kafka", channel, group, "0", end_offset=9, committed_offset=4)])
    client.force_login(viewer)
    overview = client.get("/lag/").content.decode()
    url = overview.split('<td><a href="')[1].split('"')[0].replace("&amp;", "&")
    page = client.get(url)
    assert page.status_code == 200, url
    assert "<strong data-lag>5</strong>" in page.content.decode()


def test_a_hand_typed_path_with_slashes_finds_its_group(client, lag_db, project, viewer):
    store(
        project, [Reading("kafka", "orders/eu", "team/app", "0", end_offset=9, committed_offset=4)]
    )
    client.force_login(viewer)
    assert client.get("/lag/kafka/orders/eu/team/app/").status_code == 200
    assert client.get("/lag/kafka/orders/eu/team/nobody/").status_code == 404
    assert client.get("/lag/rabbitmq/nochannel").status_code == 404


def _insert_stages(project, rows):
    """Stage rows (seconds ago, stage, role, service, channel, group, duration_ms, trace id)
    into collector_stage, as the writer stores a span's stage."""
    import psycopg

    from collector import partitions
    from collector.db import conninfo

    with psycopg.connect(conninfo()) as conn, conn.cursor() as cursor:
        times = [NOW - dt.timedelta(seconds=r[0]) for r in rows]
        partitions.ensure(cursor, sorted({t.date() for t in times}))
        for n, (t, row) in enumerate(zip(times, rows, strict=True)):
            _, stage, role, service, channel, group, duration_ms, trace = row
            cursor.execute(
                """
                INSERT INTO collector_stage (project_id, time, dedupe_key, stage, role, system,
                    channel, service, consumer_group, trace_id, duration_ms, e2e_ms, origin,
                    error)
                VALUES (%s, %s, %s, %s, %s, 'kafka', %s, %s, %s, %s, %s, %s, 1, %s)
                """,
                [
                    project.id,
                    t,
                    f"stage-{n}".encode(),
                    stage,
                    role,
                    channel,
                    service,
                    group,
                    bytes.fromhex(trace),
                    duration_ms,
                    duration_ms + 50,
                    "card declined" if stage == "failed" else None,
                ],
            )


def test_the_group_page_lists_its_slowest_consumer_stages_with_their_traces(
    client, groups, project, viewer
):
    trace = "{:032x}".format
    rows = [
        (60 + n, "processed", "consumer", "billing-svc", "orders", "billing", 10.0 + n, trace(n))
        for n in range(25)
    ]
    rows += [
        (30, "failed", "consumer", "billing-svc", "orders", "billing", 900.0, trace(100)),
        (40, "processed", "consumer", "billing-svc", "orders", "billing", 1200.0, trace(101)),
        # not this group's consumer work: a publish, another group, before the window
        (50, "published", "producer", "shop", "orders", "", 5000.0, trace(102)),
        (50, "processed", "consumer", "mailer", "orders", "mail", 4000.0, trace(103)),
        (7200, "processed", "consumer", "billing-svc", "orders", "billing", 3000.0, trace(104)),
    ]
    _insert_stages(project, rows)
    client.force_login(viewer)
    page = client.get("/lag/kafka/orders/billing/?window=1h").content.decode()
    table = page.split('id="lag-slowest"')[1].split("</table>")[0]
    assert table.count("<tr data-stage=") == 20  # bounded
    assert table.index(f'href="/traces/{trace(101)}"') < table.index(f'href="/traces/{trace(100)}"')
    slowest = table.split("<tr data-stage=")[1]
    assert ">billing-svc<" in slowest and ">1200 ms<" in slowest and ">1250 ms<" in slowest
    assert ">failed<" in table and "card declined" in table
    for other in (102, 103, 104):
        assert trace(other) not in table
    # the twenty longest: 1200, 900 and the 18 slowest of the rest (34 ms down to 17 ms)
    assert f"/traces/{trace(7)}" in table and f"/traces/{trace(6)}" not in table


def test_a_nul_character_in_a_group_path_is_not_found(client, viewer):
    client.force_login(viewer)
    for url in (
        "/lag/kafka/or%00ders/g/",
        "/lag/kafka/orders/g%00/",
        "/lag/rabbitmq/q/-/?vhost=%00",
    ):
        assert client.get(url).status_code == 404, url


# ---- htmx: the filter form and the pager ask for the results only -------------


def test_an_htmx_request_gets_only_the_lag_results_and_a_plain_one_the_page(client, groups, viewer):
    client.force_login(viewer)
    page = client.get("/lag/").content.decode()
    partial = client.get("/lag/", HTTP_HX_REQUEST="true").content.decode()
    assert page.lstrip().startswith("<!doctype html>") and 'id="lag-filters"' in page
    assert partial.lstrip().startswith('<div hx-ext="ws" ws-connect="/ws/lag/?')
    assert 'id="lag-results"' in partial and "billing" in partial and "payments" in partial
    assert "<html" not in partial and 'id="lag-filters"' not in partial
    form = page.split('id="lag-filters"', 1)[1].split(">", 1)[0]
    assert 'hx-get="/lag/"' in form and 'hx-push-url="true"' in form


def test_the_lag_list_filters_by_status_and_name(client, groups, viewer):
    client.force_login(viewer)
    stalled = client.get("/lag/?status=stalled", HTTP_HX_REQUEST="true").content.decode()
    assert "payments" in stalled and "billing" not in stalled
    assert "status=stalled" in stalled.split('"', 4)[3]  # the live connection keeps it
    named = client.get("/lag/?q=BILL").content.decode()
    assert "billing" in named and ">payments<" not in named
    bad = client.get("/lag/?status=sleepy")
    assert (
        bad.status_code == 400
        and "status=&#x27;sleepy&#x27;: expected one or more of" in bad.content.decode()
    )


def test_the_lag_list_pages_with_real_links(client, groups, viewer, monkeypatch):
    from dashboard.lag import views

    monkeypatch.setattr(views, "GROUPS_PER_PAGE", 1)
    client.force_login(viewer)
    first = client.get("/lag/").content.decode()
    nxt = first.split('id="lag-next"', 1)[0].rsplit("<a ", 1)[1]
    href = nxt.split('href="', 1)[1].split('"', 1)[0].replace("&amp;", "&")
    assert "page=2" in href and 'hx-push-url="true"' in nxt and "hx-get=" in nxt
    second = client.get(href, HTTP_HX_REQUEST="true").content.decode()
    worst_first = ("payments", "billing")  # the stalled queue, then the healthy group
    assert worst_first[0] in first.split('id="lag-groups"', 1)[1]
    assert worst_first[1] in second and worst_first[0] not in second.split("<tbody>", 1)[1]
    assert 'id="lag-previous"' in second and 'id="lag-next"' not in second
