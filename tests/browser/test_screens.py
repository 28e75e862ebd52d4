"""Every page with the demo shop's data, in light and in dark, in real Chromium.

The demo shop runs for a few seconds against the real collector, so the
pages show what a newcomer sees: the flow graph, lag climbing, failures and
a dead letter with its payload, an alert firing. Each page is screenshotted
to var/screenshots/<scheme>/<page>.png (not committed; kept as the test's
artefacts) and must have no console error, no CSP violation, no horizontal
scroll at 1280 px and a non-empty main content.
"""

import threading
import time
from pathlib import Path

import pytest
from django.db import connection

from dashboard import demo
from tests.browser.conftest import sign_in

pytestmark = pytest.mark.browser

SCREENSHOTS = Path(__file__).resolve().parents[2] / "var" / "screenshots"
SCHEMES = ("light", "dark")
LABEL_BACKGROUND = {"light": "rgb(255,255,255)", "dark": "rgb(22,28,39)"}


def run_demo(collector_url: str, token: str, seconds: float = 8.0) -> None:
    """The demo shop at a brisk rate with a short slow/fast cycle, for `seconds`."""
    stop = threading.Event()
    headers = {"authorization": f"Bearer {token}"}
    worker = threading.Thread(
        target=demo.run,
        args=(collector_url, stop, headers),
        kwargs={"rate": 20, "seed": 11, "cycle_s": 12},
        daemon=True,
    )
    worker.start()
    time.sleep(seconds)
    stop.set()
    worker.join(30)
    assert not worker.is_alive(), "the demo did not stop"


def _one(sql: str, params) -> str | None:
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        row = cursor.fetchone()
    return row[0] if row else None


@pytest.fixture
def demo_world(web_server, collector, ingest_token, project, admin_user, viewer):
    """The demo's data in `project`, a webhook, a firing alert rule, and ids to visit."""
    from dashboard.alerts.evaluate import evaluate_all
    from dashboard.alerts.models import AlertRule, Webhook
    from dashboard.alerts.rules import KINDS

    started = time.monotonic()
    run_demo(collector, ingest_token)
    print(f"demo: {time.monotonic() - started:.1f} s")
    webhook = Webhook.objects.create(
        project=project, name="on-call", url="http://alerts.example.invalid/hook"
    )
    rule = AlertRule.objects.create(
        project=project,
        name="Orders failing",
        kind="error_rate",
        params=KINDS["error_rate"].validate({"threshold": 0.01, "min_events": 1}),
        for_seconds=0,
    )
    rule.webhooks.add(webhook)
    evaluate_all()
    dead_letter = _one(
        "SELECT event_id FROM collector_envelope WHERE project_id = %s AND source = %s LIMIT 1",
        [project.pk, "/shop/orders"],
    )
    failed_trace = _one(
        "SELECT encode(trace_id, 'hex') FROM collector_stage WHERE project_id = %s AND stage IN ('failed', 'retried', 'deadlettered')"
        " ORDER BY time DESC LIMIT 1",
        [project.pk],
    )
    connection.close()
    assert dead_letter and failed_trace, "the demo sent no dead letter or failure"
    return {
        "webhook": webhook,
        "rule": rule,
        "dead_letter": dead_letter,
        "failed_trace": failed_trace,
    }


def pages(world) -> dict[str, str]:
    """Page name → path, every page a person opens."""
    return {
        "flow": "/?window=15m",
        "search": "/search/",
        "trace": f"/traces/{world['failed_trace']}",
        "event": f"/events/{world['dead_letter']}",
        "failures": "/failures/?window=15m",
        "dead-letters": "/dead-letters/",
        "delivery": "/delivery/?window=15m",
        "lag": "/lag/",
        "lag-group": "/lag/kafka/shop.orders/analytics/",
        "alerts": "/alerts/",
        "rule-form": f"/alerts/rules/{world['rule'].pk}/edit",
        "new-rule": "/alerts/rules/new",
        "webhooks": "/webhooks/",
        "webhook": f"/webhooks/{world['webhook'].pk}/",
        "tokens": "/tokens/",
        "members": "/members/",
        "audit": "/audit/",
        "api": "/api/",
        "not-found": "/no/such/page/",
    }


def check_page(page, url: str, name: str, scheme: str, problems: list[str]) -> None:
    errors: list[str] = []

    def on_console(message):
        if message.type == "error":
            errors.append(message.text)

    page.on("console", on_console)
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    started = time.monotonic()
    page.goto(url)
    page.wait_for_load_state("networkidle")
    page.wait_for_timeout(200)  # charts and the graph draw after load
    print(f"{scheme} {name}: {time.monotonic() - started:.1f} s")
    path = SCREENSHOTS / scheme / f"{name}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(path), full_page=True)
    page.remove_listener("console", on_console)
    # A 404 answers 404 and logs it on the console; that is the page's purpose.
    errors = [e for e in errors if not (name == "not-found" and "404" in e)]
    if errors:
        problems.append(f"{scheme} {name}: console errors {errors}")
    overflow = page.evaluate(
        "() => document.documentElement.scrollWidth - document.documentElement.clientWidth"
    )
    if overflow > 0:
        problems.append(f"{scheme} {name}: {overflow} px of horizontal scroll at 1280 px")
    text = page.locator("main.page").inner_text().strip()
    if len(text) < 20:
        problems.append(f"{scheme} {name}: main content is empty ({text!r})")
    scheme_seen = page.evaluate("() => document.documentElement.dataset.theme")
    if scheme_seen != scheme:
        problems.append(f"{scheme} {name}: page shows the {scheme_seen} theme")


