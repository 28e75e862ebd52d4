"""The search page in real Chromium: recent traces filtered and paged in place,
and a payload search whose hits open their journeys."""

import time

import pytest

from tests.dashboard.test_search import order_event
from tests.dashboard.world import events_batch, store, store_order

pytestmark = pytest.mark.browser


def test_recent_traces_filter_page_and_open(signed_in, web_server, project):
    now = time.time_ns()
    orders = [
        store_order(project.id, event_id=f"evt-{m}", start_ns=now - m * 60 * 10**9)
        for m in (1, 2, 3)
    ]
    page = signed_in
    page.goto(f"{web_server}/search/?limit=2")
    rows = page.locator("#recent-traces tbody tr")
    # Each order's trace and its batch consumer's own trace, newest first.
    assert rows.count() == 2
    assert orders[0]["audit_trace"][:14] in rows.nth(0).text_content()
    page.fill("#recent-filters input[name=service]", "payments")
    page.click("#recent-filters button[type=submit]")
    page.wait_for_url("**service=payments**")
    first = page.locator("#recent-traces tbody tr").nth(0)
    first.locator("a.recent-trace").wait_for()
    assert orders[0]["trace"][:14] in first.text_content()
    assert "web POST" in first.text_content() and "5" in first.text_content()
    page.click("#older-traces")
    page.wait_for_url("**cursor=**")
    later = page.locator("#recent-traces tbody tr")
    later.locator("a.recent-trace").first.wait_for()
    assert later.count() == 1 and orders[2]["trace"][:14] in later.text_content()
    later.locator("a.recent-trace").click()
    page.wait_for_url(f"**/traces/{orders[2]['trace']}")
    assert "POST /orders" in page.content()


def test_a_payload_search_lists_events_that_open(signed_in, web_server, project):
    store(
        events_batch(
            [order_event(f"ord-{i}", data={"customer": {"id": "c-42"}, "n": i}) for i in range(3)],
            project.id,
        )
    )
    page = signed_in
    page.goto(f"{web_server}/search/")
    page.fill("input[name=q]", "data.customer.id=c-42")
    page.click("#search-form button[type=submit]")
    hits = page.locator("#search-hits tbody tr")
    hits.first.wait_for()
    assert hits.count() == 3
    assert "payload" in hits.nth(0).text_content()
    hits.locator("a.search-hit", has_text="ord-1").click()
    page.wait_for_url("**/events/ord-1?source=%2Fshop%2Forders")
    assert "c-42" in page.content()
    page.goto(f"{web_server}/search/?q=colour%3Dred")
    assert "is not something search knows" in page.locator("[role=alert]").text_content()
