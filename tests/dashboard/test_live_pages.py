"""The flow and failures websockets: a write through the real writer reaches an
open page as a fresh graph (JSON) or an htmx out-of-band fragment."""

import asyncio

import pytest
from channels.testing import WebsocketCommunicator

from dashboard.failures.views import FailuresConsumer
from dashboard.flow.views import FlowConsumer
from dashboard.live import listener
from tests.collector.receiver_harness import running_writer
from tests.dashboard.world import order_journey, traces_batch

pytestmark = pytest.mark.usefixtures("telemetry_db", "consumer_connections")


async def open_page(consumer, user, query):
    ws = WebsocketCommunicator(consumer.as_asgi(), f"/ws/x/?{query}")
    ws.scope["user"] = user
    connected, _ = await ws.connect()
    assert connected
    return ws


async def write_order(project_id, **kwargs):
    async with running_writer() as writer:
        await writer.submit(traces_batch(order_journey(**kwargs)[0], project_id))


async def test_flow_page_gets_the_new_graph_after_a_write(viewer, project):
    ws = await open_page(FlowConsumer, viewer, "project=shop&window=15m")
    assert (await ws.receive_json_from(timeout=3))["edges"] == []
    await asyncio.wait_for(listener.connected.wait(), 5)
    await write_order(project.id)
    graph = await ws.receive_json_from(timeout=5)
    kinds = {e["kind"] for e in graph["edges"]}
    assert graph["type"] == "flow" and kinds == {"publish", "consume", "call"}
    await ws.disconnect()
    await listener.stop()


async def test_failures_page_gets_an_out_of_band_fragment_with_the_filters_applied(viewer, project):
    ws = await open_page(FailuresConsumer, viewer, "project=shop&service=email")
    first = await ws.receive_from(timeout=3)
    assert 'id="failures-live"' in first and 'hx-swap-oob="true"' in first
    await asyncio.wait_for(listener.connected.wait(), 5)
    await write_order(project.id, event_id="evt-ws", email_error="quota exceeded")
    fragment = await ws.receive_from(timeout=5)
    assert "evt-ws" in fragment and "quota exceeded" in fragment
    await ws.disconnect()
    await listener.stop()


async def test_flow_pushes_are_bounded_like_the_page(viewer, project):
    async with running_writer() as writer:
        for i in range(2):
            await writer.submit(traces_batch(order_journey(event_id=f"evt-{i}")[0], project.id))
        await writer.submit(
            traces_batch(
                order_journey(event_id="evt-r", names={"orders": "refunder", "topic": "refunds"})[
                    0
                ],
                project.id,
            )
        )
    ws = await open_page(FlowConsumer, viewer, "project=shop&window=15m&limit=3")
    graph = await ws.receive_json_from(timeout=3)
    assert graph["truncated"] is True and len(graph["edges"]) == 3
    assert {e["count"] for e in graph["edges"]} == {2}
    await ws.disconnect()
    ws = await open_page(FlowConsumer, viewer, "project=shop&window=15m")
    graph = await ws.receive_json_from(timeout=3)
    assert graph["truncated"] is False and len(graph["edges"]) > 3
    await ws.disconnect()
    await listener.stop()
