"""Admin pages in real Chromium under the Content-Security-Policy: the
behaviours that used to be inline handlers (confirmations, the project
picker, selecting a new token) work from static/js, and the audit page and
the lockout page render (the fixture fails on any CSP violation)."""

import pytest

from collector.models import ApiToken
from dashboard.accounts.models import Membership, Role
from tests.browser.conftest import sign_in

pytestmark = pytest.mark.browser


def test_revoking_asks_first_and_the_project_picker_switches(
    browser_page, web_server, admin_user, other_project
):
    Membership.objects.create(user=admin_user, project=other_project, role=Role.ADMIN)
    page = sign_in(browser_page, web_server, admin_user.username)
    page.goto(f"{web_server}/tokens/?project=shop")
    page.fill("input[name=name]", "grafana")
    page.click("form.filters button[type=submit]")
    # The new secret is selected when clicked, ready to copy.
    page.click("#new-secret")
    selected = page.evaluate(
        "() => { const el = document.getElementById('new-secret');"
        " return [el.selectionStart, el.selectionEnd, el.value.length]; }"
    )
    assert selected[0] == 0 and selected[1] == selected[2] > 20
    token = ApiToken.objects.get(name="grafana")

    page.once("dialog", lambda dialog: dialog.dismiss())
    page.click("#tokens button.danger")
    page.wait_for_timeout(300)
    token.refresh_from_db()
    assert token.revoked_at is None

    page.once("dialog", lambda dialog: dialog.accept())
    page.click("#tokens button.danger")
    page.wait_for_selector("#tokens .badge.err")
    token.refresh_from_db()
    assert token.revoked_at is not None

    page.select_option("#project-picker", "other")
    page.wait_for_url(lambda url: "project=other" in url)
    assert "Other team" in page.text_content("h1")


def test_the_audit_page_lists_what_happened(browser_page, web_server, admin_user):
    page = sign_in(browser_page, web_server, admin_user.username)
    page.goto(f"{web_server}/tokens/")
    page.fill("input[name=name]", "ci")
    page.click("form.filters button[type=submit]")
    page.click("nav.mainnav a[data-area=audit]")
    assert page.locator("#audit tr[data-action='token.created']").count() == 1
    # The filter form swaps the table in place (htmx) and keeps the address shareable.
    page.select_option("#audit-filters select[name=action]", "token.revoked")
    page.click("#audit-filters button[type=submit]")
    page.wait_for_selector("#audit tr.empty")
    assert page.locator("#audit tr[data-action='token.created']").count() == 0
    assert "action=token.revoked" in page.url


def test_a_locked_out_sign_in_gets_the_lockout_page(browser_page, web_server, viewer, settings):
    settings.AXES_FAILURE_LIMIT = 2
    page = browser_page
    for _ in range(2):
        page.goto(f"{web_server}/login/")
        page.fill("#id_username", viewer.username)
        page.fill("#id_password", "wrong")
        page.click("button[type=submit]")
    assert page.locator("#locked-out h1").text_content() == "Sign-in locked"
