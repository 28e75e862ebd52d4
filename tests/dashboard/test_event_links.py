"""Event ids come from whoever sends telemetry: links to an event's journey go
where they say for any id, and the journey page opens for any id."""

import pytest

from tests.dashboard.world import events_batch, store

pytestmark = pytest.mark.usefixtures("telemetry_db")

HOSTILE_IDS = ["../../tokens/", ".", "..", "a/b", "%2e%2e", "ev t?x=1#y", "naïve"]


def failed_event(event_id: str) -> dict:
    return {
        "specversion": "1.0",
        "id": event_id,
        "source": "/shop/mailer",
        "type": "mail.requested",
        "esstage": "failed",
        "esservice": "mailer",
        "eschannel": "mail",
        "essystem": "nats",
        "eserror": f"cannot send {event_id}",
    }


def test_failure_links_open_the_journey_of_any_id(client, viewer, project):
    store(events_batch([failed_event(i) for i in HOSTILE_IDS], project.id))
    client.force_login(viewer)
    html = client.get("/failures/").content.decode()
    links = {}
    for chunk in html.split('class="open-failure" href="')[1:]:
        href = chunk[: chunk.index('"')].replace("&amp;", "&")
        text = chunk[chunk.index(">") + 1 : chunk.index("</a>")]
        links[text] = href
    assert len(links) == len(HOSTILE_IDS)
    for event_id in HOSTILE_IDS:
        href = links[event_id.replace("&", "&amp;")]
        assert href.startswith("/events/"), href
        # Whatever a browser or proxy makes of the path, it stays the journey page.
        path = href.split("?")[0]
        assert path == "/events/" or ("/" not in path[8:] and path[8:] not in (".", "..")), href
        page = client.get(href)
        assert page.status_code == 200, (event_id, href)
        assert f"cannot send {event_id}" in page.content.decode().replace("&#x27;", "'")


def test_plain_ids_keep_the_readable_path(client, viewer, project):
    store(events_batch([failed_event("order-17.v2")], project.id))
    client.force_login(viewer)
    html = client.get("/failures/").content.decode()
    assert 'href="/events/order-17.v2?source=%2Fshop%2Fmailer&amp;project=shop"' in html
    assert client.get("/events/order-17.v2").status_code == 200
    assert client.get("/api/events/order-17.v2").status_code == 200


def test_search_leads_to_a_working_page_for_any_id(client, viewer, project):
    store(events_batch([failed_event(i) for i in HOSTILE_IDS], project.id))
    client.force_login(viewer)
    for event_id in HOSTILE_IDS:
        found = client.get("/search/", {"q": event_id})
        assert found.status_code == 302, event_id
        assert client.get(found["Location"]).status_code == 200, (event_id, found["Location"])


def test_an_event_page_without_an_id_goes_to_search(client, viewer):
    client.force_login(viewer)
    assert client.get("/events/")["Location"] == "/search/"
