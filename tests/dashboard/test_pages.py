"""Pages: sign-in, the flow window picker, search, journeys and the failures page."""

import pytest

from tests.dashboard.world import store_order

pytestmark = pytest.mark.usefixtures("telemetry_db")


def test_pages_require_sign_in(client):
    for url in ("/", "/failures/", "/search/", "/tokens/", f"/traces/{'a' * 32}"):
        response = client.get(url)
        assert response.status_code == 302 and response["Location"].startswith("/login/"), url


def test_login_form_signs_in(client, viewer):
    response = client.post("/login/", {"username": "vera", "password": "correct horse battery"})
    assert response.status_code == 302
    assert client.get("/").status_code == 200


def test_flow_page_shows_edges_and_a_bad_window_is_explained(client, viewer, project):
    store_order(project.id)
    client.force_login(viewer)
    html = client.get("/?window=1h").content.decode()
    assert 'data-edge="service:orders|channel:kafka:orders|publish|"' in html
    assert "ws/flow/?window=1h" in html
    bad = client.get("/?since=yesterday")
    assert bad.status_code == 400 and "RFC 3339" in bad.content.decode()


def test_search_finds_traces_and_events(client, viewer, project):
    ids = store_order(project.id, event_id="evt-77")
    client.force_login(viewer)
    assert client.get(f"/search/?q={ids['trace']}")["Location"] == f"/traces/{ids['trace']}"
    assert client.get("/search/?q=evt-77")["Location"] == "/events/evt-77"
    source = client.get("/search/?q=evt-77&source=/shop")
    assert source["Location"] == "/events/evt-77?source=%2Fshop"
    assert client.get("/search/?q=nothing-here").status_code == 404


def test_event_page_shows_the_journey_and_error(client, viewer, project):
    ids = store_order(project.id, event_id="evt-9")
    client.force_login(viewer)
    html = client.get("/events/evt-9").content.decode()
    assert "SMTP 550 mailbox unavailable" in html
    assert ids["audit_trace"] in html  # the linked consumer's trace is part of the journey
    assert 'id="waterfall-data"' in html


def test_failures_page_groups_and_links_to_the_event(client, viewer, project):
    store_order(project.id, event_id="evt-5")
    client.force_login(viewer)
    html = client.get("/failures/?service=email").content.decode()
    assert 'href="/events/evt-5?project=shop"' in html and "SMTP 550" in html
    assert "ws/failures/?service=email&amp;project=shop&amp;window=24h" in html
    assert "No failed" in client.get("/failures/?service=payments").content.decode()


def test_project_picker_switches_projects(client, viewer, other_project):
    from dashboard.accounts.models import Membership

    Membership.objects.create(user=viewer, project=other_project, role="viewer")
    client.force_login(viewer)
    html = client.get("/").content.decode()
    assert 'id="project-picker"' in html
    client.get("/?project=other")
    assert client.get("/api/flow").status_code == 200
    assert client.session["project_id"] == other_project.pk


def _hrefs(html: str) -> list[str]:
    import re

    return [h.replace("&amp;", "&") for h in re.findall(r'href="([^"]+)"', html)]


def test_failures_links_keep_the_window_project_and_other_filters(client, viewer, project):
    from urllib.parse import parse_qs, urlsplit

    for i in range(60):  # more than a page, so the "older failures" link shows
        store_order(project.id, event_id=f"evt-{i}")
    client.force_login(viewer)
    html = client.get("/failures/?window=6h&system=kafka").content.decode()
    links = [urlsplit(h) for h in _hrefs(html) if h.startswith(("/failures/?", "/api/failures?"))]
    assert links
    for link in links:
        query = parse_qs(link.query)
        assert query["window"] == ["6h"] and query["project"] == ["shop"], link
        if set(query) != {"window", "project"}:  # all but "Clear filters"
            assert query["system"] == ["kafka"], link
    service = next(parse_qs(u.query) for u in links if "service" in parse_qs(u.query))
    assert service["service"] == ["email"]
    group = next(parse_qs(u.query) for u in links if "fingerprint" in parse_qs(u.query))
    assert group["channel"] == ["orders"] and group["group"] == ["email"]
    older = next(u for u in links if "cursor" in parse_qs(u.query))
    assert older.path == "/failures/"  # the next page of this page, not the JSON API


