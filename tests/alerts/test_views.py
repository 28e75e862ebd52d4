"""The alerts and webhooks pages, and the live alerts websocket."""

import asyncio
import datetime as dt

import pytest
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from django.db import connections

from dashboard.alerts.evaluate import evaluate_rule
from dashboard.alerts.models import AlertRule, Webhook
from dashboard.alerts.views import AlertsConsumer
from dashboard.live import listener
from tests.alerts.conftest import insert_stages


def test_viewers_see_rules_without_edit_controls(client, viewer, project):
    AlertRule.objects.create(project=project, name="Dead letters", kind="dead_letters")
    client.force_login(viewer)
    page = client.get("/alerts/").content.decode()
    assert "Dead letters" in page and "New rule" not in page and ">Mute<" not in page
    assert client.get("/alerts/rules/new").status_code == 403
    assert client.post("/webhooks/", {"name": "x", "url": "https://e.com/"}).status_code == 403


def test_an_editor_creates_mutes_and_deletes_a_rule_through_the_pages(client, editor, project):
    hook = Webhook.objects.create(project=project, name="ops", url="https://example.com/h")
    client.force_login(editor)
    form = client.get("/alerts/rules/new").content.decode()
    assert 'name="param_threshold"' in form and 'name="kind"' in form
    bad = client.post(
        "/alerts/rules/new", {"name": "Lagging", "kind": "lag", "param_threshold": "many"}
    )
    assert bad.status_code == 400 and "params.threshold must be a number" in bad.content.decode()
    created = client.post(
        "/alerts/rules/new",
        {
            "name": "Lagging",
            "kind": "lag",
            "param_threshold": "1000",
            "param_channel": "orders",
            "for_seconds": "120",
            "repeat_seconds": "3600",
            "webhooks": [str(hook.pk)],
            "enabled": "on",
        },
    )
    assert created.status_code == 302
    rule = AlertRule.objects.get(name="Lagging")
    assert rule.params["threshold"] == 1000 and rule.params["channel"] == "orders"
    assert list(rule.webhooks.all()) == [hook]
    client.post(f"/alerts/rules/{rule.pk}/mute", {"seconds": "3600"})
    rule.refresh_from_db()
    assert rule.is_muted()
    assert "muted until" in client.get("/alerts/").content.decode()
    client.post(f"/alerts/rules/{rule.pk}/mute", {"seconds": "0"})
    rule.refresh_from_db()
    assert not rule.is_muted()
    client.post(f"/alerts/rules/{rule.pk}/delete")
    assert not AlertRule.objects.exists()


def test_the_webhook_page_shows_its_delivery_log_and_sends_a_test(
    client, editor, project, receiver
):
    client.force_login(editor)
    created = client.post("/webhooks/", {"name": "ops", "url": receiver.url, "format": "slack"})
    hook = Webhook.objects.get(name="ops")
    assert created.status_code == 302 and hook.secret.startswith("whsec_")
    client.post(f"/webhooks/{hook.pk}/test")
    page = client.get(f"/webhooks/{hook.pk}/").content.decode()
    assert "delivered" in page and "HTTP 200" in page
    assert receiver.requests[0].json()["text"].startswith("🧪")
    bad = client.post(f"/webhooks/{hook.pk}/", {"name": "ops", "url": "http://"})
    assert bad.status_code == 400


def test_an_editor_points_a_webhook_at_an_alertmanager_through_the_form(
    client, editor, project, receiver
):
    client.force_login(editor)
    assert 'value="alertmanager-push"' in client.get("/webhooks/").content.decode()
    base = f"http://127.0.0.1:{receiver.port}"
    bad = client.post(
        "/webhooks/", {"name": "am", "url": base + "/api/v1/alerts", "format": "alertmanager-push"}
    )
    assert bad.status_code == 400 and "API v1" in bad.content.decode()
    created = client.post("/webhooks/", {"name": "am", "url": base, "format": "alertmanager-push"})
    assert created.status_code == 302
    hook = Webhook.objects.get(name="am")
    client.post(f"/webhooks/{hook.pk}/test")
    (request,) = receiver.requests
    assert request.path == "/api/v2/alerts"
    assert request.json()[0]["labels"]["alertname"] == "Test notification"


SLACK = "https://hooks.slack.com/services/T0001/B0002/sEcReTsEcReT"


def test_viewers_see_webhook_urls_without_credentials_and_editors_whole(
    client, viewer, editor, project
):
    slack = Webhook.objects.create(project=project, name="chat", url=SLACK, format="slack")
    tickets = Webhook.objects.create(
        project=project, name="tickets", url="https://robot:hunter2@alerts.example.com/in"
    )
    client.force_login(viewer)
    for url in ("/webhooks/", f"/webhooks/{slack.pk}/", f"/webhooks/{tickets.pk}/"):
        page = client.get(url).content.decode()
        assert "sEcReT" not in page and "T0001" not in page and "hunter2" not in page, url
        assert "robot" not in page, url
    assert "https://hooks.slack.com/…" in client.get(f"/webhooks/{slack.pk}/").content.decode()
    listing = client.get("/webhooks/").content.decode()
    assert "https://hooks.slack.com/…" in listing and "https://alerts.example.com/…" in listing
    client.force_login(editor)
    assert SLACK in client.get(f"/webhooks/{slack.pk}/").content.decode()
    assert SLACK in client.get("/webhooks/").content.decode()


@pytest.fixture
async def close_connections():
    yield
    await listener.stop()
    await database_sync_to_async(connections.close_all)()


