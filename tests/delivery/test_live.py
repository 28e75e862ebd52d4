"""/ws/delivery/: a pass that finds something reaches an open Delivery page
as an htmx out-of-band fragment."""

import asyncio
import time

import pytest
from asgiref.sync import sync_to_async

from dashboard.delivery import engine
from dashboard.delivery.views import DeliveryConsumer
from dashboard.live import listener
from tests.dashboard.conftest import consumer_connections  # noqa: F401  (fixture)
from tests.dashboard.test_live_pages import open_page
from tests.delivery.test_findings import Shop

pytestmark = pytest.mark.usefixtures("telemetry_db", "consumer_connections")


async def test_the_page_gets_the_duplicate_the_pass_found(viewer, project):
    ws = await open_page(DeliveryConsumer, viewer, "project=shop&window=1h")
    first = await ws.receive_from(timeout=5)
    assert 'id="delivery-live"' in first and 'hx-swap-oob="true"' in first
    assert "ord-live" not in first
    await asyncio.wait_for(listener.connected.wait(), 5)
    now = time.time_ns()
    shop = Shop()
    shop.publish("ord-live", now - 3 * 10**9)
    shop.process("ord-live", now - 2 * 10**9)
    shop.process("ord-live", now - 1 * 10**9)
    await sync_to_async(shop.store, thread_sensitive=False)(project.id)
    await sync_to_async(engine.run_pass)()
    deadline = time.monotonic() + 10
    while True:
        fragment = await ws.receive_from(timeout=max(0.1, deadline - time.monotonic()))
        if "ord-live" in fragment:
            break
    assert '<tr data-kind="duplicate">' in fragment
    await ws.disconnect()
    await listener.stop()
