"""GET /api/failures: newest first, filters, keyset pages, and grouping by error."""

import contextlib
import time

import pytest
from django.db import connection

from tests.dashboard.world import events_batch, order_journey, store, traces_batch

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
    assert [
        (g["service"], g["channel"], g["error"], g["example_error"], g["count"]) for g in groups
    ] == [
        ("email", "orders", "SMTP <num>", "SMTP 550", 3),
        ("email", "orders", "template missing", "template missing", 2),
    ]
    assert sum(groups[0]["trend"]) == 3 and len(groups[0]["trend"]) == 30


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


@contextlib.contextmanager
def rows_from_postgres():
    """Row counts of the telemetry queries a request runs (Django's execute_wrapper hook)."""
    counts = []

    def count(execute, sql, params, many, context):
        result = execute(sql, params, many, context)
        if "collector_stage" in sql or "collector_failurerollup" in sql:
            counts.append(context["cursor"].rowcount)
        return result

    with connection.execute_wrapper(count):
        yield counts


def _failed_event(i: int, error: str, service: str = "billing") -> dict:
    return {
        "specversion": "1.0",
        "id": f"inv-{i}",
        "source": "/shop/billing",
        "type": "invoice.created",
        "esstage": "failed",
        "esservice": service,
        "eschannel": "invoices",
        "essystem": "nats",
        "eserror": error,
    }


def _word(i: int) -> str:
    """A word without digits for each number: messages that differ in words, not ids."""
    return "".join(chr(97 + int(d)) for d in str(i))


def test_many_groups_are_paged_most_first_with_trends_and_all_counted(client, viewer, project):
    # 120 different messages make 120 groups of one; three larger ones must come first.
    events = [_failed_event(i, f"invoice not found in ledger {_word(i)}") for i in range(120)]
    events += [_failed_event(1000 + i, "ledger locked") for i in range(5)]
    events += [_failed_event(2000 + i, "tax service down") for i in range(3)]
    events += [_failed_event(3000 + i, "tax service down", service="tax") for i in range(2)]
    store(events_batch(events, project.id))
    client.force_login(viewer)
    with rows_from_postgres() as fetched:
        first = client.get("/api/failures?group_by=error&limit=3").json()
    # One more group than the page (to know there is a next one), and trend
    # buckets of the page's groups only: not 123 groups' worth of rows.
    assert fetched and sum(fetched) <= 4 + 3 * 30
    assert [(g["service"], g["error"], g["count"]) for g in first["items"]] == [
        ("billing", "ledger locked", 5),
        ("billing", "tax service down", 3),
        ("tax", "tax service down", 2),
    ]
    assert [sum(g["trend"]) for g in first["items"]] == [5, 3, 2]
    assert all(len(g["trend"]) == 30 for g in first["items"])
    seen, cursor = list(first["items"]), first["next_cursor"]
    while cursor:
        page = client.get(f"/api/failures?group_by=error&limit=50&cursor={cursor}").json()
        assert len(page["items"]) <= 50
        seen += page["items"]
        cursor = page["next_cursor"]
    assert len(seen) == 123
    assert len({(g["service"], g["error"]) for g in seen}) == 123
    assert sum(g["count"] for g in seen) == 130
    assert all(sum(g["trend"]) == g["count"] for g in seen)
    assert {"deadlettered", "first", "last"} <= set(seen[0])


def test_the_failures_page_shows_the_biggest_groups_only(client, viewer, project):
    events = [_failed_event(i, f"invoice not found in ledger {_word(i)}") for i in range(40)]
    events += [_failed_event(1000 + i, "ledger locked") for i in range(4)]
    store(events_batch(events, project.id))
    client.force_login(viewer)
    html = client.get("/failures/").content.decode()
    table = html[html.index('id="failure-groups"') : html.index('id="failure-rows"')]
    assert table.count("<tr") == 30 + 1  # the header row and GROUPS_SHOWN groups
    assert table.index("ledger locked") < table.index("not found")


def test_a_grouped_cursor_must_be_one_the_api_returned(client, viewer):
    from dashboard.query_params import encode_cursor

    client.force_login(viewer)
    for value in (True, -1, "3", [1]):
        response = client.get(f"/api/failures?group_by=error&cursor={encode_cursor(value)}")
        assert response.status_code == 400, value
        assert "cursor" in response.json()["error"]
