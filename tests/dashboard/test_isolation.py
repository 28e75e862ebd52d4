"""A viewer of one project gets nothing of another: not through pages, the API,
guessed ids, or the websocket."""

import pytest
from channels.testing import WebsocketCommunicator

from dashboard.failures.views import FailuresConsumer
from dashboard.flow.views import FlowConsumer
from dashboard.live import listener
from tests.dashboard.world import store_order

pytestmark = pytest.mark.usefixtures("telemetry_db", "consumer_connections")


@pytest.fixture
def secret_order(other_project):
    """An order journey in the other team's project, with names only it uses."""
    return store_order(
        other_project.id,
        event_id="their-evt",
        names={"orders": "secret-orders", "topic": "secret-topic", "email": "secret-mail"},
    )


def test_api_shows_nothing_of_another_project(client, viewer, project, secret_order):
    client.force_login(viewer)
    flow = client.get("/api/flow?window=1h").json()
    assert flow["edges"] == [] and flow["nodes"] == []
    assert client.get(f"/api/traces/{secret_order['trace']}").status_code == 404
    assert client.get("/api/events/their-evt").status_code == 404
    assert client.get("/api/failures").json()["items"] == []
    assert client.get("/api/failures?group_by=error").json()["items"] == []
    # naming the other project is refused, not honoured
    assert client.get("/api/flow?project=other").status_code == 404


def test_read_tokens_are_bound_to_their_project(client, project, read_token, secret_order):
    auth = {"HTTP_AUTHORIZATION": f"Bearer {read_token}"}
    assert client.get("/api/flow?window=1h", **auth).json()["edges"] == []
    assert client.get(f"/api/traces/{secret_order['trace']}", **auth).status_code == 404
    assert client.get("/api/flow?project=other", **auth).status_code == 404


def test_pages_show_nothing_of_another_project(client, viewer, secret_order):
    client.force_login(viewer)
    for url in ("/", "/failures/", "/?window=24h"):
        page = client.get(url).content.decode()
        assert "secret-" not in page, url
    assert client.get(f"/traces/{secret_order['trace']}").status_code == 404
    assert client.get("/events/their-evt").status_code == 404
    assert client.get("/search/?q=their-evt").status_code == 404
    assert client.get("/?project=other").status_code == 404


@pytest.mark.parametrize("consumer", [FlowConsumer, FailuresConsumer])
async def test_websockets_refuse_another_projects_members(consumer, viewer, other_project):
    ws = WebsocketCommunicator(consumer.as_asgi(), "/ws/x/?project=other")
    ws.scope["user"] = viewer
    connected, _ = await ws.connect()
    assert connected
    assert (await ws.receive_output(timeout=3))["code"] == 4403


async def test_flow_websocket_pushes_only_the_members_project(viewer, project, secret_order):
    ws = WebsocketCommunicator(FlowConsumer.as_asgi(), "/ws/flow/?project=shop&window=1h")
    ws.scope["user"] = viewer
    await ws.connect()
    first = await ws.receive_json_from(timeout=3)
    assert first["type"] == "flow" and first["edges"] == [] and first["nodes"] == []
    await ws.disconnect()
    await listener.stop()
