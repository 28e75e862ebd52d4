"""PostgreSQL stops in the middle of ingest: exporters are told to retry (503 +
Retry-After), nothing is half-stored, and after the database returns every
acknowledged span is there.

Runs on its own embedded PostgreSQL (pgserver) so it can be stopped and
started without disturbing the shared server.
"""

import asyncio
import importlib
import os
import time

import httpx
import psycopg
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from pgserver._commands import pg_ctl
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from collector import embedded_pg
from collector.receivers.otlp_http import make_app
from collector.writer import Writer

SPANS_PER_REQUEST = 5
MIGRATIONS = ("collector.migrations.0002_telemetry", "collector.migrations.0003_logs")


@pytest.fixture
def own_postgres(tmp_path):
    """An embedded server with the telemetry schema; yields (server, conninfo)."""
    server = embedded_pg.start(tmp_path / "pg")
    server.psql("CREATE DATABASE outage;")
    params = conninfo_to_dict(server.get_uri("outage"))
    dsn = make_conninfo(**{k: v for k, v in params.items() if v not in (None, "")})
    with psycopg.connect(dsn, autocommit=True) as conn:
        for name in MIGRATIONS:
            conn.execute(importlib.import_module(name).SQL)
    yield server, dsn
    server.cleanup()


def _request(n: int) -> bytes:
    request = ExportTraceServiceRequest()
    spans = request.resource_spans.add()
    attribute = spans.resource.attributes.add()
    attribute.key, attribute.value.string_value = "service.name", "checkout"
    scope = spans.scope_spans.add()
    now = time.time_ns()
    for i in range(SPANS_PER_REQUEST):
        span = scope.spans.add()
        span.trace_id = n.to_bytes(16, "big")
        span.span_id = (i + 1).to_bytes(8, "big")
        span.name, span.kind = "charge", 2
        span.start_time_unix_nano = now - 1_000_000
        span.end_time_unix_nano = now
    return request.SerializeToString()


@pytest.mark.timeout(120)
async def test_a_database_outage_answers_503_and_loses_nothing_acknowledged(
    transactional_db, ingest_token, own_postgres
):
    server, dsn = own_postgres
    writer = Writer(dsn, linger=0.002)
    await writer.start()
    transport = httpx.ASGITransport(app=make_app(writer))
    headers = {"content-type": "application/x-protobuf", "authorization": f"Bearer {ingest_token}"}
    acked, refused, sent = set(), [], []
    statuses = []

    async with httpx.AsyncClient(transport=transport, base_url="http://collector") as client:

        async def send(n):
            sent.append(n)
            response = await client.post("/v1/traces", content=_request(n), headers=headers)
            statuses.append(response.status_code)
            if response.status_code == 200:
                acked.add(n)
            else:
                assert response.status_code == 503, response.text
                assert int(response.headers["retry-after"]) >= 1
                refused.append(n)

        async def exporter(first: int, stop: asyncio.Event):
            n = first
            while not stop.is_set():
                await send(n)
                n += 1
                await asyncio.sleep(0.005)

        stop = asyncio.Event()
        exporters = [asyncio.create_task(exporter(k * 1_000_000 + 1, stop)) for k in range(3)]
        # The first request opens the writer's connection and creates the day's
        # partitions: on a busy machine that takes a while.
        for _ in range(200):
            if acked:
                break
            await asyncio.sleep(0.05)
        assert acked, statuses[-5:]

        # The server dies without a clean shutdown, as in a crash.
        await asyncio.to_thread(
            pg_ctl, ["-w", "stop", "-m", "immediate"], pgdata=server.pgdata, user=server.system_user
        )
        before = len(refused)
        for _ in range(200):
            if len(refused) > before + 3:
                break
            await asyncio.sleep(0.05)
        assert len(refused) > before, "no 503 while the database was down"
        assert await writer.ready() is False

        await asyncio.to_thread(server.ensure_postgres_running)
        acked_before_return = len(acked)
        for _ in range(200):
            if len(acked) > acked_before_return + 5:
                break
            await asyncio.sleep(0.05)
        assert len(acked) > acked_before_return, "ingest did not recover"
        stop.set()
        await asyncio.gather(*exporters)
    await writer.stop()

    with psycopg.connect(dsn) as conn:
        rows = conn.execute(
            "SELECT trace_id, count(*) FROM collector_span GROUP BY trace_id"
        ).fetchall()
    stored = {int.from_bytes(trace, "big"): count for trace, count in rows}
    missing = acked - set(stored)
    assert not missing, f"{len(missing)} acknowledged request(s) lost"
    assert all(count == SPANS_PER_REQUEST for count in stored.values()), "a request half-stored"
    assert set(stored) <= set(sent)
    assert refused and os.path.exists(server.pgdata)
