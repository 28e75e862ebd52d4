"""Sign-in throttling: a username or an address that fails too often is
locked out (429, even with the right password), and every attempt is
logged and audited."""

import datetime as dt
import logging

import pytest
from axes.models import AccessAttempt
from django.contrib.auth import get_user_model
from django.test import Client
from django.utils import timezone

from dashboard.audit.models import AuditEvent

PASSWORD = "correct horse battery"  # tests/conftest.py's password for every user
LIMIT = 3


@pytest.fixture(autouse=True)
def low_limit(settings):
    settings.AXES_FAILURE_LIMIT = LIMIT


def sign_in(client, username, password, address="127.0.0.1"):
    return client.post("/login/", {"username": username, "password": password}, REMOTE_ADDR=address)


def actions(actor):
    return list(
        AuditEvent.objects.filter(actor=actor).order_by("time", "id").values_list("action", "ip")
    )


def test_wrong_passwords_lock_the_user_out_even_with_the_right_one(
    client, viewer, caplog, settings
):
    caplog.set_level(logging.INFO, logger="dashboard.audit")
    for _ in range(LIMIT - 1):
        response = sign_in(client, "vera", "guess")
        assert response.status_code == 200 and "didn't match" in response.content.decode()
    locked = sign_in(client, "vera", "guess")
    assert locked.status_code == 429
    assert "Sign-in locked" in locked.content.decode()
    assert int(locked["Retry-After"]) == settings.AXES_COOLOFF_TIME.total_seconds()
    right = sign_in(client, "vera", PASSWORD)
    assert right.status_code == 429 and "even with the right password" in right.content.decode()
    assert client.get("/").status_code == 302  # not signed in
    assert (
        actions("vera")
        == [("login.failed", "127.0.0.1")] * (LIMIT - 1) + [("login.locked_out", "127.0.0.1")] * 2
    )
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert sum("login.failed by vera from 127.0.0.1" in m for m in warnings) == LIMIT - 1
    assert sum("login.locked_out by vera" in m for m in warnings) == 2


def test_the_lockout_holds_from_another_address_and_ends_after_the_cool_off(
    client, viewer, settings
):
    for _ in range(LIMIT):
        sign_in(client, "vera", "guess", "198.51.100.1")
    assert sign_in(Client(), "vera", PASSWORD, "198.51.100.2").status_code == 429
    # The cool-off counts from the last attempt.
    past = timezone.now() - settings.AXES_COOLOFF_TIME - dt.timedelta(minutes=1)
    AccessAttempt.objects.update(attempt_time=past)
    assert sign_in(client, "vera", PASSWORD, "198.51.100.2").status_code == 302
    assert actions("vera")[-1] == ("login.succeeded", "198.51.100.2")


def test_one_address_trying_many_usernames_is_locked_out(client, viewer, editor):
    for name in ("alice", "bob", "carol")[:LIMIT]:
        sign_in(client, name, "guess", "192.0.2.50")
    # Even a real user with the right password, from that address...
    assert sign_in(client, "ed", PASSWORD, "192.0.2.50").status_code == 429
    # ...but not from their own.
    assert sign_in(Client(), "ed", PASSWORD, "192.0.2.51").status_code == 302


def test_a_success_of_another_account_does_not_clear_the_failures(client, viewer, editor):
    for _ in range(LIMIT - 1):
        sign_in(client, "vera", "guess", "192.0.2.9")
    assert sign_in(Client(), "ed", PASSWORD, "192.0.2.9").status_code == 302
    assert sign_in(client, "vera", "guess", "192.0.2.9").status_code == 429


def test_behind_proxies_the_forwarded_client_address_is_locked_and_audited(
    client, viewer, settings
):
    settings.PROXY_COUNT = 1
    spoofed = "6.6.6.6, 203.0.113.5"  # the left entry was written by the client
    for _ in range(LIMIT):
        client.post(
            "/login/",
            {"username": f"nobody{_}", "password": "x"},
            REMOTE_ADDR="10.0.0.2",
            HTTP_X_FORWARDED_FOR=spoofed,
        )
    assert AccessAttempt.objects.filter(ip_address="203.0.113.5").count() == LIMIT
    assert set(AuditEvent.objects.values_list("ip", flat=True)) == {"203.0.113.5"}
    # Another client behind the same proxy is not affected.
    other = Client().post(
        "/login/",
        {"username": "vera", "password": PASSWORD},
        REMOTE_ADDR="10.0.0.2",
        HTTP_X_FORWARDED_FOR="203.0.113.6",
    )
    assert other.status_code == 302


def test_sign_in_and_out_are_audited(client, viewer):
    assert sign_in(client, "vera", PASSWORD, "192.0.2.1").status_code == 302
    assert client.post("/logout/", REMOTE_ADDR="192.0.2.1").status_code == 302
    assert actions("vera") == [("login.succeeded", "192.0.2.1"), ("logout", "192.0.2.1")]
    event = AuditEvent.objects.get(action="login.succeeded")
    assert event.project is None and event.project_slug == ""


def test_an_unknown_username_is_counted_like_a_known_one(client, db):
    for _ in range(LIMIT):
        sign_in(client, "ghost", "guess")
    get_user_model().objects.create_user("ghost", password=PASSWORD)
    assert sign_in(client, "ghost", PASSWORD).status_code == 429
