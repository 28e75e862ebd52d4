"""Project admins create accounts: on the Members page and with `manage.py createuser`.
A new account is a member of one project with one role, never a superuser."""

import io

import pytest
from django.contrib.auth import get_user_model
from django.core.management import CommandError, call_command
from django.http import HttpRequest
from django.test import Client

from collector.models import Project
from dashboard.accounts.models import Membership, Role

PASSWORD = "orange kettle 94 march"


def test_an_admin_creates_an_account_that_can_sign_in_to_this_project_only(
    client, admin_user, project, other_project
):
    client.force_login(admin_user)
    page = client.get("/members/").content.decode()
    assert 'id="create-member"' in page and 'name="password1"' in page
    response = client.post(
        "/members/new?project=shop",
        {"username": "nora", "password1": PASSWORD, "password2": PASSWORD, "role": Role.EDITOR},
    )
    assert response.status_code == 302 and response["Location"] == "/members/"
    listing = client.get("/members/").content.decode()
    assert "Account nora created as editor" in listing
    assert "<td>nora</td>" in listing
    nora = get_user_model().objects.get(username="nora")
    assert not nora.is_superuser and not nora.is_staff
    assert Membership.objects.get(user=nora).project == project
    browser = Client()
    assert browser.post("/login/", {"username": "nora", "password": PASSWORD}).status_code == 302
    assert browser.get("/api/flow").status_code == 200
    assert browser.get("/api/flow?project=other").status_code == 404


@pytest.mark.parametrize(
    "form, message",
    [
        ({"password1": "short", "password2": "short"}, "This password is too short"),
        ({"password1": "password123", "password2": "password123"}, "too common"),
        ({"password2": "something else entirely"}, "didn’t match"),
        ({"username": "ada"}, "A user with that username already exists"),
        ({"username": "no spaces allowed"}, "Enter a valid username"),
        ({"username": "nul\x00name"}, "Null characters are not allowed"),
        ({"role": "owner"}, "Select a valid choice"),
    ],
)
def test_account_forms_say_what_is_wrong(client, admin_user, form, message):
    client.force_login(admin_user)
    data = {"username": "nora", "password1": PASSWORD, "password2": PASSWORD, "role": "viewer"}
    response = client.post("/members/new", {**data, **form})
    assert response.status_code == 400
    assert message in response.content.decode().replace("&#x27;", "'")
    assert not get_user_model().objects.filter(username="nora").exists()


def test_only_admins_create_accounts(client, editor):
    client.force_login(editor)
    data = {"username": "nora", "password1": PASSWORD, "password2": PASSWORD, "role": "admin"}
    assert client.post("/members/new", data).status_code == 403
    assert not get_user_model().objects.filter(username="nora").exists()


def createuser(*args, stdin=""):
    import sys

    out, err = io.StringIO(), io.StringIO()
    kept = sys.stdin
    sys.stdin = io.StringIO(stdin)  # not a terminal: no prompt
    try:
        call_command("createuser", *args, stdout=out, stderr=err)
    finally:
        sys.stdin = kept
    return out.getvalue(), err.getvalue()


def test_createuser_reads_the_password_from_a_file(project, tmp_path):
    secret = tmp_path / "pw"
    secret.write_text(PASSWORD + "\n")
    out, err = createuser(
        "ivo", "--project", "shop", "--role", "admin", "--password-file", str(secret)
    )
    assert out == "" and "created 'ivo', admin of project 'shop'" in err
    ivo = get_user_model().objects.get(username="ivo")
    assert ivo.check_password(PASSWORD) and not ivo.is_superuser
    assert Membership.objects.get(user=ivo, project=project).role == Role.ADMIN
    out, _ = createuser("ivy", "--project", "shop", "--password-file", "-", stdin=PASSWORD)
    assert get_user_model().objects.get(username="ivy").check_password(PASSWORD)
    assert Membership.objects.get(user__username="ivy").role == Role.VIEWER


def test_createuser_generates_and_prints_a_password_once(db):
    out, err = createuser("gus", "--project", "new-team", "--role", "editor")
    password = out.strip()
    assert len(password) >= 20 and "shown once" in err and "created project 'new-team'" in err
    # Sign-ins are checked against lockouts, which need the request.
    assert Client().login(request=HttpRequest(), username="gus", password=password)
    assert Project.objects.get(slug="new-team").memberships.get().role == Role.EDITOR


def test_createuser_refuses_weak_passwords_and_taken_names(project, admin_user, tmp_path):
    weak = tmp_path / "pw"
    weak.write_text("12345")
    with pytest.raises(CommandError, match="too short"):
        createuser("kim", "--project", "shop", "--password-file", str(weak))
    with pytest.raises(CommandError, match="already exists"):
        createuser("ada", "--project", "shop")
    with pytest.raises(CommandError, match="not a valid slug"):
        createuser("kim", "--project", "Not A Slug")
    with pytest.raises(CommandError, match="No such file"):
        createuser("kim", "--project", "shop", "--password-file", str(tmp_path / "missing"))
    assert not get_user_model().objects.filter(username="kim").exists()
