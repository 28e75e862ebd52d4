"""The flow graph in real Chromium: sign in, see the graph, and watch it change
live as spans arrive through OTLP."""

import json
import urllib.request

import pytest

from tests.browser.conftest import sign_in
from tests.dashboard.world import order_journey

pytestmark = pytest.mark.browser


def send_otlp(collector_url: str, document: dict, token: str) -> None:
    """POST OTLP JSON to the real receiver, as an exporter would."""
    req = urllib.request.Request(
        f"{collector_url}/v1/traces",
        data=json.dumps(document).encode(),
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {token}"},
    )
    with urllib.request.urlopen(req, timeout=10) as response:
        assert response.status == 200


def edge_count(page, source, target, kind, group=""):
    row = page.locator(f'#flow-edges tr[data-edge="{source}|{target}|{kind}|{group}"] [data-count]')
    return int(row.text_content()) if row.count() else 0


def test_sign_in_is_required_and_works(browser_page, web_server, viewer):
    browser_page.goto(f"{web_server}/")
    assert "/login/" in browser_page.url
    browser_page.fill("#id_username", viewer.username)
    browser_page.fill("#id_password", "wrong")
    browser_page.click("button[type=submit]")
    assert "didn't match" in browser_page.text_content(".error")
    sign_in(browser_page, web_server, viewer.username)
    assert browser_page.locator("h1").first.text_content() == "Flow"


def test_new_edges_and_counts_appear_without_a_reload(
    signed_in, web_server, collector, ingest_token
):
    page = signed_in
    page.goto(f"{web_server}/?window=15m")
    page.wait_for_selector("[data-live-state].live-on")
    page.evaluate("window.__sameDocument = true")
    assert edge_count(page, "service:orders", "channel:kafka:orders", "publish") == 0

    send_otlp(collector, order_journey(event_id="evt-a")[0], ingest_token)
    publish_row = '#flow-edges tr[data-edge="service:orders|channel:kafka:orders|publish|"]'
    page.wait_for_selector(publish_row)
    assert edge_count(page, "service:orders", "channel:kafka:orders", "publish") == 1
    assert (
        page.evaluate("window.eventscopeFlow.cy.getElementById('channel:kafka:orders').length") == 1
    )

    send_otlp(collector, order_journey(event_id="evt-b")[0], ingest_token)
    page.wait_for_function(
        """() => { const c = document.querySelector('#flow-edges tr[data-edge="service:orders|channel:kafka:orders|publish|"] [data-count]');
                   return c && c.textContent === '2'; }"""
    )
    assert page.evaluate("window.__sameDocument") is True  # no reload happened
    edges = page.evaluate("window.eventscopeFlow.cy.edges().length")
    assert edges >= 4  # publish, two consumes + audit, and the web → orders call
    page.screenshot(path="/tmp/eventscope-flow.png")


def click_element(page, element_id):
    """Click a node or edge of the graph where it is drawn, as a person would."""
    box = page.locator("#flow-graph").bounding_box()
    pos = page.evaluate(
        """(id) => { const el = window.eventscopeFlow.cy.getElementById(id);
                    const p = el.isNode() ? el.renderedPosition() : el.renderedMidpoint();
                    return {x: p.x, y: p.y}; }""",
        element_id,
    )
    page.mouse.click(box["x"] + pos["x"], box["y"] + pos["y"])


def test_a_node_or_edge_leads_to_its_failures_and_lag_in_the_same_window(
    signed_in, web_server, project
):
    from urllib.parse import parse_qs, urlsplit

    from tests.dashboard.world import store_order

    store_order(project.id, event_id="evt-menu")
    page = signed_in
    page.goto(f"{web_server}/?window=6h")
    page.wait_for_selector("[data-live-state].live-on")

    edge = "e|channel:kafka:orders|service:email|consume|email"
    click_element(page, edge)
    menu = page.locator("#flow-menu")
    menu.wait_for(state="visible")
    links = {a.text_content(): a.get_attribute("href") for a in menu.locator("a").all()}
    failures = urlsplit(links["failures"])
    assert failures.path == "/failures/"
    assert parse_qs(failures.query) == {
        "window": ["6h"],
        "project": ["shop"],
        "channel": ["orders"],
        "system": ["kafka"],
        "service": ["email"],
        "group": ["email"],
    }
    assert links["lag"] == "/lag/kafka/orders/email/?window=6h&project=shop"
    assert urlsplit(links["find a trace or event by id"]).path == "/search/"

    click_element(page, "channel:kafka:orders")
    page.screenshot(path="/tmp/eventscope-flow-menu.png")
    lag_links = sorted(
        a.text_content() for a in menu.locator("a").all() if "lag" in a.text_content()
    )
    assert lag_links == ["lag of audit", "lag of email", "lag of payments"]

    click_element(page, "service:email")
    menu.locator("a", has_text="failures").click()
    page.wait_for_url("**/failures/?**")
    assert page.locator("select[name=window]").input_value() == "6h"
    assert page.locator("input[name=service]").input_value() == "email"
    assert "SMTP 550" in page.locator("#failure-groups").text_content()


