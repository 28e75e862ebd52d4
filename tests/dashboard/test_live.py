"""The live-update base: NOTIFY hints reach the right websockets, coalesced,
and only members of the project get them."""

import asyncio
import json

import psycopg
import pytest
from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from channels.testing import WebsocketCommunicator
from django.contrib.auth.models import AnonymousUser

from collector import notify
from collector.db import conninfo
from dashboard.live import LiveConsumer, group_name, listener

pytestmark = pytest.mark.usefixtures("telemetry_db", "consumer_connections")


class CountingConsumer(LiveConsumer):
    """Pushes a counter, so tests can see each push."""

    areas = ("flow", "failures")

    async def push(self):
        self.pushes = getattr(self, "pushes", 0) + 1
        await self.send_json({"push": self.pushes, "project": self.project.slug})


async def connect(user, query=""):
    communicator = WebsocketCommunicator(CountingConsumer.as_asgi(), f"/ws/test/?{query}")
    communicator.scope["user"] = user
    connected, _ = await communicator.connect()
    assert connected
    return communicator


async def hint(project_id, area):
    async with await psycopg.AsyncConnection.connect(conninfo(), autocommit=True) as conn:
        await conn.execute(
            "SELECT pg_notify(%s, %s)", (notify.CHANNEL, notify.payload(project_id, area))
        )


@pytest.fixture
async def stop_listener():
    yield
    await listener.stop()


async def test_a_hint_pushes_fresh_state_and_bursts_are_coalesced(viewer, project, stop_listener):
    ws = await connect(viewer, "project=shop")
    first = json.loads(await ws.receive_from(timeout=3))
    assert first == {"push": 1, "project": "shop"}  # a (re)connecting page is brought up to date
    await asyncio.wait_for(listener.connected.wait(), 5)
    await asyncio.sleep(1.1)
    loop = asyncio.get_running_loop()
    began = loop.time()
    for _ in range(20):
        await hint(project.id, "flow")
    second = json.loads(await ws.receive_from(timeout=3))  # the first hint after a quiet second
    assert second["push"] == 2
    third = json.loads(await ws.receive_from(timeout=3))  # trailing push: the last change is seen
    assert third["push"] == 3
    assert loop.time() - began >= 0.9  # not sooner than a second after the previous push
    assert await ws.receive_nothing(timeout=1.5)  # 20 hints gave two pushes
    await ws.disconnect()


async def test_hints_of_other_projects_and_areas_are_not_pushed(
    viewer, project, other_project, stop_listener
):
    ws = await connect(viewer, "project=shop")
    await ws.receive_from(timeout=3)
    await asyncio.wait_for(listener.connected.wait(), 5)
    await hint(other_project.id, "flow")
    await hint(project.id, "lag")
    assert await ws.receive_nothing(timeout=1.2)
    await hint(project.id, "failures")
    assert json.loads(await ws.receive_from(timeout=3))["push"] == 2
    await ws.disconnect()


async def test_anonymous_users_are_closed_with_4401():
    ws = await connect(AnonymousUser())
    assert (await ws.receive_output(timeout=3))["code"] == 4401


async def test_non_members_are_closed_with_4403(other_viewer, project):
    ws = await connect(other_viewer, "project=shop")
    assert (await ws.receive_output(timeout=3))["code"] == 4403


async def test_websockets_from_another_origin_are_refused():
    from dashboard.asgi import application

    ws = WebsocketCommunicator(
        application,
        "/ws/flow/",
        headers=[(b"origin", b"http://evil.example"), (b"host", b"127.0.0.1")],
    )
    connected, _ = await ws.connect()
    assert not connected


async def test_websockets_from_the_same_origin_reach_the_consumer():
    from dashboard.asgi import application

    ws = WebsocketCommunicator(
        application,
        "/ws/flow/",
        headers=[(b"origin", b"http://127.0.0.1:8000"), (b"host", b"127.0.0.1")],
    )
    connected, _ = await ws.connect()
    assert connected  # accepted, then closed: nobody is signed in
    assert (await ws.receive_output(timeout=3))["code"] == 4401


class EchoConsumer(CountingConsumer):
    """Pushes the counter and the filters it was last sent."""

    async def push(self):
        self.pushes = getattr(self, "pushes", 0) + 1
        await self.send_json({"push": self.pushes, "params": self.params})


async def test_client_messages_cannot_push_more_than_once_a_second(viewer, project):
    ws = WebsocketCommunicator(EchoConsumer.as_asgi(), "/ws/test/?project=shop")
    ws.scope["user"] = viewer
    assert (await ws.connect())[0]
    loop = asyncio.get_running_loop()
    assert json.loads(await ws.receive_from(timeout=3))["push"] == 1
    first_at = loop.time()
    for i in range(30):
        await ws.send_to(text_data=json.dumps({"params": {"project": "shop", "service": f"s{i}"}}))
        await ws.send_to(text_data=json.dumps({"refresh": True}))
    second = json.loads(await ws.receive_from(timeout=3))
    assert loop.time() - first_at >= 0.9  # no sooner than a second after the connect push
    assert second == {"push": 2, "params": {"project": "shop", "service": "s29"}}
    assert await ws.receive_nothing(timeout=1.5)  # 60 messages gave one push
    await ws.send_to(text_data=json.dumps({"refresh": True}))
    assert json.loads(await ws.receive_from(timeout=3))["push"] == 3  # a refresh is honoured
    await ws.disconnect()


async def test_a_removed_member_is_closed_with_4403_at_the_next_push(viewer, project):
    from dashboard.accounts.models import Membership

    ws = await connect(viewer, "project=shop")
    assert json.loads(await ws.receive_from(timeout=3))["push"] == 1
    await database_sync_to_async(Membership.objects.filter(user=viewer).delete)()
    await get_channel_layer().group_send(group_name(project.id, "flow"), {"type": "live.hint"})
    assert (await ws.receive_output(timeout=3)) == {"type": "websocket.close", "code": 4403}


async def test_signing_out_closes_the_open_pages_with_4401(viewer, project, stop_listener):
    from django.conf import settings
    from django.test import Client

    from dashboard.asgi import application

    browser = Client()
    await database_sync_to_async(browser.force_login)(viewer)
    cookie = f"{settings.SESSION_COOKIE_NAME}={browser.cookies[settings.SESSION_COOKIE_NAME].value}"
    ws = WebsocketCommunicator(
        application,
        "/ws/flow/?project=shop",
        headers=[
            (b"origin", b"http://127.0.0.1:8000"),
            (b"host", b"127.0.0.1"),
            (b"cookie", cookie.encode()),
        ],
    )
    assert (await ws.connect())[0]
    assert json.loads(await ws.receive_from(timeout=3))["type"] == "flow"
    await database_sync_to_async(browser.logout)()
    await get_channel_layer().group_send(group_name(project.id, "flow"), {"type": "live.hint"})
    assert (await ws.receive_output(timeout=3)) == {"type": "websocket.close", "code": 4401}
