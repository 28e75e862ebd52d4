"""Failed events in real Chromium: new failures appear live, and one click opens
the event's whole journey."""

import pytest

from tests.browser.test_flow_page import send_otlp
from tests.dashboard.world import order_journey, store_order

pytestmark = pytest.mark.browser


def test_a_new_failure_appears_live_and_opens_its_journey(
    signed_in, web_server, collector, ingest_token
):
    page = signed_in
    page.goto(f"{web_server}/failures/")
    page.wait_for_selector("[data-live-state].live-on")
    assert page.locator("#failure-rows a.open-failure").count() == 0

    send_otlp(
        collector,
        order_journey(event_id="evt-live", email_error="SMTP 550 mailbox unavailable")[0],
        ingest_token,
    )
    link = page.locator("#failure-rows a.open-failure", has_text="evt-live")
    link.wait_for()
    assert "SMTP 550" in page.locator("#failure-groups").text_content()
    page.screenshot(path="/tmp/eventscope-failures.png", full_page=True)

    link.click()
    page.wait_for_url("**/events/evt-live?project=shop")
    stages = page.locator("#journey-stages").text_content()
    for expected in ("published", "processed", "failed", "received", "payments", "email", "audit"):
        assert expected in stages
    assert "SMTP 550 mailbox unavailable" in page.locator(".errors").text_content()
    rows = page.locator("#waterfall .wf-row")
    assert rows.count() >= 6
    rows.filter(has_text="email").first.click()
    assert "SMTP 550" in page.locator("#span-detail").text_content()
    page.screenshot(path="/tmp/eventscope-journey.png", full_page=True)


def test_hostile_telemetry_never_runs_in_the_browser(signed_in, web_server, project):
    evil = "<img src=x onerror=window.__pwned=1>"
    ids = store_order(
        project.id,
        event_id=f"e{evil}",
        names={"orders": f"o{evil}", "topic": f"t{evil}"},
        email_error=evil,
    )
    page = signed_in
    dialogs = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    for url in ("/", "/failures/", f"/traces/{ids['trace']}"):
        page.goto(f"{web_server}{url}")
        page.wait_for_load_state("networkidle")
        page.mouse.move(300, 400)
        assert page.evaluate("window.__pwned") is None, url
    page.goto(f"{web_server}/traces/{ids['trace']}")
    page.locator("#waterfall .wf-row", has_text="email").first.click()
    assert evil in page.locator("#span-detail").text_content()
    assert page.evaluate("window.__pwned") is None and dialogs == []


def test_pages_fit_a_phone(browser_page, web_server, viewer, project):
    from tests.browser.conftest import sign_in

    store_order(project.id)
    page = browser_page
    page.set_viewport_size({"width": 390, "height": 844})
    sign_in(page, web_server, viewer.username)
    for url, shot in (("/", "flow-phone"), ("/failures/", "failures-phone")):
        page.goto(f"{web_server}{url}")
        page.wait_for_selector("[data-live-state].live-on")
        width = page.evaluate("document.documentElement.scrollWidth")
        assert width <= 390 + 1, f"{url} scrolls sideways ({width}px)"
        page.screenshot(path=f"/tmp/eventscope-{shot}.png", full_page=True)


def test_a_failure_with_a_hostile_id_opens_its_own_journey(signed_in, web_server, project):
    from tests.dashboard.world import events_batch, store

    for event_id in ("../../tokens/", ".."):
        store(
            events_batch(
                [
                    {
                        "specversion": "1.0",
                        "id": event_id,
                        "source": "/shop/mailer",
                        "type": "mail.requested",
                        "esstage": "failed",
                        "esservice": "mailer",
                        "eserror": f"cannot send {event_id}",
                    }
                ],
                project.id,
            )
        )
    page = signed_in
    for event_id in ("../../tokens/", ".."):
        page.goto(f"{web_server}/failures/")
        page.locator("#failure-rows a.open-failure", has_text=event_id).first.click()
        page.wait_for_load_state()
        assert page.locator("h1").first.text_content() == f"Event {event_id}", page.url
        assert f"cannot send {event_id}" in page.locator(".errors").text_content()
