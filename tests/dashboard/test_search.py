"""Search: id prefixes, message ids, CloudEvents subjects, payload fields, and
the recent traces listed when the box is empty (GET /api/search, GET /api/traces,
/search/). Data goes through the real decoders and writer."""

import time
import urllib.parse

import pytest

from tests.dashboard.world import events_batch, store, store_order

pytestmark = pytest.mark.usefixtures("telemetry_db")

MINUTE_NS = 60 * 10**9


def order_event(event_id, *, stage="published", data=None, subject=None, source="/shop/orders"):
    event = {
        "specversion": "1.0",
        "id": event_id,
        "source": source,
        "type": "order.created",
        "esstage": stage,
        "eschannel": "orders",
        "essystem": "rabbitmq",
        "datacontenttype": "application/json",
        "data": data if data is not None else {"order_id": event_id},
    }
    if stage != "published":
        event["esservice"] = "shipping"
        event["esgroup"] = "shipping"
    if subject:
        event["subject"] = subject
    return event


def search(client, q, **params):
    return client.get("/api/search", {"q": q, **params})


def test_a_trace_id_prefix_finds_the_trace(client, viewer, project):
    ids = store_order(project.id)
    store_order(project.id, event_id="evt-2")
    client.force_login(viewer)
    for prefix in (ids["trace"][:8], ids["trace"][:13], ids["trace"][:16].upper(), ids["trace"]):
        body = search(client, prefix).json()
        traces = [h for h in body["items"] if h["kind"] == "trace"]
        assert [h["id"] for h in traces] == [ids["trace"]], prefix
        assert traces[0]["matched"] == "trace_id"
        assert traces[0]["prefix"] is (prefix != ids["trace"])
        assert traces[0]["url"] == f"/traces/{ids['trace']}"
        assert traces[0]["service"] == "web"  # the root span's
    page = client.get("/search/", {"q": ids["trace"][:10]})
    assert page.status_code == 302 and page["Location"] == f"/traces/{ids['trace']}"
    assert client.get(page["Location"]).status_code == 200
    # Seven characters are not a prefix search: nothing matches exactly.
    assert search(client, ids["trace"][:7]).json()["items"] == []


def test_a_message_id_and_its_prefix_find_the_events(client, viewer, project):
    store_order(project.id, event_id="msg-7f3a9c21-0001")
    store_order(project.id, event_id="msg-7f3a9c21-0002")
    store_order(project.id, event_id="msg-00000000-0003")
    client.force_login(viewer)
    body = search(client, "msg-7f3a9c21").json()
    assert body["kind"] == "id"
    found = sorted((h["id"], h["matched"], h["prefix"]) for h in body["items"])
    assert found == [
        ("msg-7f3a9c21-0001", "message_id", True),
        ("msg-7f3a9c21-0002", "message_id", True),
    ]
    assert all(h["url"].startswith("/events/msg-7f3a9c21-000") for h in body["items"])
    assert all(len(h["trace_id"]) == 32 for h in body["items"])
    exact = search(client, "msg-7f3a9c21-0002").json()["items"]
    assert [(h["id"], h["prefix"]) for h in exact] == [("msg-7f3a9c21-0002", False)]
    page = client.get("/search/", {"q": "msg-7f3a9c21"})
    assert page.status_code == 200
    html = page.content.decode()
    assert 'href="/events/msg-7f3a9c21-0001"' in html and 'href="/events/msg-7f3a9c21-0002"' in html
    assert "msg-00000000-0003" not in html
    assert client.get("/search/", {"q": "msg-7f3a9c21-0001"})["Location"] == (
        "/events/msg-7f3a9c21-0001"
    )


def test_a_cloudevents_id_prefix_and_subject(client, viewer, project):
    store(
        events_batch(
            [
                order_event("ord-000177", subject="customer/c-42"),
                order_event("ord-000177", stage="processed", subject="customer/c-42"),
                order_event("ord-000178", subject="customer/c-7"),
            ],
            project.id,
        )
    )
    client.force_login(viewer)
    hits = search(client, "ord-00017").json()["items"]
    assert sorted((h["id"], h["source"], h["matched"]) for h in hits) == [
        ("ord-000177", "/shop/orders", "event_id"),
        ("ord-000178", "/shop/orders", "event_id"),
    ]
    by_subject = search(client, "subject=customer/c-42").json()
    assert by_subject["kind"] == "subject"
    assert [(h["id"], h["subject"], h["matched"]) for h in by_subject["items"]] == [
        ("ord-000177", "customer/c-42", "subject")
    ]
    assert by_subject["items"][0]["url"] == "/events/ord-000177?source=%2Fshop%2Forders"


