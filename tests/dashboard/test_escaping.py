"""Telemetry is untrusted: names, attributes and payloads with markup are shown
as text on every page, never run."""

import pytest

from tests.dashboard.world import events_batch, store, store_order

pytestmark = pytest.mark.usefixtures("telemetry_db")

EVIL = "<script>alert(1)</script>"
EVIL_IMG = '"><img src=x onerror=alert(2)>'


@pytest.fixture
def hostile(project):
    ids = store_order(
        project.id,
        event_id="evt-x",
        names={"orders": f"orders{EVIL}", "email": f"mail{EVIL_IMG}", "topic": f"t{EVIL}"},
        email_error=f"boom {EVIL}",
    )
    store(
        events_batch(
            [
                {
                    "specversion": "1.0",
                    "id": "evil-1",
                    "source": f"/src{EVIL}",
                    "type": f"ty{EVIL_IMG}",
                    "esstage": "failed",
                    "eserror": EVIL,
                    "eschannel": f"c{EVIL}",
                    "data": {f"k{EVIL}": f"v{EVIL_IMG}"},
                }
            ],
            project.id,
        )
    )
    return ids


def assert_escaped(html: str):
    assert "<script>alert" not in html
    assert "<img src=x" not in html


def test_pages_escape_telemetry(client, viewer, hostile):
    client.force_login(viewer)
    for url in (
        "/",
        "/failures/",
        f"/traces/{hostile['trace']}",
        "/events/evt-x",
        "/events/evil-1",
    ):
        response = client.get(url)
        assert response.status_code == 200, url
        html = response.content.decode()
        assert_escaped(html)
    failures = client.get("/failures/").content.decode()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in failures
    payload = client.get("/events/evil-1").content.decode()
    assert "&lt;script&gt;" in payload  # the payload key is shown, as text


def test_graph_data_is_embedded_as_inert_json(client, viewer, hostile):
    client.force_login(viewer)
    html = client.get("/").content.decode()
    start = html.index('id="flow-data"')
    embedded = html[start : html.index("</script>", start)]
    assert "<script>" not in embedded and "\\u003Cscript\\u003E" in embedded
