"""GET /api/flow/series: an edge's or node's figures over time, per CONTRACT §7."""

import datetime as dt
import itertools
import time
from urllib.parse import urlencode

import pytest

from tests.dashboard.test_api_flow import stream
from tests.dashboard.world import store_order

pytestmark = pytest.mark.usefixtures("telemetry_db")

PUBLISH = {"source": "service:orders", "target": "channel:kafka:orders", "kind": "publish"}
PAYMENTS = {
    "source": "channel:kafka:orders",
    "target": "service:payments",
    "kind": "consume",
    "group": "payments",
}


def rfc3339(moment: dt.datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def series(client, subject: dict, **window):
    response = client.get(f"/api/flow/series?{urlencode({**subject, **window})}")
    assert response.status_code == 200, response.content
    return response.json()


def edge_count(client, subject, **window):
    edges = client.get(f"/api/flow?{urlencode(window)}").json()["edges"]
    key = (subject["source"], subject["target"], subject["kind"], subject.get("group", ""))
    found = [e["count"] for e in edges if (e["source"], e["target"], e["kind"], e["group"]) == key]
    return found[0] if found else 0


@pytest.mark.parametrize(
    ("window", "step"), [("15m", 60), ("1h", 60), ("6h", 300), ("24h", 900), ("7d", 3600)]
)
def test_the_bucket_follows_the_window(client, viewer, project, window, step):
    stream(project.id, first_s_ago=90, messages=30)
    client.force_login(viewer)
    answer = series(client, PUBLISH, window=window)
    assert answer["step_s"] == step
    spans = {"15m": 900, "1h": 3600, "6h": 6 * 3600, "24h": 86400, "7d": 7 * 86400}
    assert spans[window] // step <= len(answer["points"]) <= spans[window] // step + 2
    assert set(answer["points"][0]) == {"t", "count", "errors", "p50_ms", "p95_ms", "e2e_p95_ms"}
    assert sum(p["count"] for p in answer["points"]) == 30
    times = [dt.datetime.fromisoformat(p["t"]) for p in answer["points"]]
    assert all(b - a == dt.timedelta(seconds=step) for a, b in itertools.pairwise(times))


def test_points_add_up_to_the_edges_count_in_every_window(client, viewer, project):
    from dashboard.flow import hours as flowhours

    stream(project.id, first_s_ago=150, messages=40)
    for hours_ago in (2.5, 7, 30, 100):
        store_order(project.id, event_id=f"old-{hours_ago}",
                    start_ns=time.time_ns() - int(hours_ago * 3600 * 10**9))  # fmt: skip
    assert flowhours.compact_now() is not None
    client.force_login(viewer)
    until = dt.datetime.now(dt.UTC)
    for span in (dt.timedelta(hours=1), dt.timedelta(hours=6), dt.timedelta(days=1),
                 dt.timedelta(days=7)):  # fmt: skip
        window = {"since": rfc3339(until - span), "until": rfc3339(until)}
        for subject in (PUBLISH, PAYMENTS):
            points = series(client, subject, **window)["points"]
            assert sum(p["count"] for p in points) == edge_count(client, subject, **window)
    week = {"since": rfc3339(until - dt.timedelta(days=7)), "until": rfc3339(until)}
    assert sum(p["count"] for p in series(client, PUBLISH, **week)["points"]) == 44


def test_consume_points_carry_lag_and_latency(client, viewer, project):
    from collector.brokers import samples
    from collector.brokers.samples import Reading

    store_order(project.id)
    now = dt.datetime.now(dt.UTC).replace(second=30, microsecond=0)
    for minutes_ago, committed in ((6, 100), (4, 110), (2, 120)):
        t = now - dt.timedelta(minutes=minutes_ago)
        samples.store_sync(
            project.id,
            [Reading("kafka", "orders", "payments", "0", end_offset=300, committed_offset=committed,
                     time=t.timestamp())],
            "test",
            now=t,
        )  # fmt: skip
    client.force_login(viewer)
    answer = series(client, PAYMENTS, window="1h")
    by_time = {p["t"]: p for p in answer["points"]}
    minute = lambda ago: rfc3339((now - dt.timedelta(minutes=ago)).replace(second=0))  # noqa: E731
    assert [by_time[minute(ago)]["lag"] for ago in (6, 5, 4, 2)] == [200, None, 190, 180]
    assert by_time[minute(5)]["lag_seconds"] is None
    busy = [p for p in answer["points"] if p["count"]]
    assert len(busy) == 1 and busy[0]["p50_ms"] is not None and busy[0]["e2e_p95_ms"] >= 20
    assert sum(answer["histogram"]["duration"]) == 1
    assert len(answer["histogram"]["duration"]) == len(answer["histogram"]["bounds_ms"]) + 1
    # Publish edges have no lag.
    assert "lag" not in series(client, PUBLISH, window="1h")["points"][0]


def test_a_node_sums_the_edges_into_it(client, viewer, project):
    store_order(project.id)
    client.force_login(viewer)
    channel = series(client, {"node": "channel:kafka:orders"}, window="1h")["points"]
    assert sum(p["count"] for p in channel) == 1  # the publish into it
    email = series(client, {"node": "service:email"}, window="1h")["points"]
    assert (sum(p["count"] for p in email), sum(p["errors"] for p in email)) == (1, 1)
    # web only calls out: its outgoing edge.
    assert (
        sum(p["count"] for p in series(client, {"node": "service:web"}, window="1h")["points"]) == 1
    )


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("", "node"),
        ("source=a&target=b", "kind"),
        ("source=a&target=b&kind=sideways", "kind"),
        ("node=x&source=a", "either"),
        ("node=x&window=2y", "window"),
    ],
)
def test_bad_requests_say_what_is_wrong(client, viewer, query, message):
    client.force_login(viewer)
    response = client.get(f"/api/flow/series?{query}")
    assert response.status_code == 400
    assert message in response.json()["error"]
