"""Replays: an editor re-sends a stored CloudEvent to a webhook, which a real
local receiver gets as one signed structured-mode request."""

import base64
import json

import pytest
from django.test import Client

from dashboard.alerts.models import Format, Webhook
from dashboard.replays.models import Replay
from tests.alerts.conftest import Reply
from tests.alerts.conftest import receiver as receiver  # the real local HTTP receiver
from tests.alerts.test_evaluate import verify
from tests.dashboard.test_openapi import assert_documented
from tests.dashboard.world import dead_lettered_order, events_batch, store, store_order

pytestmark = pytest.mark.usefixtures("telemetry_db")

TRACE = "0af7651916cd43dd8448eb211c80319c"


def order_events(event_id="ord-7", source="/shop/orders", data=None):
    """An order published with its payload, then dead-lettered by shipping."""
    return [
        {
            "specversion": "1.0",
            "id": event_id,
            "source": source,
            "type": "order.created",
            "subject": "orders/7",
            "time": "2026-01-01T00:00:00.25Z",
            "datacontenttype": "application/json",
            "dataschema": "https://shop.example/schemas/order",
            "traceparent": f"00-{TRACE}-b7ad6b7169203331-01",
            "tenant": "acme",
            "eschannel": "orders",
            "essystem": "rabbitmq",
            "data": data or {"order": 7, "total": 42.5, "password": "hunter2"},
        },
        dead_lettered_order(event_id, source),
    ]


def with_recent_time(events):
    """The events timed a minute ago (a fixed time would fall out of retention)."""
    import datetime as dt

    moment = dt.datetime.now(dt.UTC).replace(microsecond=250_000) - dt.timedelta(minutes=1)
    stamp = moment.isoformat().replace("+00:00", "Z").replace(".250000Z", ".25Z")
    for event in events:
        if "time" in event:
            event["time"] = stamp
    return events, stamp


@pytest.fixture
def stored(project):
    events, stamp = with_recent_time(order_events())
    store(events_batch(events, project.id))
    return {"id": "ord-7", "source": "/shop/orders", "time": stamp}


@pytest.fixture
def hook(project, receiver):
    return Webhook.objects.create(project=project, name="replayer", url=receiver.url)


def post_replay(client, event_id, body, **headers):
    return client.post(
        f"/api/events/{event_id}/replay",
        json.dumps(body),
        content_type="application/json",
        **headers,
    )


def test_a_replay_arrives_as_the_stored_cloudevent_signed_and_marked(
    client, editor, project, stored, hook, receiver
):
    client.force_login(editor)
    response = post_replay(client, "ord-7", {"webhook": hook.pk})
    assert response.status_code == 201, response.content
    record = response.json()
    assert record["status"] == "delivered" and record["http_status"] == 200
    assert record["error"] is None and record["duration_ms"] >= 0
    assert record["webhook"] == {"id": hook.pk, "name": "replayer"}
    assert record["requested_by"] == "ed"
    assert (record["event_id"], record["source"]) == ("ord-7", "/shop/orders")

    [received] = receiver.requests
    assert received.headers["content-type"] == "application/cloudevents+json"
    assert received.headers["webhook-id"] == record["id"]
    assert verify(hook.secret, received)
    event = received.json()
    # What receivers deduplicate on is as stored.
    assert event["specversion"] == "1.0"
    assert (event["id"], event["source"], event["type"]) == (
        "ord-7",
        "/shop/orders",
        "order.created",
    )
    assert event["time"] == stored["time"]
    assert event["subject"] == "orders/7"
    assert event["datacontenttype"] == "application/json"
    assert event["dataschema"] == "https://shop.example/schemas/order"
    assert event["traceparent"] == f"00-{TRACE}-b7ad6b7169203331-01"
    assert event["tenant"] == "acme"
    assert event["esreplay"] == record["id"]
    # Redacted at ingest, replayed redacted.
    assert event["data"] == {"order": 7, "total": 42.5, "password": "[REDACTED]"}
    assert "hunter2" not in received.body.decode()
    # Eventscope's stage reports are not part of the event.
    assert not {"esstage", "eserror", "esgroup", "esservice"} & set(event)
    assert "data_base64" not in event

    row = Replay.objects.get(pk=record["id"])
    assert row.status == "delivered" and row.requested_by_user == editor