def test_a_payload_field_finds_the_events_that_hold_it(client, viewer, project):
    store(
        events_batch(
            [
                order_event("ord-1", data={"order_id": "ord-1", "customer": {"id": "c-42"},
                                           "amount": 42, "paid": True}),
                order_event("ord-1", stage="processed",
                            data={"order_id": "ord-1", "customer": {"id": "c-42"}}),
                order_event("ord-2", data={"order_id": "ord-2", "customer": {"id": "c-42"},
                                           "amount": "42"}),
                order_event("ord-3", data={"order_id": "ord-3", "customer": {"id": "c-7"},
                                           "amount": 7}),
            ],
            project.id,
        )
    )  # fmt: skip
    client.force_login(viewer)

    def ids(q, **params):
        response = search(client, q, **params)
        assert response.status_code == 200, response.content
        return sorted(h["id"] for h in response.json()["items"])

    assert ids("data.order_id=ord-3") == ["ord-3"]
    assert ids("payload.customer.id=c-42") == ["ord-1", "ord-2"]  # one hit per event
    assert ids("data.customer.id = c-42") == ["ord-1", "ord-2"]
    assert ids("data.amount=42") == ["ord-1", "ord-2"]  # the number and the string
    assert ids('data.amount="42"') == ["ord-2"]
    assert ids("data.paid=true") == ["ord-1"]
    assert ids('data.customer={"id": "c-7"}') == ["ord-3"]
    assert ids("data.customer.id=c-999") == []
    hit = search(client, "data.order_id=ord-3").json()["items"][0]
    assert hit["matched"] == "payload" and hit["source"] == "/shop/orders"
    assert hit["type"] == "order.created"
    page = client.get("/search/", {"q": "data.customer.id=c-42"})
    assert page.status_code == 200
    assert 'href="/events/ord-1?source=%2Fshop%2Forders"' in page.content.decode()
    assert client.get("/search/", {"q": "data.order_id=ord-3"})["Location"] == (
        "/events/ord-3?source=%2Fshop%2Forders"
    )
    missing = client.get("/search/", {"q": "data.customer.id=c-999"})
    assert missing.status_code == 404 and "Nothing matches" in missing.content.decode()


def test_payload_hits_page_with_a_cursor_newest_first(client, viewer, project):
    events = [order_event(f"ord-{i}", data={"customer": "c-42", "n": i}) for i in range(5)]
    for event in events:  # one request each: distinct, increasing times
        store(events_batch([event], project.id))
    client.force_login(viewer)
    seen, cursor = [], None
    for _ in range(5):
        params = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        body = search(client, "data.customer=c-42", **params).json()
        seen += [h["id"] for h in body["items"]]
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert seen == [f"ord-{i}" for i in reversed(range(5))]


def test_bad_searches_are_400_with_a_reason(client, viewer, project):
    client.force_login(viewer)
    cases = {
        "": "empty",
        "colour=red": "'colour' is not something search knows",
        "data.=x": "name a field",
        "data=x": "name a field",
        "data.order_id=": "needs a value",
        "subject=": "needs a value",
        "data.order={bad": "not valid JSON",
        "data." + ".".join("a" * 11) + "=1": "at most 10 levels",
    }
    for q, reason in cases.items():
        response = search(client, q)
        assert response.status_code == 400, q
        assert reason in response.json()["error"], (q, response.json())
    bad_cursor = search(client, "data.x=1", cursor="bm9wZQ")
    assert bad_cursor.status_code == 400 and "cursor" in bad_cursor.json()["error"]
    page = client.get("/search/", {"q": "colour=red"})
    assert page.status_code == 400 and "is not something search knows" in page.content.decode()
    # Ids holding "=" are still ids.
    assert search(client, "ev t?x=1#y").status_code == 200


def test_search_sees_only_its_project(client, viewer, project, other_project):
    ids = store_order(other_project.id, event_id="their-msg-00001")
    store(events_batch([order_event("their-ord", data={"k": "v"})], other_project.id))
    client.force_login(viewer)
    for q in (ids["trace"][:8], "their-msg", "their-ms", "data.k=v"):
        assert search(client, q).json()["items"] == [], q
    assert client.get("/api/traces", {"window": "1h"}).json()["items"] == []


def _orders(project_id, minutes_ago, **kwargs):
    now = time.time_ns()
    return [
        store_order(project_id, event_id=f"evt-{m}", start_ns=now - m * MINUTE_NS, **kwargs)
        for m in minutes_ago
    ]


def test_recent_traces_newest_first_with_their_figures(client, viewer, project):
    orders = _orders(project.id, [2, 30, 200])
    client.force_login(viewer)
    body = client.get("/api/traces", {"window": "6h"}).json()
    listed = [t["trace_id"] for t in body["items"]]
    # Root spans start traces: each order's and its batch consumer's own trace.
    expected = []
    for ids in orders:
        expected += [ids["audit_trace"], ids["trace"]]
    assert listed == expected
    first = next(t for t in body["items"] if t["trace_id"] == orders[0]["trace"])
    assert first["root_service"] == "web" and first["root_name"] == "POST"
    assert first["spans"] == 5 and first["errors"] == 1
    assert first["services"] == ["email", "orders", "payments", "web"]
    assert first["channels"] == ["orders"]
    assert first["failed_stages"] == 1 and first["stages"] == 3
    assert 90 <= first["duration_ms"] <= 100  # the client span starts 2 ms early; email ends at +92
    assert first["url"] == f"/traces/{orders[0]['trace']}"
    assert body["next_cursor"] is None
    one_hour = [t["trace_id"] for t in client.get("/api/traces", {"window": "1h"}).json()["items"]]
    assert one_hour == expected[:4]