def test_the_open_edge_panel_shows_its_series_and_follows_new_data(
    signed_in, web_server, collector, ingest_token
):
    page = signed_in
    send_otlp(collector, order_journey(event_id="evt-s1")[0], ingest_token)
    page.goto(f"{web_server}/?window=15m")
    page.wait_for_selector("[data-live-state].live-on")
    page.evaluate("window.__sameDocument = true")
    click_element(page, "e|service:orders|channel:kafka:orders|publish|")
    panel = page.locator("#flow-detail")
    panel.wait_for(state="visible")
    page.wait_for_function("() => document.getElementById('flow-detail').dataset.total === '1'")
    # Names a person reads, not node ids.
    assert page.text_content("#flow-detail-title") == "orders → orders (kafka)"
    page.locator("#chart-throughput canvas").first.wait_for()
    page.locator("#chart-latency canvas").first.wait_for()
    assert page.locator("#chart-histogram .hist-row").count() >= 1
    assert page.locator("#figure-lag").is_hidden()  # a publish edge has no lag

    send_otlp(collector, order_journey(event_id="evt-s2")[0], ingest_token)
    send_otlp(collector, order_journey(event_id="evt-s3")[0], ingest_token)
    page.wait_for_function("() => document.getElementById('flow-detail').dataset.total === '3'")
    assert page.evaluate("window.__sameDocument") is True  # no reload happened
    page.screenshot(path="/tmp/eventscope-flow-detail.png", full_page=True)

    # A consume edge shows its lag chart too.
    click_element(page, "e|channel:kafka:orders|service:payments|consume|payments")
    page.wait_for_function(
        "() => document.getElementById('flow-detail').dataset.subject.endsWith('|payments')"
    )
    page.locator("#figure-lag").wait_for(state="visible")


def test_a_lagging_group_is_drawn_as_lagging(signed_in, web_server, project, settings):
    import datetime as dt

    from collector.brokers import samples
    from collector.brokers.samples import Reading
    from tests.dashboard.world import store_order

    store_order(project.id, event_id="evt-lag")
    now = dt.datetime.now(dt.UTC)
    # The group's offsets move but its lag keeps growing: status "warning".
    for minutes_ago, committed, end in (
        (9, 100, 400),
        (6, 150, 600),
        (3, 160, 900),
        (0, 170, 1200),
    ):
        t = now - dt.timedelta(minutes=minutes_ago)
        samples.store_sync(
            project.id,
            [Reading("kafka", "orders", "payments", "0", end_offset=end, committed_offset=committed,
                     time=t.timestamp())],
            "test",
            now=t,
        )  # fmt: skip
    page = signed_in
    page.goto(f"{web_server}/?window=1h")
    page.wait_for_selector("[data-live-state].live-on")
    edge = page.evaluate(
        """() => { const cy = window.eventscopeFlow.cy;
                   const read = (id) => { const e = cy.getElementById(id);
                     return {classes: e.classes(), label: e.data('label'), status: e.data('lag_status'),
                             color: e.style('line-color'), style: e.style('line-style')}; };
                   return {payments: read('e|channel:kafka:orders|service:payments|consume|payments'),
                           audit: read('e|channel:kafka:orders|service:audit|consume|audit'),
                           email: read('e|channel:kafka:orders|service:email|consume|email')}; }"""
    )
    payments, audit = edge["payments"], edge["audit"]
    assert payments["status"] == "warning"
    assert "lagging" in payments["classes"] and payments["style"] == "dotted"
    assert payments["color"] == "rgb(194,65,12)"
    assert "behind" in payments["label"] or "lag" in payments["label"]
    assert "lagging" not in audit["classes"] and "outlier" not in audit["classes"]
    # Every email fails: an outlier by its error share.
    assert "outlier" in edge["email"]["classes"]
    assert "lagging consumer group" in page.text_content("#flow-legend")
    page.screenshot(path="/tmp/eventscope-flow-lagging.png")
