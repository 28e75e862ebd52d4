"""GET /api/failures: newest first, filters, keyset pages, and grouping by error."""

import time

import pytest

from tests.dashboard.world import order_journey, store, traces_batch

pytestmark = pytest.mark.usefixtures("telemetry_db")


@pytest.fixture
def five_failures(project):
    now = time.time_ns()
    batches = []
    for i in range(5):
        error = "SMTP 550" if i < 3 else "template missing"
        document, _ = order_journey(
            event_id=f"evt-{i}", start_ns=now - (10 - i) * 10**9, email_error=error
        )
        batches.append(traces_batch(document, project.id))
    store(*batches)


def test_failures_are_newest_first_with_the_contract_fields(client, viewer, five_failures):
    client.force_login(viewer)
    body = client.get("/api/failures?window=1h").json()
    items = body["items"]
    assert [i["event_id"] for i in items] == [f"evt-{i}" for i in (4, 3, 2, 1, 0)]
    assert set(items[0]) >= {
        "event_id",
        "trace_id",
        "service",
        "channel",
        "system",
        "group",
        "stage",
        "error",
        "time",
    }
    assert items[0]["service"] == "email" and items[0]["channel"] == "orders"
    assert items[0]["system"] == "kafka" and items[0]["stage"] == "failed"
    assert body["next_cursor"] is None


def test_failures_paginate_with_a_cursor_without_repeats(client, viewer, five_failures):
    client.force_login(viewer)
    first = client.get("/api/failures?limit=2").json()
    second = client.get(f"/api/failures?limit=2&cursor={first['next_cursor']}").json()
    third = client.get(f"/api/failures?limit=2&cursor={second['next_cursor']}").json()
    seen = [i["event_id"] for page in (first, second, third) for i in page["items"]]
    assert seen == ["evt-4", "evt-3", "evt-2", "evt-1", "evt-0"]
    assert third["next_cursor"] is None


def test_failures_filter_by_service_channel_and_system(client, viewer, five_failures):
    client.force_login(viewer)
    assert len(client.get("/api/failures?service=email").json()["items"]) == 5
    assert client.get("/api/failures?service=payments").json()["items"] == []
    assert len(client.get("/api/failures?channel=orders&system=kafka").json()["items"]) == 5
    assert client.get("/api/failures?system=nats").json()["items"] == []


def test_group_by_error_counts_per_service_channel_and_error_with_a_trend(
    client, viewer, five_failures
):
    client.force_login(viewer)
    groups = client.get("/api/failures?group_by=error&window=1h").json()["items"]
    assert [(g["service"], g["channel"], g["error"], g["count"]) for g in groups] == [
        ("email", "orders", "SMTP 550", 3),
        ("email", "orders", "template missing", 2),
    ]
    assert sum(groups[0]["trend"]) == 3 and len(groups[0]["trend"]) == 24


def test_bad_parameters_say_what_is_wrong(client, viewer):
    client.force_login(viewer)
    for query, word in (
        ("limit=0", "limit"),
        ("limit=x", "limit"),
        ("cursor=%%%", "cursor"),
        ("group_by=stage", "group_by"),
        ("window=3d", "window"),
    ):
        response = client.get(f"/api/failures?{query}")
        assert response.status_code == 400, query
        assert word in response.json()["error"]