def test_recent_traces_page_with_a_cursor(client, viewer, project):
    orders = _orders(project.id, [1, 3, 8, 70, 400])
    client.force_login(viewer)
    seen, cursor = [], None
    for _ in range(10):
        params = {"window": "24h", "limit": 3, "service": "orders"}
        body = client.get("/api/traces", {**params, **({"cursor": cursor} if cursor else {})})
        assert body.status_code == 200, body.content
        seen += [t["trace_id"] for t in body.json()["items"]]
        cursor = body.json()["next_cursor"]
        if cursor is None:
            break
    # Two spans of "orders" in each trace: every trace once, newest first.
    assert seen == [ids["trace"] for ids in orders]


def test_recent_traces_filter_by_service_channel_and_status(client, viewer, project):
    failing = _orders(project.id, [1, 9])
    fine = _orders(project.id, [4], email_error=None)
    client.force_login(viewer)

    def listed(**params):
        response = client.get("/api/traces", {"window": "1h", **params})
        assert response.status_code == 200, response.content
        return [t["trace_id"] for t in response.json()["items"]]

    everything = [failing[0]["trace"], fine[0]["trace"], failing[1]["trace"]]
    assert listed(service="payments") == everything
    assert listed(service="audit") == [
        failing[0]["audit_trace"],
        fine[0]["audit_trace"],
        failing[1]["audit_trace"],
    ]
    assert listed(service="nobody") == []
    assert listed(status="error") == [failing[0]["trace"], failing[1]["trace"]]
    assert listed(status="error", service="payments") == []
    assert listed(channel="orders", service="payments") == everything
    assert listed(channel="orders", system="kafka", status="error") == [
        failing[0]["trace"],
        failing[1]["trace"],
    ]
    assert listed(channel="orders", system="rabbitmq") == []
    for params, reason in (
        ({"status": "ok"}, "the only status filter is 'error'"),
        ({"system": "kafka"}, "give channel= too"),
        ({"window": "2y"}, "window="),
        ({"cursor": "bm9wZQ"}, "cursor"),
    ):
        response = client.get("/api/traces", params)
        assert response.status_code == 400 and reason in response.json()["error"], params


def test_the_empty_search_page_lists_recent_traces(client, viewer, project):
    orders = _orders(project.id, [1, 2, 3])
    client.force_login(viewer)
    html = client.get("/search/", {"service": "payments", "limit": 2}).content.decode()
    assert "Recent traces" in html
    assert f'href="/traces/{orders[0]["trace"]}"' in html
    assert f'href="/traces/{orders[1]["trace"]}"' in html
    assert f'href="/traces/{orders[2]["trace"]}"' not in html
    older = html[: html.index('id="older-traces"')]
    href = older[older.rindex('<a href="') + 9 :]
    href = href[: href.index('"')].replace("&amp;", "&")
    assert urllib.parse.parse_qs(urllib.parse.urlsplit(href).query)["service"] == ["payments"]
    partial = client.get(href, headers={"HX-Request": "true"}).content.decode()
    assert partial.lstrip().startswith('<div id="recent-results">')
    assert f'href="/traces/{orders[2]["trace"]}"' in partial
    bad = client.get("/search/", {"status": "nope"})
    assert bad.status_code == 400 and "the only status filter" in bad.content.decode()


def test_a_failing_root_span_without_messaging_is_a_recent_error(client, viewer, project):
    from tests.dashboard.world import (
        KIND_SERVER,
        new_span_id,
        new_trace_id,
        request,
        span,
        traces_batch,
    )

    trace = new_trace_id()
    root = span(trace, new_span_id(), "GET /report", KIND_SERVER, time.time_ns() - MINUTE_NS, 30,
                error="HTTP 500")  # fmt: skip
    store(traces_batch(request({"reports": [root]}), project.id))
    _orders(project.id, [2], email_error=None)
    client.force_login(viewer)
    errors = client.get("/api/traces", {"window": "1h", "status": "error"}).json()["items"]
    assert [(t["trace_id"], t["errors"], t["root_name"]) for t in errors] == [
        (trace, 1, "GET /report")
    ]
    mine = client.get("/api/traces", {"status": "error", "service": "reports"}).json()["items"]
    assert [t["trace_id"] for t in mine] == [trace]
    assert client.get("/api/traces", {"status": "error", "service": "web"}).json()["items"] == []
