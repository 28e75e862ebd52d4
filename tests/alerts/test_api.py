"""The JSON API of alert rules, webhooks and alerts, through Django's test client."""

import datetime as dt
import json

import pytest
from django.db import connection

from dashboard.alerts import sender
from dashboard.alerts.evaluate import evaluate_rule
from dashboard.alerts.models import Alert, AlertRule, Attempt, Delivery, Webhook
from dashboard.alerts.transports import rfc3339


def send(client, method, url, data=None):
    return getattr(client, method)(url, json.dumps(data), content_type="application/json")


@pytest.fixture
def as_editor(client, editor):
    client.force_login(editor)
    return client


RULE = {
    "name": "Billing failing",
    "kind": "failed_events",
    "params": {"threshold": 3},
    "for_seconds": 60,
    "repeat_seconds": 3600,
}


def test_an_editor_creates_reads_updates_and_deletes_a_rule(as_editor, project):
    hook = Webhook.objects.create(project=project, name="ops", url="https://example.com/h")
    created = send(as_editor, "post", "/api/alert-rules", {**RULE, "webhooks": [hook.pk]})
    assert created.status_code == 201, created.content
    rule = created.json()
    assert rule["params"]["threshold"] == 3 and rule["params"]["window_seconds"] == 300
    assert rule["webhooks"] == [hook.pk] and rule["enabled"] is True
    listed = as_editor.get("/api/alert-rules").json()
    assert [r["id"] for r in listed["items"]] == [rule["id"]] and listed["next_cursor"] is None
    updated = send(
        as_editor,
        "put",
        f"/api/alert-rules/{rule['id']}",
        {"muted_until": "2030-01-01T00:00:00Z", "for_seconds": 0},
    )
    assert updated.status_code == 200
    assert updated.json()["muted_until"] == "2030-01-01T00:00:00Z"
    assert updated.json()["name"] == "Billing failing"
    assert as_editor.delete(f"/api/alert-rules/{rule['id']}").status_code == 204
    assert as_editor.get(f"/api/alert-rules/{rule['id']}").status_code == 404


@pytest.mark.parametrize(
    "change, message",
    [
        ({"kind": "nope"}, "kind must be one of lag, lag_seconds"),
        ({"params": {"threshold": "lots"}}, "params.threshold must be a whole number"),
        ({"kind": "error_rate", "params": {}}, "params.threshold is required"),
        ({"kind": "error_rate", "params": {"threshold": 2}}, "params.threshold must be at most 1"),
        ({"kind": "lag", "params": {"threshold": "x"}}, "params.threshold must be a number"),
        ({"params": {"treshold": 1}}, "params.treshold is not a parameter of this kind"),
        ({"kind": "lag_status", "params": {"statuses": ["late"]}}, "'late' is not one of"),
        ({"name": ""}, "name is required"),
        ({"for_seconds": -1}, "for_seconds must be between 0 and"),
        ({"repeat_seconds": 5}, "repeat_seconds must be 0 (never repeat) or at least 60"),
        ({"webhooks": [999999]}, "webhooks: no webhook 999999 in this project"),
        ({"enabled": "yes"}, "enabled must be true or false"),
        ({"muted_until": "soon"}, "muted_until must be an RFC 3339 time"),
        ({"muted_until": "2030-13-01T00:00:00"}, "muted_until must be an RFC 3339 time"),
        ({"muted_until": "9999-12-31T23:00:00-05:00"}, "muted_until must be an RFC 3339 time"),
        ({"params": {"threshold": 1e400}}, "params.threshold must be a finite number"),
        ({"params": {"threshold": -1e400}}, "params.threshold must be a finite number"),
        ({"params": {"window_seconds": 1e400}}, "params.window_seconds must be a finite number"),
        ({"kind": "lag", "params": {"threshold": 1e400}}, "params.threshold must be a finite"),
        ({"kind": "lag", "params": {"threshold": 10**400}}, "params.threshold is too large"),
        ({"colour": "red"}, "colour is not a field of an alert rule"),
    ],
)
def test_bad_rules_get_a_400_that_says_what_is_wrong(as_editor, change, message):
    response = send(as_editor, "post", "/api/alert-rules", {**RULE, **change})
    assert response.status_code == 400
    assert message in response.json()["error"]
    assert not AlertRule.objects.exists()


