"""Redriving the dead letters of a failure group in real Chromium: from the
failures page to a dry run, then the redrive, whose progress finishes live."""

import asyncio
import threading

import pika
import pytest

from dashboard.deadletters import jobs
from tests.browser.conftest import sign_in
from tests.dashboard.world import store_order
from tests.deadletters.conftest import RABBIT_API, RabbitWorld

pytestmark = [pytest.mark.browser, pytest.mark.brokers]


@pytest.fixture
def redrive_worker():
    """The worker's redrive loop, in a thread of this process (it sees the test's settings)."""
    loop = asyncio.new_event_loop()
    stop = asyncio.Event()

    def main():
        loop.run_until_complete(jobs.run(stop))

    thread = threading.Thread(target=main, daemon=True)
    thread.start()
    yield
    loop.call_soon_threadsafe(stop.set)
    thread.join(30)


def test_a_failure_group_is_redriven_and_its_progress_finishes_live(
    browser_page, web_server, editor, project, settings, redrive_worker
):
    settings.BROKERS = [f"{RABBIT_API}?project=shop"]
    world = RabbitWorld()
    try:
        orders = []
        for i in range(3):
            event = f"evt-{world.suffix}-{i}"
            ids = store_order(
                project.id, event_id=event, email_error=f"SMTP 550 mailbox {i} unavailable"
            )
            orders.append((event, ids["trace"]))
        for event, trace in orders:
            world.channel.basic_publish(
                "",
                world.source,
                b'{"order": 1}',
                pika.BasicProperties(
                    message_id=event, headers={"traceparent": f"00-{trace}-00f067aa0ba902b7-01"}
                ),
            )
        world.wait_depth(world.source, 3)
        for _ in range(3):
            method, _, _ = world.channel.basic_get(world.source)
            world.channel.basic_reject(method.delivery_tag, requeue=False)
        world.wait_depth(world.dlq, 3)

        page = sign_in(browser_page, web_server, editor.username)
        page.goto(f"{web_server}/failures/")
        group = page.locator("#failure-groups tr", has_text="SMTP 550")
        group.locator("a.redrive-group").click()
        page.wait_for_url("**/dead-letters/for-failures/**")
        form = page.locator("form.failure-dead-letters", has_text=world.dlq)
        assert form.locator("tr[data-message]").count() == 3
        assert "redelivered" in form.text_content()  # RabbitMQ's peek says what it does

        form.locator("input[name=rate_per_s]").fill("2")
        form.locator("button.redrive-dry-run").click()
        page.wait_for_url("**/redrives/*/**")
        page.wait_for_selector("#redrive-state:text('done')")
        assert "3 of 3 would move" in page.locator("#redrive-progress").text_content()
        assert world.depth(world.dlq) == 3

        page.go_back()
        form = page.locator("form.failure-dead-letters", has_text=world.dlq)
        form.locator("input[name=rate_per_s]").fill("1")
        form.locator("button.redrive-go").click()
        page.wait_for_url("**/redrives/*/**")
        page.evaluate("window.__same_page = true")
        # One message a second: the page opens before the last has moved.
        assert page.locator("#redrive-moved").text_content() != "3"
        page.wait_for_selector("[data-live-state].live-on")
        page.wait_for_selector("#redrive-state:text('done')", timeout=20_000)
        assert page.evaluate("window.__same_page") is True  # live, not reloaded
        assert page.locator("#redrive-moved").text_content() == "3"
        assert page.locator("#redrive-items [data-item-state=moved]").count() == 3
        page.screenshot(path="/tmp/eventscope-redrive.png", full_page=True)
        assert world.depth(world.dlq) == 0
        assert sorted(p.message_id for p, _ in world.consume_all(world.source)) == sorted(
            e for e, _ in orders
        )
    finally:
        world.close()