@pytest.mark.usefixtures("telemetry_db", "close_connections")
async def test_a_firing_alert_reaches_the_live_page(viewer, project):
    ws = WebsocketCommunicator(AlertsConsumer.as_asgi(), "/ws/alerts/?project=shop")
    ws.scope["user"] = viewer
    assert (await ws.connect())[0]
    first = await ws.receive_from(timeout=5)
    assert 'id="alerts-live"' in first and "All quiet" in first
    await asyncio.wait_for(listener.connected.wait(), 5)

    def fire():
        now = dt.datetime.now(dt.UTC)
        insert_stages(project.id, [(now, "deadlettered", "billing", "kafka", "orders", "g")])
        rule = AlertRule.objects.create(project=project, name="DLQ", kind="dead_letters")
        evaluate_rule(rule.pk, now)

    await database_sync_to_async(fire)()
    pushed = await ws.receive_from(timeout=5)
    assert 'hx-swap-oob="true"' in pushed and "DLQ" in pushed and "firing" in pushed
    await ws.disconnect()


# ---- htmx: the state filter and the pager ask for the alerts only --------------


def _alerts(project, states):
    from django.utils import timezone

    from dashboard.alerts.models import Alert

    rule = AlertRule.objects.create(project=project, name="Lagging", kind="lag")
    now = timezone.now()
    return [
        Alert.objects.create(
            project=project,
            rule=rule,
            fingerprint=f"{i:016x}",
            state=state,
            summary=f"alert number {i}",
            started_at=now,
            last_seen_at=now,
            resolved_at=now if state == "resolved" else None,
        )
        for i, state in enumerate(states)
    ]


def test_an_htmx_request_gets_only_the_alerts_and_a_plain_one_the_page(client, viewer, project):
    _alerts(project, ["firing", "pending", "resolved"])
    client.force_login(viewer)
    page = client.get("/alerts/").content.decode()
    partial = client.get("/alerts/", HTTP_HX_REQUEST="true").content.decode()
    assert page.lstrip().startswith("<!doctype html>") and 'id="rule-rows"' in page
    assert partial.lstrip().startswith('<div hx-ext="ws" ws-connect="/ws/alerts/?')
    assert 'id="alerts-results"' in partial and "alert number 2" in partial
    assert "<html" not in partial and 'id="rule-rows"' not in partial
    form = page.split('id="alert-filters"', 1)[1].split(">", 1)[0]
    assert 'hx-get="/alerts/"' in form and 'hx-push-url="true"' in form


def test_the_alert_list_filters_by_state(client, viewer, project):
    _alerts(project, ["firing", "pending", "resolved"])
    client.force_login(viewer)
    firing = client.get("/alerts/?state=firing", HTTP_HX_REQUEST="true").content.decode()
    assert "alert number 0" in firing and "alert number 1" not in firing
    assert "state=firing" in firing.split('"', 4)[3]  # the live connection keeps it
    bad = client.get("/alerts/?state=loud")
    assert (
        bad.status_code == 400 and "state=&#x27;loud&#x27;: expected one of" in bad.content.decode()
    )


def test_the_alert_list_pages_with_real_links(client, viewer, project, monkeypatch):
    from dashboard.alerts import views

    monkeypatch.setattr(views, "ALERTS_PER_PAGE", 2)
    _alerts(project, ["resolved", "resolved", "firing"])
    client.force_login(viewer)
    first = client.get("/alerts/").content.decode()
    assert "alert number 2" in first and "alert number 0" not in first
    older = first.split('id="older-alerts"', 1)[0].rsplit("<a ", 1)[1]
    href = older.split('href="', 1)[1].split('"', 1)[0].replace("&amp;", "&")
    assert href.startswith("/alerts/?") and f'hx-get="{href}"'.replace("&", "&amp;") in older
    second = client.get(href).content.decode()
    assert "alert number 0" in second and "alert number 2" not in second
    assert 'id="newest-alerts"' in second and 'id="older-alerts"' not in second


def test_the_rule_form_offers_what_was_seen_and_puts_errors_next_to_their_field(
    client, editor, project
):
    from tests.dashboard.world import store_order

    store_order(project.id, event_id="evt-seen")
    client.force_login(editor)
    form = client.get("/alerts/rules/new").content.decode()
    # Human names with each kind's help; pick lists of seen systems, channels, groups.
    assert '<label for="param_window_seconds">Counting window (seconds)</label>' in form
    assert 'list="seen-channel"' in form and 'list="seen-group"' in form
    channels = form[form.index('<datalist id="seen-channel">') :]
    assert '<option value="orders">' in channels[: channels.index("</datalist>")]
    systems = form[form.index('<datalist id="seen-system">') :]
    assert '<option value="kafka">' in systems[: systems.index("</datalist>")]

    bad = client.post(
        "/alerts/rules/new", {"name": "Lagging", "kind": "lag", "param_threshold": "many"}
    ).content.decode()
    field = bad[bad.index('<input id="param_threshold"') :]
    field = field[: field.index("</div>")]
    assert 'aria-invalid="true"' in field
    assert (
        '<p class="field-error" id="param_threshold-error">params.threshold must be a number'
        in field
    )

    statuses = client.post(
        "/alerts/rules/new",
        {"name": "Stuck", "kind": "lag_status", "param_statuses": ["stalled", "stopped"]},
    )
    assert statuses.status_code == 302
    assert AlertRule.objects.get(name="Stuck").params["statuses"] == ["stalled", "stopped"]