def test_an_infinite_threshold_in_raw_json_is_a_400(as_editor):
    # 1e400 is valid JSON; Python reads it as inf.
    body = json.dumps(RULE).replace('"threshold": 3', '"threshold": 1e400')
    response = as_editor.post("/api/alert-rules", body, content_type="application/json")
    assert response.status_code == 400
    assert response.json()["error"] == "params.threshold must be a finite number"


def test_an_impossible_mute_time_on_update_is_a_400(as_editor, project):
    rule = AlertRule.objects.create(project=project, name="x", kind="dead_letters")
    response = send(
        as_editor, "put", f"/api/alert-rules/{rule.pk}", {"muted_until": "2030-13-01T00:00:00"}
    )
    assert response.status_code == 400
    assert response.json()["error"].startswith("muted_until must be an RFC 3339 time or null (")
    rule.refresh_from_db()
    assert rule.muted_until is None


def test_a_body_that_is_not_json_is_a_400(as_editor):
    response = as_editor.post("/api/alert-rules", "{nope", content_type="application/json")
    assert response.status_code == 400
    assert response.json()["error"].startswith("the body is not valid JSON")


def test_viewers_and_tokens_read_but_do_not_change(client, viewer, read_token, project):
    client.force_login(viewer)
    assert client.get("/api/alert-rules").status_code == 200
    assert send(client, "post", "/api/alert-rules", RULE).status_code == 403
    client.logout()
    auth = {"HTTP_AUTHORIZATION": f"Bearer {read_token}"}
    assert client.get("/api/webhooks", **auth).status_code == 200
    response = client.post("/api/webhooks", "{}", content_type="application/json", **auth)
    assert response.status_code == 403
    assert client.get("/api/alerts").status_code == 401


def test_another_projects_rule_is_not_found(as_editor, other_project):
    rule = AlertRule.objects.create(project=other_project, name="x", kind="dead_letters")
    assert as_editor.get(f"/api/alert-rules/{rule.pk}").status_code == 404
    assert send(as_editor, "put", f"/api/alert-rules/{rule.pk}", {"name": "y"}).status_code == 404


def test_webhooks_get_a_generated_secret_and_given_ones_are_checked(as_editor):
    created = send(
        as_editor, "post", "/api/webhooks", {"name": "ops", "url": "https://example.com/hook"}
    )
    assert created.status_code == 201
    body = created.json()
    assert body["format"] == "json" and body["secret"].startswith("whsec_")
    for change, message in (
        ({"secret": "whsec_!!"}, "secret: the part after whsec_ is not valid base64"),
        ({"secret": "whsec_c2hvcnQ="}, "secret: the key must be 24 to 64 bytes, this one is 5"),
        ({"secret": "abc"}, "secret must start with whsec_"),
        ({"format": "xml"}, "format must be one of json, alertmanager, slack, alertmanager-push"),
    ):
        payload = {"name": "x", "url": "https://example.com/h", **change}
        bad = send(as_editor, "post", "/api/webhooks", payload)
        assert bad.status_code == 400 and bad.json()["error"].startswith(message)


def test_an_alertmanager_push_webhook_takes_the_base_or_the_v2_url_and_refuses_v1(
    as_editor, receiver
):
    for url in (
        f"http://127.0.0.1:{receiver.port}",
        f"http://127.0.0.1:{receiver.port}/api/v2/alerts",
    ):
        payload = {"name": "am", "url": url, "format": "alertmanager-push"}
        created = send(as_editor, "post", "/api/webhooks", payload)
        assert created.status_code == 201 and created.json()["format"] == "alertmanager-push"
        tested = as_editor.post(f"/api/webhooks/{created.json()['id']}/test")
        assert tested.status_code == 200 and tested.json()["status"] == "delivered"
    assert [r.path for r in receiver.requests] == ["/api/v2/alerts"] * 2
    payload = {
        "name": "am",
        "url": "http://am.example.com/api/v1/alerts",
        "format": "alertmanager-push",
    }
    refused = send(as_editor, "post", "/api/webhooks", payload)
    assert refused.status_code == 400 and "API v1" in refused.json()["error"]


