"""Each audited action leaves exactly one audit row naming who did it, to
what, from where, and (for edits) what changed."""

import json

import pytest
from django.contrib.auth import get_user_model

from collector.models import ApiToken, Scope
from dashboard.accounts.models import Membership, Role
from dashboard.alerts.models import AlertRule, Webhook
from dashboard.audit.models import AuditEvent
from tests.alerts.conftest import receiver as receiver  # the real local HTTP receiver
from tests.dashboard.test_replay import order_events, with_recent_time
from tests.dashboard.world import events_batch, store

ADDRESS = "203.0.113.7"


def only(action) -> AuditEvent:
    """The one audit row of `action` (fails when there are none or several)."""
    rows = list(AuditEvent.objects.filter(action=action))
    assert len(rows) == 1, f"{action}: {len(rows)} rows: {rows}"
    return rows[0]


def send(client, method, url, body=None):
    return getattr(client, method)(
        url,
        json.dumps(body) if body is not None else "",
        content_type="application/json",
        REMOTE_ADDR=ADDRESS,
    )


def test_tokens_created_and_revoked(client, admin_user, project):
    client.force_login(admin_user)
    client.post("/tokens/", {"name": "grafana", "scope": Scope.READ}, REMOTE_ADDR=ADDRESS)
    token = ApiToken.objects.get()
    created = only("token.created")
    assert (created.actor, created.project_id, created.ip) == ("ada", project.pk, ADDRESS)
    assert created.target == f"read token “grafana” ({token.prefix}…)"
    assert created.details == {"token_id": token.pk, "scope": "read", "prefix": token.prefix}
    client.post(f"/tokens/{token.pk}/revoke", REMOTE_ADDR=ADDRESS)
    client.post(f"/tokens/{token.pk}/revoke", REMOTE_ADDR=ADDRESS)  # already revoked: no row
    revoked = only("token.revoked")
    assert (revoked.actor, revoked.target, revoked.ip) == ("ada", created.target, ADDRESS)


def test_members_added_re_roled_and_removed(client, admin_user, project):
    client.force_login(admin_user)
    client.post(
        "/members/new",
        {
            "username": "nina",
            "password1": "a long enough pass 1",
            "password2": "a long enough pass 1",
            "role": Role.VIEWER,
        },
        REMOTE_ADDR=ADDRESS,
    )
    added = only("member.added")
    assert (added.actor, added.target, added.ip, added.project_slug) == (
        "ada",
        "user nina",
        ADDRESS,
        "shop",
    )
    assert added.details == {"role": "viewer", "new_account": True}
    membership = Membership.objects.get(user__username="nina")
    client.post(f"/members/{membership.pk}", {"role": Role.EDITOR}, REMOTE_ADDR=ADDRESS)
    changed = only("member.role_changed")
    assert changed.target == "user nina"
    assert changed.details == {"before": {"role": "viewer"}, "after": {"role": "editor"}}
    client.post(f"/members/{membership.pk}", {"action": "remove"}, REMOTE_ADDR=ADDRESS)
    removed = only("member.removed")
    assert (removed.actor, removed.target, removed.details) == (
        "ada",
        "user nina",
        {"role": "editor"},
    )


def test_an_existing_user_added_and_a_taken_name_refused(
    client, admin_user, project, other_project, other_viewer
):
    Membership.objects.create(user=admin_user, project=other_project, role=Role.ADMIN)
    client.force_login(admin_user)
    client.get("/members/?project=shop")
    client.post("/members/", {"username": "otto", "role": Role.VIEWER}, REMOTE_ADDR=ADDRESS)
    assert only("member.added").details == {"role": "viewer", "new_account": False}
    taken = {"username": "otto", "password1": "a long pass 12", "password2": "a long pass 12"}
    assert client.post("/members/new", {**taken, "role": "viewer"}).status_code == 400
    assert only("member.create_refused").target == "user otto"
    assert get_user_model().objects.filter(username="otto").count() == 1


def test_alert_rules_through_the_api(client, editor, project):
    client.force_login(editor)
    rule = {"name": "Lagging", "kind": "lag", "params": {"threshold": 100}, "enabled": True}
    rule_id = send(client, "post", "/api/alert-rules", rule).json()["id"]
    created = only("alert_rule.created")
    assert (created.actor, created.ip, created.target) == (
        "ed",
        ADDRESS,
        f"alert rule {rule_id} “Lagging”",
    )
    assert created.details["after"]["params"]["threshold"] == 100
    send(client, "put", f"/api/alert-rules/{rule_id}", {"for_seconds": 30, "name": "Lag"})
    updated = only("alert_rule.updated")
    assert updated.details == {
        "before": {"for_seconds": 0, "name": "Lagging"},
        "after": {"for_seconds": 30, "name": "Lag"},
    }
    assert updated.target == f"alert rule {rule_id} “Lag”"
    send(client, "delete", f"/api/alert-rules/{rule_id}")
    deleted = only("alert_rule.deleted")
    assert deleted.target == f"alert rule {rule_id} “Lag”" and deleted.ip == ADDRESS
    assert deleted.details["before"]["for_seconds"] == 30
    assert AuditEvent.objects.filter(action__startswith="alert_rule.").count() == 3