def test_responses_are_as_the_openapi_document_says(
    client, editor, viewer, read_token, project, stored, hook, receiver
):
    document = client.get("/api/openapi.json").json()
    client.force_login(editor)
    path = "/api/events/{event_id}/replay"
    assert_documented(document, path, "post", post_replay(client, "ord-7", {"webhook": hook.pk}))
    receiver.script(Reply(500))
    assert_documented(document, path, "post", post_replay(client, "ord-7", {"webhook": hook.pk}))
    assert_documented(document, path, "post", post_replay(client, "nope", {"webhook": hook.pk}))
    assert_documented(document, path, "post", post_replay(client, "ord-7", {"hook": 1}))
    listing = client.get("/api/events/ord-7/replays")
    assert_documented(document, "/api/events/{event_id}/replays", "get", listing)
    assert [r["status"] for r in listing.json()["items"]] == ["failed", "delivered"]
    tokened = Client().get(
        "/api/events/ord-7/replays?limit=1", HTTP_AUTHORIZATION=f"Bearer {read_token}"
    )
    assert_documented(document, "/api/events/{event_id}/replays", "get", tokened)
    page = tokened.json()
    assert len(page["items"]) == 1 and page["next_cursor"]
    rest = (
        Client()
        .get(
            f"/api/events/ord-7/replays?limit=1&cursor={page['next_cursor']}",
            HTTP_AUTHORIZATION=f"Bearer {read_token}",
        )
        .json()
    )
    assert [r["status"] for r in rest["items"]] == ["delivered"] and rest["next_cursor"] is None
    assert_documented(
        document, "/api/events/{event_id}/replays", "get", client.get("/api/events/nope/replays")
    )


def test_viewers_and_read_tokens_cannot_replay(client, viewer, read_token, stored, hook, receiver):
    client.force_login(viewer)
    assert post_replay(client, "ord-7", {"webhook": hook.pk}).status_code == 403
    tokened = post_replay(
        Client(), "ord-7", {"webhook": hook.pk}, HTTP_AUTHORIZATION=f"Bearer {read_token}"
    )
    assert tokened.status_code == 403 and "read-only" in tokened.json()["error"]
    assert receiver.requests == [] and not Replay.objects.exists()
    # Both may read what was replayed.
    assert client.get("/api/events/ord-7/replays").json()["items"] == []


def test_a_session_post_without_the_csrf_token_is_refused(editor, stored, hook, receiver):
    browser = Client(enforce_csrf_checks=True)
    browser.force_login(editor)
    assert post_replay(browser, "ord-7", {"webhook": hook.pk}).status_code == 403
    assert receiver.requests == []


def test_another_projects_event_or_webhook_is_not_found(
    client, editor, project, other_project, stored, hook, receiver
):
    events, _ = with_recent_time(order_events("theirs-1"))
    store(events_batch(events, other_project.id))
    theirs = Webhook.objects.create(project=other_project, name="theirs", url=receiver.url)
    client.force_login(editor)
    assert post_replay(client, "theirs-1", {"webhook": hook.pk}).status_code == 404
    missing_hook = post_replay(client, "ord-7", {"webhook": theirs.pk})
    assert missing_hook.status_code == 404 and "no webhook" in missing_hook.json()["error"]
    assert receiver.requests == [] and not Replay.objects.exists()


def test_an_event_known_only_from_spans_has_no_payload_to_replay(
    client, editor, project, hook, receiver
):
    store_order(project.id, event_id="evt-span")
    client.force_login(editor)
    response = post_replay(client, "evt-span", {"webhook": hook.pk})
    assert response.status_code == 409
    assert "only events reported as CloudEvents have a stored payload" in response.json()["error"]
    assert receiver.requests == []


def test_a_truncated_payload_is_not_replayed(client, editor, project, settings, hook, receiver):
    settings.PAYLOAD_MAX_BYTES = 100
    events, _ = with_recent_time(order_events("big-1", data={"lines": ["x" * 50] * 10}))
    store(events_batch(events, project.id))
    client.force_login(editor)
    response = post_replay(client, "big-1", {"webhook": hook.pk})
    assert response.status_code == 409
    error = response.json()["error"]
    assert "cut at 100 bytes" in error and "not be faithful" in error
    assert receiver.requests == []


def test_a_receiver_answering_500_is_a_recorded_failed_replay(
    client, editor, stored, hook, receiver
):
    receiver.script(Reply(500, body=b"database down"))
    client.force_login(editor)
    response = post_replay(client, "ord-7", {"webhook": hook.pk})
    assert response.status_code == 201
    record = response.json()
    assert record["status"] == "failed" and record["http_status"] == 500
    assert "HTTP 500" in record["error"] and "database down" in record["error"]
    assert len(receiver.requests) == 1  # tried once, not retried
    [listed] = client.get("/api/events/ord-7/replays").json()["items"]
    assert listed == record


def test_a_private_address_is_refused_unless_allowed_and_the_refusal_recorded(
    client, editor, settings, stored, hook, receiver
):
    settings.WEBHOOK_ALLOW_PRIVATE = False
    client.force_login(editor)
    response = post_replay(client, "ord-7", {"webhook": hook.pk})
    assert response.status_code == 201
    record = response.json()
    assert record["status"] == "failed" and record["http_status"] is None
    assert "loopback" in record["error"] and "EVENTSCOPE_WEBHOOK_ALLOW_PRIVATE" in record["error"]
    assert receiver.requests == []
    assert Replay.objects.get(pk=record["id"]).status == "failed"


def test_a_receiver_that_does_not_answer_in_time_is_a_failed_replay(
    client, editor, settings, stored, hook, receiver
):
    settings.WEBHOOK_TIMEOUT_SECONDS = 1
    receiver.script(Reply(200, delay=2.5))
    client.force_login(editor)
    record = post_replay(client, "ord-7", {"webhook": hook.pk}).json()
    assert record["status"] == "failed" and record["error"] == "timed out"