def test_a_webhook_to_a_private_address_is_refused_when_saved(as_editor, settings):
    settings.WEBHOOK_ALLOW_PRIVATE = False
    for url in ("http://169.254.169.254/", "http://localhost:9000/", "http://10.0.0.1/"):
        response = send(as_editor, "post", "/api/webhooks", {"name": "x", "url": url})
        assert response.status_code == 400 and "not allowed" in response.json()["error"]
    response = send(as_editor, "post", "/api/webhooks", {"name": "x", "url": "ftp://x.org/"})
    assert "http:// or https://" in response.json()["error"]


def test_an_international_host_is_saved_and_reached_in_its_idna_form(as_editor, receiver, dns):
    dns["xn--bcher-kva.example"] = ["127.0.0.1"]
    url = f"http://bücher.example:{receiver.port}/hook"
    created = send(as_editor, "post", "/api/webhooks", {"name": "ops", "url": url})
    assert created.status_code == 201 and created.json()["url"] == url
    tested = as_editor.post(f"/api/webhooks/{created.json()['id']}/test")
    assert tested.status_code == 200 and tested.json()["status"] == "delivered"
    assert receiver.requests[0].headers["host"] == f"xn--bcher-kva.example:{receiver.port}"


@pytest.mark.parametrize("url", ["http://a..b/hook", f"http://{'ü' * 70}.example/hook"])
def test_a_host_that_cannot_be_idna_encoded_is_refused_when_saved(as_editor, url):
    response = send(as_editor, "post", "/api/webhooks", {"name": "x", "url": url})
    assert response.status_code == 400
    assert "not a valid host name" in response.json()["error"]
    assert not Webhook.objects.exists()


def test_a_test_send_that_fails_unexpectedly_answers_with_the_error(as_editor, project, receiver):
    # A secret edited by hand in the database: signing the request fails.
    hook = Webhook.objects.create(project=project, name="ops", url=receiver.url, secret="whsec_!")
    tested = as_editor.post(f"/api/webhooks/{hook.pk}/test")
    assert tested.status_code == 200
    body = tested.json()
    assert body["status"] == "failed" and body["last_error"].startswith("unexpected error: ")
    assert body["attempts"][0]["error"] == body["last_error"]
    assert receiver.requests == []


def test_secrets_are_hidden_from_viewers(client, viewer, project):
    hook = Webhook.objects.create(project=project, name="ops", url="https://example.com/h")
    client.force_login(viewer)
    body = client.get(f"/api/webhooks/{hook.pk}").json()
    assert "secret" not in body and body["secret_hint"] == f"whsec_…{hook.secret[-4:]}"


def test_test_send_and_alerts_show_deliveries_with_attempts(as_editor, project, receiver, t0):
    from tests.alerts.conftest import Reply, insert_stages

    hook = send(as_editor, "post", "/api/webhooks", {"name": "ops", "url": receiver.url}).json()
    tested = as_editor.post(f"/api/webhooks/{hook['id']}/test")
    assert tested.status_code == 200 and tested.json()["status"] == "delivered"
    assert tested.json()["attempts"][0]["status_code"] == 200

    insert_stages(project.id, [(t0, "failed", "billing", "kafka", "orders", "g")])
    rule = send(
        as_editor,
        "post",
        "/api/alert-rules",
        {
            **RULE,
            "params": {"threshold": 0, "window_seconds": 3600},
            "for_seconds": 0,
            "webhooks": [hook["id"]],
        },
    ).json()
    receiver.script(Reply(503, headers={"Retry-After": "60"}))
    evaluate_rule(rule["id"], t0)
    sender.deliver_due(t0)
    (alert,) = as_editor.get("/api/alerts?state=firing").json()["items"]
    assert alert["rule"] == rule["id"] and alert["state"] == "firing"
    assert alert["labels"]["channel"] == "orders"
    (delivery,) = alert["deliveries"]
    assert delivery["status"] == "pending" and delivery["event"] == "firing"
    (attempt,) = delivery["attempts"]
    assert attempt["status_code"] == 503 and attempt["error"].startswith("HTTP 503")
    assert attempt["next_retry_at"] is not None
    webhook = as_editor.get(f"/api/webhooks/{hook['id']}").json()
    assert sorted(d["event"] for d in webhook["deliveries"]) == ["firing", "test"]
    assert as_editor.get("/api/alerts?state=nope").status_code == 400


