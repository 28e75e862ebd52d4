"""Admission under hostile load, against the real receivers and PostgreSQL:
a byte budget, a queue bounded in seconds of work, and large gRPC exports
decoded off the event loop."""

import asyncio
import gzip
import time

import grpc
import httpx
import psycopg
import pytest
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2

from collector import auth
from collector.admission import DECODED_WEIGHT
from collector.db import conninfo
from collector.writer import Writer
from tests.collector.receiver_harness import grpc_receiver, http_receiver
from tests.collector.tcp_proxy import TcpProxy
from tests.otlp_requests import trace_request

pytestmark = pytest.mark.django_db(transaction=True)

MiB = 1024 * 1024


@pytest.fixture(autouse=True)
def fresh_token_cache():
    auth.forget()
    yield
    auth.forget()


def traces(request_id: int, spans: int, attributes: int = 1, value_size: int = 8) -> bytes:
    return trace_request(request_id, spans, attributes=attributes, value_size=value_size)


async def stored_traces(project_id: int) -> dict[int, int]:
    """Spans stored per trace (request id)."""
    async with await psycopg.AsyncConnection.connect(conninfo(), autocommit=True) as conn:
        cur = await conn.execute(
            "SELECT trace_id, count(*) FROM collector_span WHERE project_id = %s GROUP BY 1",
            (project_id,),
        )
        return {int.from_bytes(t, "big"): n for t, n in await cur.fetchall()}


def protobuf(token: str, gzipped: bool = False) -> dict[str, str]:
    headers = {"content-type": "application/x-protobuf", "authorization": f"Bearer {token}"}
    if gzipped:
        headers["content-encoding"] = "gzip"
    return headers


@pytest.fixture
async def proxy(telemetry_db):
    """A TCP proxy in front of the test database, for writers that must feel a fault."""
    server = TcpProxy.for_conninfo(conninfo())
    await server.start()
    yield server
    await server.stop()


async def test_bytes_in_flight_are_bounded_when_the_item_budget_would_take_them(
    project, ingest_token, proxy, settings
):
    # 12 requests of 20 spans each inflate to about 1 MiB: 240 items are far
    # below the item bound; each is counted as what its decoding holds,
    # some 4 MiB, so 48 MiB are far above a 16 MiB byte budget.
    settings.QUEUE_MAX_BYTES = 16 * MiB
    body = {n: gzip.compress(traces(n, 20, attributes=5, value_size=10_000)) for n in range(1, 13)}
    assert all(len(b) < 64 * 1024 for b in body.values())
    writer = Writer(proxy.conninfo(conninfo()), linger=0, lanes=1)
    await writer.start()
    try:
        async with http_receiver(writer) as url, httpx.AsyncClient(timeout=60) as client:
            warm = await client.post(
                url + "/v1/traces", content=traces(100, 1), headers=protobuf(ingest_token)
            )
            assert warm.status_code == 200
            # The database stalls: what is admitted stays in flight.
            proxy.bytes_per_second = 1  # a trickle

            async def send(n):
                response = await client.post(
                    url + "/v1/traces", content=body[n], headers=protobuf(ingest_token, True)
                )
                return n, response

            tasks = [asyncio.create_task(send(n)) for n in body]
            refused = {}
            deadline = time.monotonic() + 20
            while len(refused) < 8 and time.monotonic() < deadline:
                done = [t.result() for t in tasks if t.done()]
                # On a loaded machine one admitted request may still get
                # through before the trickle holds the writer: only 429s count.
                refused = {n: r for n, r in done if r.status_code != 200}
                await asyncio.sleep(0.05)
            # The refused are answered while the admitted still wait.
            assert len(refused) >= 8, f"only {len(refused)} of 12 refused while the writer stalls"
            for response in refused.values():
                assert response.status_code == 429, response.text
                assert int(response.headers["retry-after"]) >= 1
            one = DECODED_WEIGHT * len(traces(1, 20, attributes=5, value_size=10_000))
            assert writer.admission.bytes_in_flight <= 16 * MiB + one
            proxy.bytes_per_second = None  # the database catches up
            answers = dict(await asyncio.gather(*tasks))
    finally:
        await writer.stop()
    acked = {n for n, r in answers.items() if r.status_code == 200}
    assert acked and all(r.status_code in (200, 429) for r in answers.values())
    stored = await stored_traces(project.id)
    # Acknowledged requests are stored whole; refused ones not at all.
    assert stored == {100: 1, **dict.fromkeys(acked, 20)}