@pytest.mark.timeout(300)
def test_every_page_is_finished_in_light_and_dark(chromium, demo_world, web_server, admin_user):
    problems: list[str] = []
    violations: list[str] = []
    for scheme in SCHEMES:
        context = chromium.new_context(viewport={"width": 1280, "height": 900}, color_scheme=scheme)
        page = context.new_page()
        page.set_default_timeout(15_000)
        page.on(
            "console",
            lambda m, page=page: (
                "Content Security Policy" in m.text and violations.append(f"{page.url}: {m.text}")
            ),
        )
        try:
            check_page(page, f"{web_server}/login/", "sign-in", scheme, problems)
            sign_in(page, web_server, admin_user.username)
            for name, path in pages(demo_world).items():
                check_page(page, f"{web_server}{path}", name, scheme, problems)
            # The toggle switches to the other theme, and the choice outlives a reload.
            other = "dark" if scheme == "light" else "light"
            page.goto(f"{web_server}/")
            page.click("[data-theme-toggle]")
            page.reload()
            assert page.evaluate("document.documentElement.dataset.theme") == other
            # The graph is drawn in the new theme's colours (--graph-label-bg of app.css).
            label_bg = page.evaluate(
                "window.eventscopeFlow.cy.edges()[0].style('text-background-color')"
            )
            assert label_bg.replace(" ", "") == LABEL_BACKGROUND[other], label_bg
        finally:
            context.close()
    assert not violations, "CSP violations:\n" + "\n".join(violations)
    assert not problems, "\n".join(problems)


LABEL_BOXES = """() => {
  const cy = window.eventscopeFlow.cy;
  const opts = {includeNodes: false, includeEdges: false, includeLabels: true,
                includeMainLabels: true, includeOverlays: false, includeUnderlays: false};
  const box = el => { const b = el.renderedBoundingBox(opts); return {id: el.id(), x1: b.x1, x2: b.x2, y1: b.y1, y2: b.y2}; };
  const px = el => parseFloat(el.renderedStyle('font-size'));
  return {
    nodes: cy.nodes().map(box), edges: cy.edges().map(box),
    edgeFontPx: Math.min(...cy.edges().map(px)), nodeFontPx: Math.min(...cy.nodes().map(px)),
    canvas: {w: cy.width(), h: cy.height()},
    graph: (() => { const b = cy.elements().renderedBoundingBox({includeLabels: true}); return {w: b.w, h: b.h}; })(),
    labels: cy.nodes().map(n => n.data('label')),
  };
}"""


def _overlap(a, b) -> bool:
    return a["x1"] < b["x2"] and b["x1"] < a["x2"] and a["y1"] < b["y2"] and b["y1"] < a["y2"]


@pytest.mark.parametrize("width", [1280, 1024])
def test_the_flow_graph_fits_its_canvas_and_no_label_covers_another(
    chromium, demo_world, web_server, viewer, width
):
    context = chromium.new_context(viewport={"width": width, "height": 900})
    page = context.new_page()
    try:
        sign_in(page, web_server, viewer.username)
        page.goto(f"{web_server}/?window=15m")
        page.wait_for_selector("[data-live-state].live-on")
        seen = page.evaluate(LABEL_BOXES)
        page.screenshot(path=str(SCREENSHOTS / f"flow-{width}.png"))
    finally:
        context.close()
    # Display names on the graph, never ids; a channel's system on its own line.
    assert "shop.orders\nkafka" in seen["labels"]
    assert not [label for label in seen["labels"] if ":" in label]
    # Readable at the default zoom.
    assert seen["edgeFontPx"] >= 11, seen["edgeFontPx"]
    assert seen["nodeFontPx"] >= 11, seen["nodeFontPx"]
    # The canvas is filled: the graph spans its width, and its height is the graph's.
    assert seen["graph"]["w"] >= 0.85 * seen["canvas"]["w"] or seen["canvas"]["h"] <= 260, seen
    assert seen["graph"]["h"] >= 0.7 * seen["canvas"]["h"] or seen["canvas"]["h"] <= 260, seen
    covered = [
        (edge["id"], other["id"])
        for i, edge in enumerate(seen["edges"])
        for other in seen["nodes"] + seen["edges"][i + 1 :]
        if _overlap(edge, other)
    ]
    assert not covered, covered
