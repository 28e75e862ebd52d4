"""The vendored front-end libraries work together in real Chromium: the pages
that load them run without a script error, htmx is the vendored release, the
flow graph is laid out by the dagre bundled with cytoscape-dagre, and uPlot
draws the lag sparklines."""

import datetime as dt
import json
from pathlib import Path

import pytest
from django.db import connection

from collector.brokers import samples
from collector.brokers.samples import Reading
from tests.dashboard.world import store_order

pytestmark = pytest.mark.browser

MANIFEST = Path(__file__).resolve().parents[2] / "static" / "vendor" / "manifest.json"


def vendored_version(package: str) -> str:
    entries = json.loads(MANIFEST.read_text())["packages"]
    return next(entry["version"] for entry in entries if entry["package"] == package)


def script_errors(page) -> list:
    errors = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("console", lambda msg: msg.type == "error" and errors.append(msg.text))
    return errors


@pytest.fixture
def lag_tables(telemetry_db):
    def truncate():
        with connection.cursor() as cursor:
            cursor.execute("TRUNCATE brokers_lagsample, brokers_groupstate, brokers_brokerstate")

    truncate()
    yield
    truncate()


def test_the_flow_graph_is_laid_out_left_to_right_without_script_errors(
    signed_in, web_server, project
):
    store_order(project.id, event_id="evt-vendored")
    page = signed_in
    errors = script_errors(page)
    page.goto(f"{web_server}/?window=6h")
    page.wait_for_selector("[data-live-state].live-on")

    assert page.evaluate("htmx.version") == vendored_version("htmx.org")
    x = page.evaluate(
        """() => { const cy = window.eventscopeFlow.cy;
                   return ['service:orders', 'channel:kafka:orders', 'service:email']
                     .map(id => cy.getElementById(id).position('x')); }"""
    )
    # rankDir LR: producer, then its channel, then the consumer, each a rank apart.
    assert x[0] < x[1] < x[2], x
    assert errors == []


def test_the_lag_page_draws_sparklines_and_goes_live_without_script_errors(
    lag_tables, project, signed_in, web_server
):
    now = dt.datetime.now(dt.UTC)
    for minutes_ago, lag in ((3, 40), (0, 77)):
        t = now - dt.timedelta(minutes=minutes_ago)
        reading = Reading(
            "redis", "invoices", "mailer", lag=lag, end_offset=lag, time=t.timestamp()
        )
        samples.store_sync(project.id, [reading], "test", now=t)
    page = signed_in
    errors = script_errors(page)
    page.goto(f"{web_server}/lag/")
    page.wait_for_selector("[data-live-state].live-on")  # htmx's ws extension connected
    page.locator("#lag-groups tr[data-group='redis/invoices/mailer'] .spark canvas").wait_for()
    assert page.evaluate("typeof uPlot") == "function"
    assert errors == []