def test_lists_are_paginated(as_editor, project):
    for n in range(5):
        AlertRule.objects.create(project=project, name=f"r{n}", kind="dead_letters")
    first = as_editor.get("/api/alert-rules?limit=2").json()
    second = as_editor.get(f"/api/alert-rules?limit=2&cursor={first['next_cursor']}").json()
    third = as_editor.get(f"/api/alert-rules?limit=2&cursor={second['next_cursor']}").json()
    names = [r["name"] for page in (first, second, third) for r in page["items"]]
    assert names == ["r0", "r1", "r2", "r3", "r4"] and third["next_cursor"] is None


def test_viewers_cannot_change_or_delete_rules_and_webhooks(client, viewer, project):
    rule = AlertRule.objects.create(project=project, name="DLQ", kind="dead_letters")
    hook = Webhook.objects.create(project=project, name="ops", url="https://example.com/h")
    client.force_login(viewer)
    for method, url in (
        ("put", f"/api/alert-rules/{rule.pk}"),
        ("delete", f"/api/alert-rules/{rule.pk}"),
        ("put", f"/api/webhooks/{hook.pk}"),
        ("delete", f"/api/webhooks/{hook.pk}"),
        ("post", f"/api/webhooks/{hook.pk}/test"),
    ):
        response = send(client, method, url, {"name": "renamed"})
        assert response.status_code == 403, (method, url)
        assert "editor role" in response.json()["error"]
    rule.refresh_from_db()
    hook.refresh_from_db()
    assert rule.name == "DLQ" and hook.name == "ops"
    assert not hook.deliveries.exists()


SLACK = "https://hooks.slack.com/services/T0001/B0002/sEcReTsEcReT"
WITH_USER = "https://robot:hunter2@alerts.example.com:8443/in?key=abc"


@pytest.fixture
def credential_hooks(project):
    return [
        Webhook.objects.create(project=project, name="chat", url=SLACK, format="slack"),
        Webhook.objects.create(project=project, name="tickets", url=WITH_USER),
    ]


def test_viewers_and_tokens_see_webhook_urls_without_their_credentials(
    client, viewer, read_token, credential_hooks
):
    slack, tickets = credential_hooks
    client.force_login(viewer)
    listed = {w["name"]: w["url"] for w in client.get("/api/webhooks").json()["items"]}
    assert listed == {
        "chat": "https://hooks.slack.com/…",
        "tickets": "https://alerts.example.com:8443/…",
    }
    assert client.get(f"/api/webhooks/{slack.pk}").json()["url"] == "https://hooks.slack.com/…"
    client.logout()
    auth = {"HTTP_AUTHORIZATION": f"Bearer {read_token}"}
    body = client.get(f"/api/webhooks/{tickets.pk}", **auth).content.decode()
    assert "hunter2" not in body and "robot" not in body and "key=abc" not in body
    assert json.loads(body)["url"] == "https://alerts.example.com:8443/…"


def test_editors_see_webhook_urls_whole(as_editor, credential_hooks):
    listed = {w["name"]: w["url"] for w in as_editor.get("/api/webhooks").json()["items"]}
    assert listed == {"chat": SLACK, "tickets": WITH_USER}
    slack = credential_hooks[0]
    assert as_editor.get(f"/api/webhooks/{slack.pk}").json()["url"] == SLACK


def make_alert(project, rule, fingerprint, started_at, resolved_at=None):
    return Alert.objects.create(
        project=project,
        rule=rule,
        fingerprint=fingerprint,
        labels={"project": project.slug},
        state="resolved" if resolved_at else "firing",
        started_at=started_at,
        firing_at=started_at,
        resolved_at=resolved_at,
        last_seen_at=resolved_at or started_at,
    )


