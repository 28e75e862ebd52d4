"""The journey waterfall of a 10,000-span trace stays light in real Chromium."""

import pytest

from tests.dashboard.world import store_big_trace

pytestmark = pytest.mark.browser


def test_a_10k_span_waterfall_keeps_only_visible_rows_in_the_dom(signed_in, web_server, project):
    trace = store_big_trace(project.id, 10_000)
    page = signed_in
    page.goto(f"{web_server}/traces/{trace}")
    box = page.locator("#waterfall")
    assert box.get_attribute("data-rows") == "10000"
    assert page.locator("#waterfall .wf-row").count() < 200
    box.evaluate("el => { el.scrollTop = el.scrollHeight; el.dispatchEvent(new Event('scroll')); }")
    page.locator("#waterfall .wf-row", has_text="SELECT row 9998").wait_for()
    assert page.locator("#waterfall .wf-row").count() < 200
    page.locator("#waterfall .wf-row", has_text="SELECT row 9998").click()
    assert "SELECT row 9998" in page.locator("#span-detail").text_content()