async def test_a_slow_writer_refuses_at_once_what_it_could_not_store_within_seconds(
    project, ingest_token, proxy
):
    # The writer's connection carries about 60 kB/s: some 250 spans a second.
    proxy.bytes_per_second = 60_000
    writer = Writer(proxy.conninfo(conninfo()), linger=0, lanes=1)
    await writer.start()
    latencies: dict[int, tuple[int, float]] = {}
    try:
        async with http_receiver(writer) as url, httpx.AsyncClient(timeout=120) as client:

            async def send(n, spans=100):
                started = time.monotonic()
                response = await client.post(
                    url + "/v1/traces", content=traces(n, spans), headers=protobuf(ingest_token)
                )
                latencies[n] = (response.status_code, time.monotonic() - started)
                return response

            # A few requests at once, so the writer measures its pace.
            await asyncio.gather(*(send(n) for n in range(1, 5)))
            assert all(status == 200 for status, _ in latencies.values())
            # Forty at once: about 16 s of work for this writer.
            await asyncio.gather(*(send(n) for n in range(10, 50)))
    finally:
        await writer.stop()
    flood = {n: latencies[n] for n in range(10, 50)}
    acked = {n for n, (status, _) in flood.items() if status == 200}
    refused = {n for n, (status, _) in flood.items() if status == 429}
    assert acked | refused == set(flood)
    assert len(refused) >= 15, f"{len(refused)} refused: the queue took it all"
    # Refused once decoded (this client shares the server's loop and cores),
    # not after waiting for the queue.
    assert max(flood[n][1] for n in refused) < 3, "a refusal waited for the queue"
    # The queue holds seconds of work, not the whole flood.
    assert max(flood[n][1] for n in acked) < 8, sorted(flood[n][1] for n in acked)
    stored = await stored_traces(project.id)
    assert stored == dict.fromkeys(set(range(1, 5)) | acked, 100)


async def test_a_large_request_to_an_idle_writer_measures_its_pace(
    project, ingest_token, telemetry_db
):
    # Its transaction is the only measure the writer gets before the next
    # large request: a small one committed after it while that one decodes
    # would otherwise set the pace, and the queue would look like minutes.
    writer = Writer(conninfo(), linger=0)
    await writer.start()
    try:
        async with http_receiver(writer) as url, httpx.AsyncClient(timeout=60) as client:
            assert writer.drain.per_second is None
            body = traces(1, 3_000)
            started = time.monotonic()
            response = await client.post(
                url + "/v1/traces", content=body, headers=protobuf(ingest_token)
            )
            took = time.monotonic() - started
            assert response.status_code == 200, response.text
            rate = writer.drain.per_second
    finally:
        await writer.stop()
    assert rate is not None, "a 3,000-span request written by an idle writer was not measured"
    # Measured from queueing to commit, within what the client waited.
    assert rate >= 3_000 / took, (rate, took)
    assert (await stored_traces(project.id)) == {1: 3_000}


async def test_a_large_grpc_export_does_not_stall_health_checks_or_small_exports(
    project, ingest_token, telemetry_db
):
    # About 15 MB each, half a second or more to decode. A fast machine gets
    # through one in little time, so they go one after another (the four
    # again if need be) until the exports have lasted long enough to show a
    # stall, whatever the machine.
    larges = [traces(n, 20_000, attributes=12, value_size=40) for n in (1, 3, 4, 5)]
    small = traces(2, 5)
    metadata = (("authorization", f"Bearer {ingest_token}"),)
    writer = Writer(conninfo(), linger=0)
    await writer.start()
    try:
        async with (
            http_receiver(writer) as url,
            grpc_receiver(writer) as address,
            httpx.AsyncClient(timeout=60) as client,
            grpc.aio.insecure_channel(
                address, options=[("grpc.max_send_message_length", 64 * MiB)]
            ) as channel,
        ):
            export = channel.unary_unary(
                "/opentelemetry.proto.collector.trace.v1.TraceService/Export",
                request_serializer=None,
                response_deserializer=trace_service_pb2.ExportTraceServiceResponse.FromString,
            )
            assert (await client.get(url + "/healthz")).status_code == 200
            started = time.monotonic()

            async def large_exports() -> int:
                # Round the four again (a retry, stored once) on a machine
                # that decodes them all in under 3 s.
                for sent in range(1, 13):
                    await export(larges[(sent - 1) % len(larges)], metadata=metadata, timeout=120)
                    if time.monotonic() - started > 3:
                        return sent
                return sent

            big = asyncio.ensure_future(large_exports())
            health, small_exports = [], []

            async def timed(function, into: list, pause: float):
                # Each on its own, so a stall shows in whichever waits through it.
                while not big.done():
                    before = time.monotonic()
                    await function()
                    into.append(time.monotonic() - before)
                    await asyncio.sleep(pause)

            async def healthz():
                assert (await client.get(url + "/healthz")).status_code == 200

            async def small_export():
                await export(small, metadata=metadata, timeout=60)

            await asyncio.gather(
                timed(healthz, health, 0.02), timed(small_export, small_exports, 0.2)
            )
            sent = await big
            took = time.monotonic() - started
    finally:
        await writer.stop()
    print(
        f"{sent} large exports took {took:.1f} s, /healthz up to {max(health):.2f} s, "
        f"small {small_exports}"
    )
    assert took > 2, f"the large exports took {took:.1f} s: too little to show a stall"
    assert max(health) < 1.0, (
        f"/healthz took up to {max(health):.2f} s during {took:.1f} s of large exports"
    )
    assert max(small_exports) < 2.0, f"a small export took up to {max(small_exports):.2f} s"
    expected = {n: 20_000 for n in (1, 3, 4, 5)[: min(sent, 4)]}
    assert (await stored_traces(project.id)) == {**expected, 2: 5}
