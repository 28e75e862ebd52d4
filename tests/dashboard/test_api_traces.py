"""GET /api/traces/<id> and /api/events/<id>: whole journeys, across span links."""

import datetime as dt

import pytest

from tests.dashboard.world import dead_lettered_order, events_batch, store, store_order

pytestmark = pytest.mark.usefixtures("telemetry_db")


def test_trace_has_spans_and_stages_in_time_order_with_linked_consumers(client, viewer, project):
    ids = store_order(project.id)
    client.force_login(viewer)
    trace = client.get(f"/api/traces/{ids['trace']}").json()
    names = [(s["service"], s["name"]) for s in trace["spans"]]
    assert ("orders", "POST /orders") in names and ("email", "orders process") in names
    # the batch consumer lives in its own trace and links back to the publish
    assert ("audit", "orders receive") in names
    assert ids["audit_trace"] in trace["traces"]
    starts = [s["start"] for s in trace["spans"]]
    assert starts == sorted(starts)
    stages = [(s["service"], s["stage"]) for s in trace["stages"]]
    assert stages[0] == ("orders", "published")
    assert ("email", "failed") in stages and ("audit", "received") in stages
    failed = next(s for s in trace["stages"] if s["stage"] == "failed")
    assert failed["error"] == "SMTP 550 mailbox unavailable"
    span = trace["spans"][0]
    assert len(span["trace_id"]) == 32 and len(span["span_id"]) == 16
    assert {"service", "name", "kind", "start", "duration_ms", "status", "attributes"} <= set(span)


def test_unknown_and_malformed_trace_ids_are_404_and_400(client, viewer, project):
    client.force_login(viewer)
    assert client.get(f"/api/traces/{'ab' * 16}").status_code == 404
    bad = client.get("/api/traces/not-hex")
    assert bad.status_code == 400 and "32 hexadecimal" in bad.json()["error"]


def test_event_has_its_redacted_payload_and_journey(client, viewer, project):
    trace = "0af7651916cd43dd8448eb211c80319c"
    events = [
        {
            "specversion": "1.0",
            "id": "ord-42",
            "source": "/shop/orders",
            "type": "order.created",
            "datacontenttype": "application/json",
            "traceparent": f"00-{trace}-b7ad6b7169203331-01",
            "eschannel": "orders",
            "essystem": "rabbitmq",
            "data": {"order": 42, "card_number": "4111111111111111", "password": "hunter2"},
        },
        dead_lettered_order("ord-42"),
    ]
    store(events_batch(events, project.id))
    client.force_login(viewer)
    body = client.get("/api/events/ord-42").json()
    assert body["envelope"]["source"] == "/shop/orders"
    assert body["envelope"]["data"]["order"] == 42
    assert "4111111111111111" not in str(body) and "hunter2" not in str(body)
    stages = [(s["service"], s["stage"], s["error"]) for s in body["stages"]]
    assert ("shipping", "deadlettered", "address missing") in stages
    assert ("/shop/orders", "published", None) in stages
    assert client.get("/api/events/ord-42?source=/other").status_code == 404
    assert client.get("/api/events/nope").status_code == 404


def test_a_source_narrows_span_derived_events_too(client, viewer, project):
    store_order(project.id, event_id="evt-1")  # spans: a message id, no CloudEvents source
    client.force_login(viewer)
    assert client.get("/api/events/evt-1").status_code == 200
    missing = client.get("/api/events/evt-1?source=/nope")
    assert missing.status_code == 404 and "/nope" in missing.json()["error"]
    assert client.get("/events/evt-1?source=/nope").status_code == 404


def test_a_source_finds_its_envelope_among_many_of_the_same_id(client, viewer, project):
    # A popular id reused by 260 sources: the one asked for is the newest.
    start = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=10)
    events = [
        {
            "specversion": "1.0",
            "id": "dup",
            "source": f"/s{i:03d}",
            "type": "thing.happened",
            "time": (start + dt.timedelta(seconds=i)).isoformat(),
            "data": {"n": i},
        }
        for i in range(260)
    ]
    store(events_batch(events, project.id))
    client.force_login(viewer)
    body = client.get("/api/events/dup?source=/s259").json()
    assert body["source"] == "/s259"
    assert [e["source"] for e in body["envelopes"]] == ["/s259"]
    assert body["envelope"]["data"] == {"n": 259}
    assert [s["event_source"] for s in body["stages"]] == ["/s259"]
