"""The consumer lag page in real Chromium: sparklines drawn, a new group appears
live, and the drill-down charts a group's lag in messages and seconds."""

import datetime as dt

import pytest
from django.db import connection

from collector.brokers import samples
from collector.brokers.samples import Reading

pytestmark = pytest.mark.browser


@pytest.fixture
def lag_tables(telemetry_db):
    def truncate():
        with connection.cursor() as cursor:
            cursor.execute("TRUNCATE brokers_lagsample, brokers_groupstate, brokers_brokerstate")

    truncate()
    yield
    truncate()


def _history(project):
    now = dt.datetime.now(dt.UTC)
    for minutes_ago, committed, end in (
        (9, 100, 400),
        (6, 150, 600),
        (3, 160, 900),
        (0, 170, 1200),
    ):
        t = now - dt.timedelta(minutes=minutes_ago)
        samples.store_sync(
            project.id,
            [
                Reading(
                    "kafka",
                    "orders",
                    "billing",
                    str(p),
                    end_offset=end + p,
                    committed_offset=committed,
                    time=t.timestamp(),
                )
                for p in (0, 1)
            ],
            "test",
            now=t,
        )


def test_groups_have_sparklines_update_live_and_drill_down(
    lag_tables, project, signed_in, web_server
):
    _history(project)
    page = signed_in
    page.goto(f"{web_server}/lag/")
    page.wait_for_selector("[data-live-state].live-on")
    row = page.locator("#lag-groups tr[data-group='kafka/orders/billing']")
    assert row.locator("[data-lag]").text_content() == str(2 * (1200 - 170) + 1)
    assert row.get_attribute("data-status") == "warning"  # lag grew while offsets moved
    row.locator(".spark canvas").wait_for()

    samples.store_sync(
        project.id, [Reading("redis", "invoices", "mailer", lag=77, end_offset=77)], "test"
    )
    page.locator("#lag-groups tr[data-group='redis/invoices/mailer']").wait_for()
    page.screenshot(path="/tmp/eventscope-lag.png", full_page=True)

    row.locator("a", has_text="orders").click()
    page.wait_for_url("**/lag/kafka/orders/billing/")
    page.locator("#lag-chart canvas").wait_for()
    legend = page.locator("#lag-chart").text_content()
    assert "lag (messages)" in legend and "lag (seconds)" in legend
    assert page.locator("#lag-partitions tbody tr").count() == 2
    failures = page.locator("#failures-link").get_attribute("href")
    assert "channel=orders" in failures and "group=billing" in failures and "since=" in failures
    # A partition opens in the window chosen for the group.
    page.select_option("select[name=window]", "15m")
    page.click("form.filters button[type=submit]")
    page.wait_for_url("**/lag/kafka/orders/billing/?window=15m")
    page.wait_for_selector("[data-live-state].live-on")
    page.locator("#lag-partitions a", has_text="1").click()
    page.wait_for_url("**/lag/kafka/orders/billing/?window=15m&partition=1")
    assert page.locator("select[name=window]").input_value() == "15m"
    page.locator("#lag-chart canvas").wait_for()
    page.screenshot(path="/tmp/eventscope-lag-group.png", full_page=True)