def test_alerts_are_listed_for_the_window_they_were_active_in(as_editor, project, t0):
    rule = AlertRule.objects.create(project=project, name="DLQ", kind="dead_letters")
    H = dt.timedelta(hours=1)
    old = make_alert(project, rule, "a" * 16, t0 - 5 * H, resolved_at=t0 - 3 * H)
    current = make_alert(project, rule, "b" * 16, t0 - H)

    def ids(query):
        response = as_editor.get(f"/api/alerts?{query}")
        assert response.status_code == 200, response.content
        return {a["id"] for a in response.json()["items"]}

    def at(moment):
        return rfc3339(moment)

    assert ids("") == {old.pk, current.pk}
    assert ids(f"since={at(t0 - 6 * H)}&until={at(t0 - 2 * H)}") == {old.pk}
    assert ids(f"since={at(t0 - 2 * H)}&until={at(t0)}") == {current.pk}
    assert ids(f"since={at(t0 - 6 * H)}&until={at(t0 - 5.5 * H)}") == set()
    assert as_editor.get("/api/alerts?until=soon").status_code == 400


class RowCounter:
    """Counts the rows every query of a request reads (psycopg reports them
    as the cursor's rowcount)."""

    def __init__(self):
        self.rows = 0

    def __call__(self, execute, sql, params, many, context):
        result = execute(sql, params, many, context)
        self.rows += max(context["cursor"].rowcount, 0)
        return result


def rows_read(client, url):
    counter = RowCounter()
    with connection.execute_wrapper(counter):
        response = client.get(url)
    assert response.status_code == 200
    return response, counter.rows


def add_deliveries(alert, hook, count, start, attempts=1):
    deliveries = Delivery.objects.bulk_create(
        Delivery(
            project_id=alert.project_id,
            webhook=hook,
            alert=alert,
            event="repeat",
            message_id=Delivery.new_message_id(),
            body="{}" * 500,
            status="failed",
            created_at=start + dt.timedelta(seconds=n),
            give_up_at=start,
            attempt_count=attempts,
        )
        for n in range(count)
    )
    Attempt.objects.bulk_create(
        Attempt(
            delivery=d, at=d.created_at + dt.timedelta(seconds=n), status_code=500, duration_ms=1
        )
        for d in deliveries
        for n in range(attempts)
    )
    return deliveries


def test_old_deliveries_are_not_read_for_the_alerts_list_or_page(as_editor, project, t0):
    rule = AlertRule.objects.create(project=project, name="DLQ", kind="dead_letters")
    hook = Webhook.objects.create(project=project, name="ops", url="https://example.com/h")
    alert = make_alert(project, rule, "c" * 16, t0 - dt.timedelta(days=3))
    newest = add_deliveries(alert, hook, 30, t0 - dt.timedelta(days=1), attempts=2)
    as_editor.get("/alerts/")  # the first page view remembers the project in the session
    _, api_rows = rows_read(as_editor, "/api/alerts")
    _, page_rows = rows_read(as_editor, "/alerts/")
    add_deliveries(alert, hook, 470, t0 - dt.timedelta(days=3), attempts=2)  # older ones

    response, api_rows_after = rows_read(as_editor, "/api/alerts")
    (listed,) = response.json()["items"]
    expected = [d.message_id for d in reversed(newest)][:20]
    assert [d["message_id"] for d in listed["deliveries"]] == expected
    assert all(len(d["attempts"]) == 2 for d in listed["deliveries"])
    assert api_rows_after == api_rows
    page, page_rows_after = rows_read(as_editor, "/alerts/")
    assert page.content.decode().count("repeat failed") == 5
    assert page_rows_after == page_rows


def test_a_delivery_retried_very_often_lists_its_newest_attempts(as_editor, project, t0):
    rule = AlertRule.objects.create(project=project, name="DLQ", kind="dead_letters")
    hook = Webhook.objects.create(project=project, name="ops", url="https://example.com/h")
    alert = make_alert(project, rule, "d" * 16, t0 - dt.timedelta(days=3))
    (delivery,) = add_deliveries(alert, hook, 1, t0 - dt.timedelta(days=2), attempts=150)
    for url in ("/api/alerts", f"/api/webhooks/{hook.pk}"):
        body = as_editor.get(url).json()
        (listed,) = body["items"][0]["deliveries"] if "items" in body else body["deliveries"]
        assert listed["attempt_count"] == 150
        times = [a["at"] for a in listed["attempts"]]
        assert len(times) == 100 and times == sorted(times)  # oldest first, as they happened
        assert times[-1] == rfc3339(delivery.created_at + dt.timedelta(seconds=149))
