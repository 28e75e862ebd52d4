"""GET /api/audit: admins only (tokens too are refused), scoped to the
project, filtered, paginated, and as /api/openapi.json describes it."""

import datetime as dt

import pytest
from django.contrib.auth import get_user_model
from django.test import Client
from django.utils import timezone

from dashboard.audit.models import AuditEvent
from dashboard.audit.trail import record
from tests.dashboard.test_openapi import assert_documented


@pytest.fixture
def history(project, other_project):
    """Events in both projects and of the installation, a minute apart, oldest first."""
    start = timezone.now() - dt.timedelta(hours=1)
    rows = [
        ("token.created", "ada", project),
        ("member.added", "ada", project),
        ("token.created", "otto", other_project),
        ("login.failed", "ada", None),
        ("alert_rule.updated", "ed", project),
        ("token.revoked", "ada", project),
    ]
    for minute, (action, actor, where) in enumerate(rows):
        AuditEvent(
            action=action,
            actor=actor,
            project=where,
            project_slug=where.slug if where else "",
            target=f"#{minute}",
            ip="192.0.2.1",
            details={"n": minute},
            time=start + dt.timedelta(minutes=minute),
        ).save()
    return start


def test_only_signed_in_admins_read_it(client, viewer, editor, admin_user, read_token, history):
    for user in (viewer, editor):
        client.force_login(user)
        response = client.get("/api/audit")
        assert response.status_code == 403 and "admin role" in response.json()["error"]
    client.logout()
    assert client.get("/api/audit").status_code == 401
    token = Client().get("/api/audit", HTTP_AUTHORIZATION=f"Bearer {read_token}")
    assert token.status_code == 403 and "API tokens cannot read it" in token.json()["error"]
    client.force_login(admin_user)
    assert client.get("/api/audit").status_code == 200


def test_an_admin_sees_the_projects_events_newest_first(client, admin_user, history):
    client.force_login(admin_user)
    body = client.get("/api/audit").json()
    assert [item["target"] for item in body["items"]] == ["#5", "#4", "#1", "#0"]
    assert body["next_cursor"] is None
    first = body["items"][0]
    assert first == {
        "time": first["time"],
        "actor": "ada",
        "project": "shop",
        "action": "token.revoked",
        "target": "#5",
        "ip": "192.0.2.1",
        "details": {"n": 5},
    }
    assert first["time"].endswith("Z")


def test_a_superuser_also_sees_sign_ins(client, project, history):
    root = get_user_model().objects.create_superuser("root", password="pw-pw-pw-pw")
    client.force_login(root)
    targets = [i["target"] for i in client.get("/api/audit?project=shop").json()["items"]]
    assert "#3" in targets and "#2" not in targets


def test_pages_follow_the_cursor_without_gaps_or_repeats(client, admin_user, project, history):
    # Several events in the same microsecond: the cursor must still order them.
    same = timezone.now() - dt.timedelta(minutes=30)
    for n in range(5):
        AuditEvent(action="logout", actor="ada", project=project, target=f"s{n}", time=same).save()
    client.force_login(admin_user)
    seen, url = [], "/api/audit?limit=2"
    while url:
        body = client.get(url).json()
        assert len(body["items"]) <= 2
        seen += [item["target"] for item in body["items"]]
        url = f"/api/audit?limit=2&cursor={body['next_cursor']}" if body["next_cursor"] else None
    assert seen == ["s4", "s3", "s2", "s1", "s0", "#5", "#4", "#1", "#0"]


def test_filters_by_action_family_actor_and_time(client, admin_user, history):
    client.force_login(admin_user)

    def targets(query):
        return [i["target"] for i in client.get(f"/api/audit?{query}").json()["items"]]

    assert targets("action=token.created") == ["#0"]
    assert targets("action=token") == ["#5", "#0"]
    assert targets("actor=ed") == ["#4"]
    since = (history + dt.timedelta(minutes=1)).isoformat().replace("+00:00", "Z")
    until = (history + dt.timedelta(minutes=5)).isoformat().replace("+00:00", "Z")
    assert targets(f"since={since}&until={until}") == ["#4", "#1"]


def test_bad_parameters_say_what_is_wrong(client, admin_user, history):
    client.force_login(admin_user)
    for query, words in (
        ("action=token.stolen", "expected an action"),
        ("since=yesterday", "RFC 3339"),
        ("limit=0", "limit must be"),
        ("cursor=bm9wZQ", "cursor is not one"),
        ("since=2026-01-02T00:00:00Z&until=2026-01-01T00:00:00Z", "since must be before"),
    ):
        response = client.get(f"/api/audit?{query}")
        assert response.status_code == 400 and words in response.json()["error"], query


def test_answers_are_as_the_openapi_document_says(client, admin_user, viewer, history):
    document = client.get("/api/openapi.json").json()
    client.force_login(admin_user)
    record("webhook.updated", actor="ada", details={"before": {"a": 1}, "after": {"a": 2}})
    for url in ("/api/audit", "/api/audit?limit=1", "/api/audit?limit=0"):
        assert_documented(document, "/api/audit", "get", client.get(url))
    client.force_login(viewer)
    assert_documented(document, "/api/audit", "get", client.get("/api/audit"))


def test_every_api_answer_is_no_store(client, admin_user, history):
    client.force_login(admin_user)
    assert "no-store" in client.get("/api/audit")["Cache-Control"]
