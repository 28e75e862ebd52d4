"""The Delivery page, the flow graph's mark and a journey's badge in real Chromium."""

import time

import pytest

from tests.delivery.conftest import settle
from tests.delivery.test_findings import Shop

pytestmark = pytest.mark.browser


def test_a_duplicate_shows_on_the_delivery_page_the_flow_edge_and_the_journey(
    signed_in, web_server, project
):
    now = time.time_ns()
    shop = Shop()
    for n in range(3):
        shop.publish(f"ord-{n}", now - (30 - n) * 10**9)
        shop.process(f"ord-{n}", now - (29 - n) * 10**9)
    shop.process("ord-1", now - 20 * 10**9)
    trace, _ = shop.published["ord-1"]
    shop.store(project.id)
    settle()

    page = signed_in
    page.goto(f"{web_server}/delivery/?window=1h")
    page.wait_for_selector("[data-live-state].live-on")
    row = page.locator('#delivery-table tr[data-group="payments"]')
    assert row.locator('td[data-kind="duplicate"] .badge').text_content() == "1"
    assert row.locator('td[data-kind="delivered_once"]').text_content() == "2"
    finding = page.locator('#delivery-findings tr[data-kind="duplicate"]')
    assert "ord-1" in finding.text_content() and "processed 2×" in finding.text_content()

    page.goto(f"{web_server}/?window=1h")
    page.wait_for_selector("[data-live-state].live-on")
    label = page.evaluate(
        "window.eventscopeFlow.cy"
        ".getElementById('e|channel:kafka:orders|service:payments|consume|payments').data('label')"
    )
    assert "⚑ 1 delivery" in label

    page.goto(f"{web_server}/traces/{trace}")
    badge = page.locator("#delivery-badges a")
    assert badge.text_content() == "duplicate · payments"
    badge.click()
    page.wait_for_url("**/delivery/?**kind=duplicate**")
    assert page.locator('#delivery-findings tr[data-kind="duplicate"]').count() == 1