def test_an_id_reported_by_two_sources_needs_the_source(client, editor, project, hook, receiver):
    first, _ = with_recent_time(order_events("dup-1", "/a"))
    second, _ = with_recent_time(order_events("dup-1", "/b", data={"order": "b"}))
    store(events_batch(first + second, project.id))
    client.force_login(editor)
    ambiguous = post_replay(client, "dup-1", {"webhook": hook.pk})
    assert ambiguous.status_code == 400 and "'/a', '/b'" in ambiguous.json()["error"]
    chosen = post_replay(client, "dup-1", {"webhook": hook.pk, "source": "/b"})
    assert chosen.status_code == 201 and chosen.json()["source"] == "/b"
    assert receiver.requests[0].json()["data"] == {"order": "b"}
    assert post_replay(client, "dup-1", {"webhook": hook.pk, "source": "/c"}).status_code == 404
    # The page asks which source was meant.
    page = client.get("/events/dup-1").content.decode()
    assert '<option value="/a">/a</option><option value="/b">/b</option>' in page
    client.post("/events/dup-1", {"webhook": hook.pk, "source": "/a"})
    assert receiver.requests[1].json()["source"] == "/a"
    assert [r.source for r in Replay.objects.all()] == ["/a", "/b"]


def test_a_binary_payload_is_replayed_as_the_same_bytes(client, editor, project, hook, receiver):
    raw = bytes(range(256))
    event = {
        "specversion": "1.0",
        "id": "bin-1",
        "source": "/sensors",
        "type": "reading",
        "datacontenttype": "application/octet-stream",
        "data_base64": base64.b64encode(raw).decode(),
    }
    store(events_batch([event], project.id))
    client.force_login(editor)
    assert post_replay(client, "bin-1", {"webhook": hook.pk}).status_code == 201
    replayed = receiver.requests[0].json()
    assert base64.b64decode(replayed["data_base64"]) == raw and "data" not in replayed


def test_only_json_webhooks_take_replays(client, editor, project, stored, receiver):
    slack = Webhook.objects.create(
        project=project, name="chat", url=receiver.url, format=Format.SLACK
    )
    client.force_login(editor)
    response = post_replay(client, "ord-7", {"webhook": slack.pk})
    assert response.status_code == 400 and "json" in response.json()["error"]
    assert receiver.requests == []


def test_a_webhook_without_a_secret_gets_an_unsigned_replay(
    client, editor, project, stored, receiver
):
    plain = Webhook.objects.create(project=project, name="plain", url=receiver.url, secret="")
    client.force_login(editor)
    assert post_replay(client, "ord-7", {"webhook": plain.pk}).json()["status"] == "delivered"
    assert "webhook-signature" not in receiver.requests[0].headers


def test_reading_an_event_whose_id_ends_in_replay_still_works(client, viewer, project):
    events, _ = with_recent_time(order_events("batch/replay"))
    store(events_batch(events, project.id))
    client.force_login(viewer)
    body = client.get("/api/events/batch/replay").json()
    assert body["event_id"] == "batch/replay"


def test_the_event_page_shows_the_form_to_editors_and_the_replays_to_viewers(
    client, editor, viewer, stored, hook, receiver
):
    client.force_login(editor)
    page = client.get("/events/ord-7").content.decode()
    assert 'id="replay-form"' in page and f'<option value="{hook.pk}">replayer</option>' in page
    assert "Not replayed yet." in page
    done = post_replay(client, "ord-7", {"webhook": hook.pk}).json()

    client.force_login(viewer)
    page = client.get("/events/ord-7").content.decode()
    assert 'id="replay-form"' not in page
    assert f'id="replay-{done["id"]}"' in page and "delivered" in page and ">ed<" in page
    assert client.post("/events/ord-7", {"webhook": hook.pk}).status_code == 403
    assert len(receiver.requests) == 1


def test_an_editor_replays_from_the_page_with_and_without_htmx(
    client, editor, project, stored, hook, receiver
):
    client.force_login(editor)
    plain = client.post("/events/ord-7?project=shop", {"webhook": hook.pk})
    assert plain.status_code == 302 and plain["Location"] == "/events/ord-7?project=shop"
    page = client.get(plain["Location"]).content.decode()
    assert "Replayed to “replayer”: delivered (HTTP 200)." in page

    receiver.script(Reply(503))
    fragment = client.post(
        "/events/ord-7?project=shop", {"webhook": hook.pk}, HTTP_HX_REQUEST="true"
    )
    html = fragment.content.decode()
    assert fragment.status_code == 200 and html.lstrip().startswith(
        '<section class="panel" id="replays">'
    )
    assert "failed: HTTP 503" in html and html.count('class="replay-') == 2
    assert len(receiver.requests) == 2
    assert receiver.requests[0].json()["id"] == "ord-7"


def test_the_page_says_why_an_event_cannot_be_replayed(client, editor, project, hook):
    store_order(project.id, event_id="evt-span")
    client.force_login(editor)
    page = client.get("/events/evt-span").content.decode()
    assert 'id="replay-form"' not in page
    assert "only events reported as CloudEvents have a stored payload" in page
