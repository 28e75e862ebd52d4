"""Tokens and members pages: admins only; secrets shown once; a project keeps an admin."""

import pytest
from django.contrib.auth import get_user_model
from django.test import Client

from collector.models import ApiToken, Scope
from dashboard.accounts.models import Membership, Role


def test_only_admins_manage_tokens_and_members(client, viewer, editor):
    for user in (viewer, editor):
        client.force_login(user)
        assert client.get("/tokens/").status_code == 403
        assert client.get("/members/").status_code == 403
        assert client.post("/tokens/", {"name": "x", "scope": "read"}).status_code == 403
    assert not ApiToken.objects.exists()


def test_a_created_token_is_shown_once_and_works(client, admin_user, project):
    client.force_login(admin_user)
    response = client.post("/tokens/", {"name": "grafana", "scope": Scope.READ})
    # Post/redirect/get: reloading the page cannot issue a second token.
    assert response.status_code == 302 and response["Location"] == "/tokens/"
    shown = client.get("/tokens/")
    secret = shown.context["new_secret"]
    assert secret in shown.content.decode() and "copy the token now" in shown.content.decode()
    assert ApiToken.objects.authenticate(secret, Scope.READ).project == project
    listing = client.get("/tokens/").content.decode()  # a reload
    assert "grafana" in listing and secret not in listing
    assert ApiToken.objects.count() == 1
    client.logout()
    assert client.get("/api/flow", HTTP_AUTHORIZATION=f"Bearer {secret}").status_code == 200


def test_revoking_a_token_stops_it(client, admin_user, project):
    token, secret = ApiToken.issue(project, "old", Scope.READ)
    client.force_login(admin_user)
    assert client.post(f"/tokens/{token.pk}/revoke").status_code == 302
    assert ApiToken.objects.authenticate(secret, Scope.READ) is None


def test_tokens_of_another_project_cannot_be_revoked(client, admin_user, other_project):
    token, _ = ApiToken.issue(other_project, "theirs", Scope.READ)
    client.force_login(admin_user)
    assert client.post(f"/tokens/{token.pk}/revoke").status_code == 404
    token.refresh_from_db()
    assert token.revoked_at is None


def test_bad_token_forms_say_what_is_wrong(client, admin_user):
    client.force_login(admin_user)
    response = client.post("/tokens/", {"name": "", "scope": "read"})
    assert response.status_code == 400 and "name" in response.content.decode()
    response = client.post("/tokens/", {"name": "x", "scope": "root"})
    assert response.status_code == 400 and "Scope must be" in response.content.decode()


def test_admins_add_change_and_remove_members(client, admin_user, project, other_project):
    newcomer = get_user_model().objects.create_user("nina", password="pw-pw-pw-pw")
    # Existing accounts can be added from the other projects one administers.
    Membership.objects.create(user=admin_user, project=other_project, role=Role.ADMIN)
    Membership.objects.create(user=newcomer, project=other_project, role=Role.VIEWER)
    client.force_login(admin_user)
    client.get("/members/?project=shop")  # the project the forms below act on
    assert client.post("/members/", {"username": "nina", "role": Role.VIEWER}).status_code == 302
    membership = Membership.objects.get(user=newcomer, project=project)
    client.post(f"/members/{membership.pk}", {"role": Role.EDITOR})
    membership.refresh_from_db()
    assert membership.role == Role.EDITOR
    client.post(f"/members/{membership.pk}", {"action": "remove"})
    assert not Membership.objects.filter(pk=membership.pk).exists()
    missing = client.post("/members/", {"username": "ghost", "role": Role.VIEWER})
    assert missing.status_code == 400 and "No account “ghost” that you can add" in (
        missing.content.decode()
    )


def test_the_last_admin_cannot_be_removed_or_demoted(client, admin_user, project):
    client.force_login(admin_user)
    mine = Membership.objects.get(user=admin_user, project=project)
    assert client.post(f"/members/{mine.pk}", {"action": "remove"}).status_code == 400
    assert client.post(f"/members/{mine.pk}", {"role": Role.VIEWER}).status_code == 400
    mine.refresh_from_db()
    assert mine.role == Role.ADMIN


