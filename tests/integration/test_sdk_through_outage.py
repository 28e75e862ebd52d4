"""An OpenTelemetry SDK exporter with its default settings rides out a 10 s
database outage: every span the application made is stored, once.

The SDK's HTTP exporter gives each batch 10 s for all its attempts and
honours Retry-After; the collector holds a batch while the database is away
and answers in time for a retry. The database is cut with a TCP proxy in
front of the shared server, which only this test's writer goes through.
"""

import asyncio
import threading
import time

import psycopg
import pytest
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

from collector import auth
from collector.db import conninfo
from collector.writer import Writer
from tests.collector.receiver_harness import http_receiver
from tests.collector.tcp_proxy import TcpProxy

pytestmark = pytest.mark.django_db(transaction=True)

SPANS_PER_SECOND = 100
OUTAGE_AT_S, OUTAGE_S, PRODUCE_S = 3.0, 10.0, 16.0


def produce(provider: TracerProvider, spans: int, stop_at: float) -> None:
    """Make `spans` spans, evenly until `stop_at` (monotonic), as an application does."""
    tracer = provider.get_tracer("shop.checkout")
    started = time.monotonic()
    for n in range(spans):
        with tracer.start_as_current_span("charge", attributes={"order.id": n}):
            pass
        delay = started + (n + 1) * (stop_at - started) / spans - time.monotonic()
        if delay > 0:
            time.sleep(delay)


@pytest.mark.timeout(120)
async def test_default_sdk_exporter_loses_nothing_through_a_10_s_database_outage(
    project, ingest_token, telemetry_db
):
    auth.forget()
    proxy = TcpProxy.for_conninfo(conninfo())
    await proxy.start()
    writer = Writer(proxy.conninfo(conninfo()))
    await writer.start()
    spans = int(SPANS_PER_SECOND * PRODUCE_S)
    try:
        async with http_receiver(writer) as url:
            provider = TracerProvider(resource=Resource.create({"service.name": "checkout"}))
            # Every exporter and batching setting at its default.
            provider.add_span_processor(
                BatchSpanProcessor(
                    OTLPSpanExporter(
                        endpoint=f"{url}/v1/traces",
                        headers={"authorization": f"Bearer {ingest_token}"},
                    )
                )
            )
            started = time.monotonic()
            app = threading.Thread(target=produce, args=(provider, spans, started + PRODUCE_S))
            app.start()
            await asyncio.sleep(OUTAGE_AT_S)
            await proxy.cut()
            await asyncio.sleep(OUTAGE_S)
            await proxy.restore()
            await asyncio.to_thread(app.join)
            await asyncio.to_thread(provider.shutdown)  # exports what is left
    finally:
        await writer.stop()
        await proxy.stop()
    async with await psycopg.AsyncConnection.connect(conninfo(), autocommit=True) as conn:
        cur = await conn.execute(
            "SELECT count(*), count(DISTINCT span_id) FROM collector_span WHERE project_id = %s",
            (project.id,),
        )
        stored, distinct = await cur.fetchone()
    assert (stored, distinct) == (spans, spans), f"{spans} spans made, {stored} stored"
