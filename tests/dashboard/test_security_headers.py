"""Every page carries a Content-Security-Policy without 'unsafe-inline', the
templates hold nothing that policy would block, and signed-in pages and the
API are never cached."""

import re
from pathlib import Path

import pytest
from django.urls import URLPattern, URLResolver, get_resolver

from dashboard.alerts.models import AlertRule, Webhook
from tests.dashboard.world import store_order

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE_DIRS = [ROOT / "templates", *ROOT.glob("dashboard/**/templates")]
# An attribute named on<something>=: an inline event handler.
INLINE_HANDLER = re.compile(r"<[^>]*\son[a-z]+\s*=", re.IGNORECASE | re.DOTALL)
SCRIPT_TAG = re.compile(r"<script\b([^>]*)>(.*?)</script>", re.IGNORECASE | re.DOTALL)


def templates():
    found = sorted(p for d in TEMPLATE_DIRS for p in d.rglob("*.html"))
    assert len(found) > 15
    return found


def directives(policy: str) -> dict:
    parsed = {}
    for part in policy.split(";"):
        name, *values = part.split()
        parsed[name] = values
    return parsed


@pytest.mark.parametrize("path", templates(), ids=lambda p: str(p.relative_to(ROOT)))
def test_no_template_holds_inline_script_handlers_or_styles(path):
    text = path.read_text()
    assert not INLINE_HANDLER.search(text), "inline event handler: use static/js"
    for attributes, body in SCRIPT_TAG.findall(text):
        assert "src=" in attributes and not body.strip(), "inline <script>: use static/js"
    assert not re.search(r"<style\b|\sstyle\s*=", text), "inline style: use static/css"
    assert "javascript:" not in text


def _plain_urls(patterns, prefix=""):
    """Every routed path without a parameter, e.g. "/failures/"."""
    for entry in patterns:
        route = str(entry.pattern)
        if isinstance(entry, URLResolver):
            yield from _plain_urls(entry.url_patterns, prefix + route)
        elif isinstance(entry, URLPattern) and "<" not in route:
            yield "/" + prefix + route


@pytest.fixture
def world(project):
    ids = store_order(project.id, event_id="evt-csp")
    hook = Webhook.objects.create(project=project, name="ops", url="https://example.com/hook")
    rule = AlertRule.objects.create(project=project, name="r", kind="failed_events", params={})
    return {"trace": ids["trace"], "hook": hook.pk, "rule": rule.pk}


@pytest.mark.usefixtures("telemetry_db")
def test_every_page_and_answer_carries_the_policy(client, admin_user, world):
    urls = sorted(set(_plain_urls(get_resolver().url_patterns)))
    assert {"/", "/audit/", "/members/", "/api/audit", "/login/"} <= set(urls)
    urls += [
        f"/traces/{world['trace']}",
        "/events/evt-csp",
        f"/webhooks/{world['hook']}/",
        f"/alerts/rules/{world['rule']}/edit",
        "/no-such-page/",
    ]
    checked = 0
    for signed_in in (False, True):
        if signed_in:
            client.force_login(admin_user)
        for url in urls:
            response = client.get(url)
            policy = directives(response["Content-Security-Policy"])
            assert policy["script-src"] == ["'self'"], url
            assert policy["style-src"] == ["'self'"], url
            assert policy["frame-ancestors"] == ["'none'"], url
            assert "'unsafe-inline'" not in response["Content-Security-Policy"], url
            assert "'unsafe-eval'" not in response["Content-Security-Policy"], url
            assert response["X-Frame-Options"] == "DENY", url
            assert response["X-Content-Type-Options"] == "nosniff", url
            assert response["Referrer-Policy"] == "same-origin", url
            if url.startswith("/api/") or signed_in:
                assert "no-store" in response.get("Cache-Control", ""), url
            checked += 1
    assert checked > 40


@pytest.mark.usefixtures("telemetry_db")
def test_rendered_pages_run_no_inline_script(client, admin_user, world):
    """What the browser gets: scripts only by src, data blocks only as JSON."""
    client.force_login(admin_user)
    for url in ("/", "/lag/", "/failures/", "/alerts/", "/tokens/", "/members/", "/audit/"):
        html = client.get(url).content.decode()
        for attributes, body in SCRIPT_TAG.findall(html):
            code = "src=" not in attributes and 'type="application/json"' not in attributes
            assert not code and ("src=" not in attributes or not body.strip()), url
        assert not INLINE_HANDLER.search(html), url
        assert '"includeIndicatorStyles": false' in html, url


def test_static_files_stay_cacheable(client, admin_user):
    client.force_login(admin_user)
    response = client.get("/static/js/forms.js")
    assert response.status_code == 200
    assert "no-store" not in response.get("Cache-Control", "")


def test_signed_in_pages_are_no_store(client, admin_user):
    client.force_login(admin_user)
    assert "no-store" in client.get("/tokens/")["Cache-Control"]


def test_hsts_is_sent_over_https_when_configured(admin_user, settings):
    from django.test import Client

    # The middleware reads its settings when a client first builds it.
    settings.SECURE_HSTS_SECONDS = 0
    assert "Strict-Transport-Security" not in Client().get("/login/", secure=True)
    settings.SECURE_HSTS_SECONDS = 31536000
    client = Client()
    secure = client.get("/login/", secure=True)
    assert secure["Strict-Transport-Security"] == "max-age=31536000"
    assert "Strict-Transport-Security" not in client.get("/login/")


def _settings_with(**env):
    import os
    import subprocess
    import sys

    code = (
        "import dashboard.settings as s; "
        "print(s.SECURE_HSTS_SECONDS, s.AXES_FAILURE_LIMIT, s.AXES_COOLOFF_TIME.total_seconds(), "
        "s.PROXY_COUNT, s.AUDIT_RETENTION_DAYS)"
    )
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_the_settings_come_from_the_environment_and_bad_values_fail_loudly():
    done = _settings_with(
        EVENTSCOPE_HSTS_SECONDS="31536000",
        EVENTSCOPE_LOGIN_FAILURE_LIMIT="5",
        EVENTSCOPE_LOGIN_COOLOFF_MINUTES="30",
        EVENTSCOPE_PROXY_COUNT="2",
        EVENTSCOPE_AUDIT_RETENTION_DAYS="90",
    )
    assert done.stdout.split() == ["31536000", "5", "1800.0", "2", "90"], done.stderr
    bad = _settings_with(EVENTSCOPE_LOGIN_FAILURE_LIMIT="0")
    assert bad.returncode != 0 and "EVENTSCOPE_LOGIN_FAILURE_LIMIT='0'" in bad.stderr


@pytest.mark.django_db(transaction=True)
async def test_the_headers_are_the_same_under_asgi(async_client, admin_user, consumer_connections):
    """The web app runs under uvicorn: the async path sets the same headers."""
    anonymous = await async_client.get("/login/")
    assert "'unsafe-inline'" not in anonymous["Content-Security-Policy"]
    await async_client.aforce_login(admin_user)
    page = await async_client.get("/tokens/")
    assert page.status_code == 200 and "no-store" in page["Cache-Control"]
    assert directives(page["Content-Security-Policy"])["script-src"] == ["'self'"]
    static = await async_client.get("/static/js/forms.js")
    assert "no-store" not in static.get("Cache-Control", "")