def test_alert_rules_through_the_pages(client, editor, project):
    client.force_login(editor)
    client.post(
        "/alerts/rules/new",
        {"name": "Failures", "kind": "failed_events", "param_threshold": "5", "enabled": "on"},
        REMOTE_ADDR=ADDRESS,
    )
    rule = AlertRule.objects.get()
    assert only("alert_rule.created").target == f"alert rule {rule.pk} “Failures”"
    client.post(f"/alerts/rules/{rule.pk}/mute", {"seconds": "3600"}, REMOTE_ADDR=ADDRESS)
    muted = only("alert_rule.updated")
    assert muted.details["before"] == {"muted_until": None}
    assert muted.details["after"]["muted_until"].endswith("Z")
    client.post(f"/alerts/rules/{rule.pk}/delete", REMOTE_ADDR=ADDRESS)
    assert only("alert_rule.deleted").actor == "ed"


def test_webhooks_created_changed_tested_and_deleted(client, editor, project, receiver):
    client.force_login(editor)
    hook = {"name": "ops", "url": f"{receiver.url}/secret-path", "format": "json"}
    hook_id = send(client, "post", "/api/webhooks", hook).json()["id"]
    created = only("webhook.created")
    assert created.target == f"webhook {hook_id} “ops”" and created.ip == ADDRESS
    # The URL's path can be its credential and the secret is one: neither is kept.
    stored = Webhook.objects.get()
    assert "secret-path" not in json.dumps(created.details)
    assert stored.secret not in json.dumps(created.details)
    send(client, "put", f"/api/webhooks/{hook_id}", {"url": f"{receiver.url}/other-path"})
    updated = only("webhook.updated")
    assert set(updated.details["before"]) == {"url_fingerprint"}
    assert updated.details["before"] != updated.details["after"]
    assert "other-path" not in json.dumps(updated.details)
    # Through the page too: one row per action, whichever way it came.
    client.post(f"/webhooks/{hook_id}/test?project=shop", REMOTE_ADDR=ADDRESS)
    tested = only("webhook.tested")
    assert tested.details == {"status": "delivered", "error": None}
    assert len(receiver.requests) == 1
    client.post(f"/webhooks/{hook_id}/delete?project=shop", REMOTE_ADDR=ADDRESS)
    deleted = only("webhook.deleted")
    assert deleted.target == f"webhook {hook_id} “ops”" and deleted.actor == "ed"
    assert not Webhook.objects.exists()


@pytest.mark.usefixtures("telemetry_db")
def test_replays_from_the_api_and_the_page(client, editor, project, receiver):
    events, _ = with_recent_time(order_events())
    store(events_batch(events, project.id))
    hook = Webhook.objects.create(project=project, name="replayer", url=receiver.url)
    client.force_login(editor)
    response = send(client, "post", "/api/events/ord-7/replay", {"webhook": hook.pk})
    replay_id = response.json()["id"]
    replayed = only("event.replayed")
    assert (replayed.actor, replayed.ip, replayed.target) == (
        "ed",
        ADDRESS,
        "event ord-7 from /shop/orders",
    )
    assert replayed.details == {
        "replay": replay_id,
        "webhook": {"id": hook.pk, "name": "replayer"},
        "status": "delivered",
        "http_status": 200,
        "error": None,
    }
    client.post("/events/ord-7?project=shop", {"webhook": hook.pk}, REMOTE_ADDR=ADDRESS)
    assert AuditEvent.objects.filter(action="event.replayed").count() == 2


def test_the_actor_survives_the_account(client, admin_user, project):
    client.force_login(admin_user)
    client.post("/tokens/", {"name": "grafana", "scope": Scope.READ}, REMOTE_ADDR=ADDRESS)
    Membership.objects.filter(user=admin_user).delete()
    admin_user.delete()
    project.delete()
    event = AuditEvent.objects.get(action="token.created")
    assert (event.actor, event.project_slug) == ("ada", "shop")


def test_record_refuses_an_unknown_action(db):
    from dashboard.audit.trail import record

    with pytest.raises(ValueError, match="unknown audit action"):
        record("token.stolen", actor="x")