def test_a_custom_range_survives_the_filter_form(client, viewer, project):
    store_order(project.id, event_id="evt-c")
    client.force_login(viewer)
    html = client.get(
        "/failures/?since=2026-01-01T00:00:00Z&until=2026-01-01T06:00:00Z"
    ).content.decode()
    assert '<option value="custom" selected>' in html
    # UTC, 24-hour, whatever the browser's locale (a datetime-local field follows it).
    assert 'value="2026-01-01 00:00:00"' in html
    assert 'value="2026-01-01 06:00:00"' in html
    assert "since=2026-01-01T00%3A00%3A00Z" in html  # the live connection's window
    # Submitting the form as a browser would: the range stays, a preset chosen wins.
    kept = client.get(
        "/failures/?window=custom&since=2026-01-01T00:00:00&until=2026-01-01T06:00:00"
    )
    assert kept.status_code == 200 and "evt-c" not in kept.content.decode()
    preset = client.get("/failures/?window=1h&since=2026-01-01T00:00:00&until=2026-01-01T06:00")
    assert "evt-c" in preset.content.decode()
    assert "<option selected>1h</option>" in preset.content.decode()


# ---- htmx: one view, the whole page or only its results -------------------------


def _failures(project, count):
    ids = [f"evt-{i:02d}" for i in range(count)]
    for event_id in ids:
        store_order(project.id, event_id=event_id)
    return ids


def test_older_failures_opens_the_next_page_of_the_failures_page(client, viewer, project):
    from urllib.parse import urlsplit

    _failures(project, 55)
    client.force_login(viewer)
    first = client.get("/failures/?window=6h").content.decode()
    older = next(h for h in _hrefs(first) if "cursor=" in h)
    assert urlsplit(older).path == "/failures/"
    second = client.get(older)
    assert second.status_code == 200 and second["Content-Type"].startswith("text/html")
    html = second.content.decode()
    # The five oldest, none of the 50 newest; a way back, no further page.
    # (The groups above the list link to a few examples on every page.)
    rows, first_rows = (page.split('id="failure-rows"', 1)[1] for page in (html, first))
    shown = {f"evt-{i:02d}" for i in range(55) if f">evt-{i:02d}<" in rows}
    assert len(shown) == 5 and shown.isdisjoint(
        {f"evt-{i:02d}" for i in range(55) if f">evt-{i:02d}<" in first_rows}
    )
    assert 'id="newest-failures"' in html and 'id="older-failures"' not in html
    # The live connection keeps showing this page, not the newest one.
    assert "cursor=" in html.split('ws-connect="', 1)[1].split('"', 1)[0]


def test_the_failure_pager_and_filter_form_ask_htmx_for_the_results_with_a_real_link(
    client, viewer, project
):
    _failures(project, 55)
    client.force_login(viewer)
    html = client.get("/failures/").content.decode()
    form = html.split('id="failure-filters"', 1)[1].split(">", 1)[0]
    assert 'hx-get="/failures/"' in form and 'hx-push-url="true"' in form
    assert 'hx-target="#failures-results"' in form
    pager = html.split('id="older-failures"', 1)[0].rsplit("<a ", 1)[1]
    href = pager.split('href="', 1)[1].split('"', 1)[0]
    assert f'hx-get="{href}"' in pager and 'hx-push-url="true"' in pager


def test_an_htmx_request_gets_only_the_failure_results_and_a_plain_one_the_page(
    client, viewer, project
):
    _failures(project, 3)
    client.force_login(viewer)
    page = client.get("/failures/?service=email").content.decode()
    partial = client.get("/failures/?service=email", HTTP_HX_REQUEST="true").content.decode()
    assert page.lstrip().startswith("<!doctype html>") and '<nav class="mainnav"' in page
    assert partial.lstrip().startswith('<div hx-ext="ws" ws-connect="/ws/failures/?')
    assert 'id="failures-results"' in partial and "evt-02" in partial
    assert "<html" not in partial and 'id="failure-filters"' not in partial
    # The swapped-in results reconnect the live updates with the new filters.
    assert "service=email" in partial.split('"', 4)[3]


def test_an_htmx_request_with_a_wrong_filter_gets_the_message_in_the_results(
    client, viewer, project
):
    client.force_login(viewer)
    response = client.get("/failures/?service=%00", HTTP_HX_REQUEST="true")
    # htmx swaps only 2xx answers: the message must arrive as one.
    assert response.status_code == 200
    assert "NUL character" in response.content.decode()
    assert client.get("/failures/?service=%00").status_code == 400