@pytest.mark.django_db
def test_forms_need_a_csrf_token(admin_user):
    from django.test import Client

    strict = Client(enforce_csrf_checks=True)
    strict.force_login(admin_user)
    assert strict.post("/tokens/", {"name": "x", "scope": "read"}).status_code == 403
    page = strict.get("/tokens/")
    token = page.cookies["csrftoken"].value
    ok = strict.post("/tokens/", {"name": "x", "scope": "read", "csrfmiddlewaretoken": token})
    assert ok.status_code == 302


def test_read_tokens_record_their_last_use_at_most_once_a_minute(client, admin_user, project):
    import datetime as dt

    from django.utils import timezone

    token, secret = ApiToken.issue(project, "grafana", Scope.READ)
    client.force_login(admin_user)
    assert "never" in client.get("/tokens/").content.decode()
    api = Client()
    assert api.get("/api/flow", HTTP_AUTHORIZATION=f"Bearer {secret}").status_code == 200
    token.refresh_from_db()
    first = token.last_used_at
    assert first is not None and timezone.now() - first < dt.timedelta(seconds=30)
    assert first.strftime("%Y-%m-%d %H:%M") in client.get("/tokens/").content.decode()
    api.get("/api/failures", HTTP_AUTHORIZATION=f"Bearer {secret}")
    token.refresh_from_db()
    assert token.last_used_at == first  # within the minute: no write
    earlier = timezone.now() - dt.timedelta(minutes=5)
    ApiToken.objects.filter(pk=token.pk).update(last_used_at=earlier)
    api.get("/api/failures", HTTP_AUTHORIZATION=f"Bearer {secret}")
    token.refresh_from_db()
    assert token.last_used_at > earlier + dt.timedelta(minutes=4)


def _comparable(html: str, username: str) -> str:
    """The page without what differs on every render (CSRF tokens are masked
    afresh each time) and with the name asked for made neutral."""
    import re

    html = re.sub(r'("X-CSRFToken": "|name="csrfmiddlewaretoken" value=")[^"]+', r"\1", html)
    return html.replace(username, "NAME")


def test_the_members_form_does_not_tell_who_else_has_an_account(
    client, admin_user, project, other_viewer
):
    """An unknown name and a user of a project this admin has no part in get
    the same answer: the form is no way to learn who uses the installation."""
    client.force_login(admin_user)
    stranger = client.post("/members/", {"username": "otto", "role": Role.VIEWER})
    unknown = client.post("/members/", {"username": "ottx", "role": Role.VIEWER})
    assert stranger.status_code == unknown.status_code == 400
    page = stranger.content.decode()
    assert _comparable(page, "otto") == _comparable(unknown.content.decode(), "ottx")
    assert "No account “otto” that you can add" in page
    assert not Membership.objects.filter(user=other_viewer, project=project).exists()
    # Nor does the page offer them.
    assert "otto" not in client.get("/members/").content.decode()


def test_members_of_another_project_one_administers_are_offered_and_added(
    client, admin_user, project, other_project, other_viewer
):
    Membership.objects.create(user=admin_user, project=other_project, role=Role.ADMIN)
    client.force_login(admin_user)
    page = client.get("/members/?project=shop").content.decode()
    assert '<option value="otto">' in page
    assert client.post("/members/", {"username": "otto", "role": Role.EDITOR}).status_code == 302
    assert Membership.objects.get(user=other_viewer, project=project).role == Role.EDITOR


def test_superusers_can_add_anyone(client, project, other_viewer):
    root = get_user_model().objects.create_superuser("root", password="pw-pw-pw-pw")
    client.force_login(root)
    client.get("/members/?project=shop")
    assert client.post("/members/", {"username": "otto", "role": Role.VIEWER}).status_code == 302
    assert Membership.objects.filter(user=other_viewer, project=project).exists()
