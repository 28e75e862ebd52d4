"""Authentication and project scoping shared by every page and API view."""

import json

import pytest
from django.http import JsonResponse
from django.test import RequestFactory

from collector.models import ApiToken, Scope
from dashboard.access import api_view
from dashboard.accounts.models import Role
from dashboard.query_params import (
    BadParameter,
    decode_cursor,
    encode_cursor,
    parse_limit,
    parse_window,
)


@api_view()
def whoami(request):
    return JsonResponse({"project": request.project.slug})


@api_view(role=Role.EDITOR)
def change(request):
    return JsonResponse({"changed": request.project.slug})


def _get(path="/api/x", **headers):
    request = RequestFactory().get(path, headers=headers)
    from django.contrib.auth.models import AnonymousUser

    request.user = AnonymousUser()
    request.session = {}
    return request


def test_api_without_credentials_is_401(db):
    response = whoami(_get())
    assert response.status_code == 401
    assert "authentication required" in json.loads(response.content)["error"]


def test_read_token_sees_its_own_project(read_token, project):
    response = whoami(_get(Authorization=f"Bearer {read_token}"))
    assert response.status_code == 200
    assert json.loads(response.content) == {"project": "shop"}


def test_ingest_token_cannot_read(ingest_token):
    assert whoami(_get(Authorization=f"Bearer {ingest_token}")).status_code == 401


def test_read_token_cannot_name_another_project(read_token, other_project):
    response = whoami(_get("/api/x?project=other", Authorization=f"Bearer {read_token}"))
    assert response.status_code == 404


def test_revoked_token_is_refused(project):
    token, plaintext = ApiToken.issue(project, "old", Scope.READ)
    token.revoke()
    assert whoami(_get(Authorization=f"Bearer {plaintext}")).status_code == 401


def test_tokens_are_read_only(read_token):
    response = change(_get(Authorization=f"Bearer {read_token}"))
    assert response.status_code == 403


def test_viewer_of_one_project_cannot_pick_another(other_viewer, project):
    request = _get("/api/x?project=shop")
    request.user = other_viewer
    assert whoami(request).status_code == 404


def test_viewer_lacks_editor_role(viewer):
    request = _get()
    request.user = viewer
    assert change(request).status_code == 403


def test_windows_and_ranges():
    since, until = parse_window({"window": "15m"})
    assert (until - since).total_seconds() == 900
    since, until = parse_window({"since": "2026-11-01T00:00:00Z", "until": "2026-11-02T00:00:00Z"})
    assert (until - since).days == 1
    with pytest.raises(BadParameter, match="expected one of"):
        parse_window({"window": "3y"})
    with pytest.raises(BadParameter, match="RFC 3339"):
        parse_window({"since": "yesterday"})
    with pytest.raises(BadParameter, match="before"):
        parse_window({"since": "2026-11-02T00:00:00Z", "until": "2026-11-01T00:00:00Z"})


def test_limits_and_cursors():
    assert parse_limit({}) == 50
    with pytest.raises(BadParameter):
        parse_limit({"limit": "100000"})
    cursor = encode_cursor(["2026-11-22T10:00:00+00:00", "abc"])
    assert decode_cursor({"cursor": cursor}) == ["2026-11-22T10:00:00+00:00", "abc"]
    with pytest.raises(BadParameter):
        decode_cursor({"cursor": "!!!"})
