"""The storage writer against the real PostgreSQL: dedupe, rollups, e2e, partitions."""

import asyncio
import base64
import datetime as dt
import gc
import importlib
import json
import os
import time
import weakref

import psycopg
import pytest

from collector import histogram
from collector.batch import (
    CONSUMER,
    KIND_CLIENT,
    KIND_CONSUMER,
    KIND_PRODUCER,
    KIND_SERVER,
    ORIGIN_CLOUDEVENT,
    PRODUCER,
    STATUS_ERROR,
    Batch,
    EnvelopeRow,
    LogRow,
    Saturated,
    SpanRow,
    StageRow,
    StorageUnavailable,
)
from collector.db import conninfo
from collector.writer import Writer
from collector.writer.joins import WAITING_CONSUMERS
from collector.writer.lanes import WRITER_OPTIONS

MS = 1_000_000
# A fixed minute, a little in the past, so every row lands in one rollup minute.
BASE_NS = (time.time_ns() // 60_000_000_000 - 5) * 60_000_000_000


def tid(n: int) -> bytes:
    return n.to_bytes(16, "big")


def sid(n: int) -> bytes:
    return n.to_bytes(8, "big")


def span(
    project_id, trace, span_id, *, parent=None, kind=1, service="svc", at=0, ms=5, error=False
):
    return SpanRow(
        project_id=project_id,
        trace_id=tid(trace),
        span_id=sid(span_id),
        parent_span_id=sid(parent) if parent else None,
        start_time_ns=BASE_NS + at * MS,
        duration_ns=ms * MS,
        service=service,
        name="op",
        kind=kind,
        status_code=STATUS_ERROR if error else 0,
        status_message="boom" if error else None,
        attributes={"k": "v"},
        resource={"service.name": service},
    )


def publish(project_id, trace, span_id, *, at=0, ms=2, service="orders", channel="orders"):
    return StageRow(
        project_id=project_id,
        time_ns=BASE_NS + at * MS,
        stage="published",
        role=PRODUCER,
        service=service,
        system="kafka",
        channel=channel,
        trace_id=tid(trace),
        span_id=sid(span_id),
        duration_ms=ms,
    )


def consume(project_id, trace, span_id, linked, *, stage="processed", at=0, ms=30, error=None):
    return StageRow(
        project_id=project_id,
        time_ns=BASE_NS + at * MS,
        stage=stage,
        role=CONSUMER,
        service="payments",
        system="kafka",
        channel="orders",
        consumer_group="payments",
        trace_id=tid(trace),
        span_id=sid(span_id),
        linked=[(tid(t), sid(s)) for t, s in linked],
        error=error,
        duration_ms=ms,
    )


@pytest.fixture
async def writer(telemetry_db):
    w = Writer(conninfo(), linger=0)
    await w.start()
    yield w
    await w.stop()


@pytest.fixture
async def pg(telemetry_db):
    async with await psycopg.AsyncConnection.connect(conninfo(), autocommit=True) as conn:
        yield conn


async def fetch(pg, sql, *params):
    cur = await pg.execute(sql, params)
    return await cur.fetchall()


async def edge(pg, kind):
    rows = await fetch(
        pg,
        "SELECT source, target, consumer_group, count, received, errors, deadlettered, "
        "duration_hist, e2e_hist, e2e_count FROM collector_flowrollup WHERE kind = %s",
        kind,
    )
    assert len(rows) == 1, rows
    return dict(
        zip(
            (
                "source", "target", "group", "count", "received", "errors", "dead",
                "duration_hist", "e2e_hist", "e2e_count",
            ),
            rows[0],
            strict=True,
        )
    )  # fmt: skip


def messaging_batch(project_id):
    """A producer publishes three messages; a consumer receives and handles them."""
    batch = Batch(project_id=project_id, signal="traces")
    for n in (1, 2, 3):
        batch.spans.append(span(project_id, n, 10 + n, kind=KIND_PRODUCER, service="orders"))
        batch.stages.append(publish(project_id, n, 10 + n))
    batch.stages.append(consume(project_id, 1, 21, [(1, 11)], at=40))
    batch.stages.append(consume(project_id, 2, 22, [(2, 12)], at=250, stage="failed", error="x"))
    batch.stages.append(consume(project_id, 3, 23, [(3, 13)], at=70, stage="deadlettered"))
    batch.stages.append(consume(project_id, 3, 24, [(3, 13)], at=10, stage="received", ms=1))
    for n, at in ((1, 40), (2, 250), (3, 70)):
        batch.spans.append(
            span(
                project_id, n, 20 + n, parent=10 + n, kind=KIND_CONSUMER, service="payments", at=at
            )
        )
    return batch


async def test_a_batch_submitted_twice_is_stored_once_and_counted_once(writer, pg, project):
    batch = messaging_batch(project.id)
    first = await writer.submit(batch)
    assert first.stored == batch.size and first.duplicates == 0
    second = await writer.submit(messaging_batch(project.id))
    assert second.stored == 0 and second.duplicates == batch.size

    assert (await fetch(pg, "SELECT count(*) FROM collector_span"))[0][0] == 6
    assert (await fetch(pg, "SELECT count(*) FROM collector_stage"))[0][0] == 7
    published = await edge(pg, "publish")
    assert published["count"] == 3 and published["errors"] == 0
    consumed = await edge(pg, "consume")
    assert consumed["count"] == 3 and consumed["received"] == 1


async def test_coalesced_duplicates_in_one_transaction_are_stored_once(writer, pg, project):
    results = await asyncio.gather(*(writer.submit(messaging_batch(project.id)) for _ in range(4)))
    assert sum(r.stored for r in results) == 13
    assert (await fetch(pg, "SELECT count(*) FROM collector_stage"))[0][0] == 7
    assert (await edge(pg, "publish"))["count"] == 3


async def test_a_retried_export_in_a_group_with_new_rows_stores_the_new_ones_once(
    writer, pg, project
):
    # The retry's rows make the straight COPY fail; the group is written
    # again deduplicating, and the new request beside it loses nothing.
    first = await writer.submit(messaging_batch(project.id))
    new = Batch(project.id, "traces", stages=[publish(project.id, 7, 70)])
    new.spans.append(span(project.id, 7, 70, kind=KIND_PRODUCER, service="orders"))
    retry, fresh = await asyncio.gather(
        writer.submit(messaging_batch(project.id)), writer.submit(new)
    )
    assert (retry.stored, retry.duplicates) == (0, first.stored)
    assert (fresh.stored, fresh.duplicates) == (2, 0)
    assert (await fetch(pg, "SELECT count(*) FROM collector_span"))[0][0] == 7
    assert (await fetch(pg, "SELECT count(*) FROM collector_stage"))[0][0] == 8
    assert (await edge(pg, "publish"))["count"] == 4
    assert (await edge(pg, "consume"))["count"] == 3


async def test_publish_and_consume_edges_have_counts_errors_and_histograms(writer, pg, project):
    await writer.submit(messaging_batch(project.id))
    published = await edge(pg, "publish")
    assert published["source"] == "service:orders"
    assert published["target"] == "channel:kafka:orders"
    assert published["duration_hist"][histogram.bucket(2)] == 3

    consumed = await edge(pg, "consume")
    assert consumed["source"] == "channel:kafka:orders"
    assert consumed["target"] == "service:payments"
    assert consumed["group"] == "payments"
    assert consumed["count"] == 3  # processed + failed + dead-lettered; receipts apart
    assert consumed["received"] == 1
    assert consumed["errors"] == 2 and consumed["dead"] == 1
    assert consumed["duration_hist"][histogram.bucket(30)] == 3
    # produce -> consume latency of the three outcomes: 40, 250 and 70 ms
    assert consumed["e2e_count"] == 3
    assert consumed["e2e_hist"][histogram.bucket(40)] == 1
    assert consumed["e2e_hist"][histogram.bucket(70)] == 1
    assert consumed["e2e_hist"][histogram.bucket(250)] == 1
    e2e = await fetch(pg, "SELECT stage, e2e_ms FROM collector_stage WHERE role = 'consumer'")
    assert sorted(e2e) == [
        ("deadlettered", 70.0), ("failed", 250.0), ("processed", 40.0), ("received", 10.0),
    ]  # fmt: skip


async def test_e2e_uses_a_publish_stored_by_an_earlier_request(writer, pg, project):
    producer = Batch(project.id, "traces", stages=[publish(project.id, 7, 70)])
    await writer.submit(producer)
    consumer = Batch(project.id, "traces", stages=[consume(project.id, 7, 71, [(7, 70)], at=120)])
    await writer.submit(consumer)
    assert (await edge(pg, "consume"))["e2e_count"] == 1
    rows = await fetch(pg, "SELECT e2e_ms FROM collector_stage WHERE role = 'consumer'")
    assert rows == [(120.0,)]


async def test_a_producer_arriving_after_its_consumer_still_gives_e2e_once(writer, pg, project):
    consumer = Batch(project.id, "traces", stages=[consume(project.id, 8, 81, [(8, 80)], at=90)])
    await writer.submit(consumer)
    assert (await edge(pg, "consume"))["e2e_count"] == 0
    producer = Batch(project.id, "traces", stages=[publish(project.id, 8, 80)])
    await writer.submit(producer)
    await writer.submit(Batch(project.id, "traces", stages=[publish(project.id, 8, 80)]))
    consumed = await edge(pg, "consume")
    assert consumed["e2e_count"] == 1
    assert consumed["e2e_hist"][histogram.bucket(90)] == 1
    assert consumed["count"] == 1  # the late producer adds latency, not another outcome


async def test_cloudevents_journey_gets_e2e_by_source_and_id(writer, pg, project):
    def ce(stage, role, at, service):
        return StageRow(
            project_id=project.id, time_ns=BASE_NS + at * MS, stage=stage, role=role,
            service=service, system="rabbitmq", channel="invoices",
            consumer_group="billing" if role == CONSUMER else "",
            event_id="ev-1", event_source="/shop", event_type="InvoiceDue",
            origin=ORIGIN_CLOUDEVENT,
        )  # fmt: skip

    await writer.submit(Batch(project.id, "events", stages=[ce("processed", CONSUMER, 300, "b")]))
    await writer.submit(Batch(project.id, "events", stages=[ce("published", PRODUCER, 0, "a")]))
    consumed = await edge(pg, "consume")
    assert consumed["e2e_count"] == 1
    assert consumed["e2e_hist"][histogram.bucket(300)] == 1


async def test_call_edges_count_each_client_server_pair_once_across_batches(writer, pg, project):
    pid = project.id
    # pair 1 arrives together; pair 2 server first; pair 3 client first; pair 4 same service
    await writer.submit(
        Batch(
            pid,
            "traces",
            spans=[
                span(pid, 1, 1, kind=KIND_CLIENT, service="web", ms=12),
                span(pid, 1, 2, parent=1, kind=KIND_SERVER, service="api"),
                span(pid, 2, 2, parent=1, kind=KIND_SERVER, service="api"),
                span(pid, 3, 1, kind=KIND_CLIENT, service="web", ms=80, error=True),
                span(pid, 4, 1, kind=KIND_CLIENT, service="api"),
                span(pid, 4, 2, parent=1, kind=KIND_SERVER, service="api"),
                span(pid, 5, 2, parent=1, kind=KIND_SERVER, service="api"),
            ],
        )
    )
    second = Batch(
        pid,
        "traces",
        spans=[
            span(pid, 2, 1, kind=KIND_CLIENT, service="web", ms=12),
            span(pid, 3, 2, parent=1, kind=KIND_SERVER, service="api"),
            # pair 5: the client lands with a retry of its already stored server
            span(pid, 5, 1, kind=KIND_CLIENT, service="web", ms=12),
            span(pid, 5, 2, parent=1, kind=KIND_SERVER, service="api"),
        ],
    )
    await writer.submit(second)
    await writer.submit(second)  # a retry changes nothing
    call = await edge(pg, "call")
    assert (call["source"], call["target"]) == ("service:web", "service:api")
    assert call["count"] == 4
    assert call["errors"] == 1
    assert call["duration_hist"][histogram.bucket(12)] == 3
    assert call["duration_hist"][histogram.bucket(80)] == 1


async def test_partitions_are_created_on_demand_for_the_days_a_batch_touches(writer, pg, project):
    two_days_ago = time.time_ns() - 2 * 86_400 * 10**9
    batch = Batch(project.id, "traces", spans=[span(project.id, 1, 1)])
    batch.spans[0].start_time_ns = two_days_ago
    await writer.submit(batch)
    day = dt.datetime.fromtimestamp(two_days_ago / 1e9, dt.UTC).date()
    names = await fetch(
        pg,
        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
        "WHERE i.inhparent = 'collector_span'::regclass",
    )
    assert (f"collector_span_p{day:%Y%m%d}",) in names


async def test_rows_outside_the_time_window_are_refused_and_the_rest_stored(writer, pg, project):
    pid = project.id
    batch = Batch(pid, "traces", spans=[span(pid, 1, 1), span(pid, 1, 2), span(pid, 1, 3)])
    batch.spans[1].start_time_ns = time.time_ns() + 3 * 86_400 * 10**9
    batch.spans[2].start_time_ns = time.time_ns() - 400 * 86_400 * 10**9
    result = await writer.submit(batch)
    assert result.stored == 1 and result.refused == 2
    assert any("future" in reason for reason in result.reasons)
    assert any("retention" in reason for reason in result.reasons)
    assert (await fetch(pg, "SELECT count(*) FROM collector_span"))[0][0] == 1
    far = (dt.datetime.now(dt.UTC) + dt.timedelta(days=3)).date()
    names = await fetch(
        pg, "SELECT relname FROM pg_class WHERE relname = %s", f"collector_span_p{far:%Y%m%d}"
    )
    assert names == []


def _envelope_and_stage(pid, received_ns, from_event=False):
    env = EnvelopeRow(
        project_id=pid, time_ns=received_ns, source="/shop", event_id="e-9", type="OrderPlaced",
        data={"total": 3}, data_size=12, time_from_event=from_event,
    )  # fmt: skip
    stage = StageRow(
        project_id=pid, time_ns=received_ns, stage="published", role=PRODUCER, service="/shop",
        channel="orders", system="kafka", event_id="e-9", event_source="/shop",
        event_type="OrderPlaced", origin=ORIGIN_CLOUDEVENT,
    )  # fmt: skip
    return Batch(pid, "events", envelopes=[env], stages=[stage])


async def test_cloudevents_without_time_are_deduplicated_across_receive_times(writer, pg, project):
    now = time.time_ns()
    await writer.submit(_envelope_and_stage(project.id, now))
    retry = await writer.submit(_envelope_and_stage(project.id, now + 5_000 * MS))
    assert retry.stored == 0 and retry.duplicates == 2
    assert (await fetch(pg, "SELECT count(*) FROM collector_envelope"))[0][0] == 1
    assert (await fetch(pg, "SELECT count(*) FROM collector_stage"))[0][0] == 1
    assert (await edge(pg, "publish"))["count"] == 1
    payload = await fetch(pg, "SELECT data FROM collector_envelope")
    assert payload == [({"total": 3},)]


async def test_logs_are_stored_once(writer, pg, project):
    record = LogRow(project.id, BASE_NS, "payments", 17, "ERROR", "card declined", tid(1), sid(2))
    await writer.submit(Batch(project.id, "logs", logs=[record]))
    await writer.submit(Batch(project.id, "logs", logs=[record]))
    assert (
        await fetch(pg, "SELECT body FROM collector_log WHERE project_id = %s", project.id)
    ) == [("card declined",)]
    await pg.execute("DELETE FROM collector_log")


async def test_stored_values_round_trip_exactly(writer, pg, project):
    """Times to the microsecond, a resource shared by many spans, JSON numbers of any size."""
    at_ns = BASE_NS + 123_456_789  # nanoseconds: PostgreSQL keeps the microseconds
    resource = {"service.name": "orders", "host.name": "node-7", "pod": "orders-5f9c"}
    spans = [span(project.id, 40, n, service="orders") for n in (1, 2, 3)]
    for row in spans:
        row.resource = resource
        row.start_time_ns = at_ns
    spans[0].attributes = {"messaging.kafka.offset": 2**63 - 1, "ratio": 0.25, "ok": True}
    big = 2**70
    env = EnvelopeRow(
        project_id=project.id, time_ns=at_ns, source="/shop", event_id="e-big",
        type="OrderPlaced", data={"huge": big, "text": "naïve ✓"}, data_size=40,
    )  # fmt: skip
    await writer.submit(Batch(project.id, "traces", spans=spans))
    await writer.submit(Batch(project.id, "events", envelopes=[env]))
    rows = await fetch(
        pg,
        "SELECT start_time, resource, attributes FROM collector_span "
        "WHERE project_id = %s ORDER BY span_id",
        project.id,
    )
    expected_time = dt.datetime(1970, 1, 1, tzinfo=dt.UTC) + dt.timedelta(
        microseconds=at_ns // 1000
    )
    assert [r[0] for r in rows] == [expected_time] * 3
    assert [r[1] for r in rows] == [resource] * 3
    assert rows[0][2] == {"messaging.kafka.offset": 2**63 - 1, "ratio": 0.25, "ok": True}
    (data,) = await fetch(pg, "SELECT data FROM collector_envelope WHERE event_id = 'e-big'")
    assert data[0] == {"huge": big, "text": "naïve ✓"}


async def test_a_retry_of_rows_with_sub_microsecond_times_is_recognised(writer, pg, project):
    first = span(project.id, 41, 1)
    first.start_time_ns = BASE_NS + 999  # below PostgreSQL's resolution
    second = span(project.id, 41, 2)
    await writer.submit(Batch(project.id, "traces", spans=[first]))
    # The retry collides on the first span and goes through the staging path.
    result = await writer.submit(Batch(project.id, "traces", spans=[first, second]))
    assert (result.stored, result.duplicates) == (1, 1)
    assert (await fetch(pg, "SELECT count(*) FROM collector_span"))[0][0] == 2


async def test_an_event_reported_at_several_stages_keeps_one_envelope(writer, pg, project):
    def report(stage, at_ms, role):
        env = EnvelopeRow(
            project_id=project.id, time_ns=BASE_NS + at_ms * MS, source="/shop",
            event_id="e-7", type="OrderPlaced", data={"total": 7}, data_size=11,
        )  # fmt: skip
        row = StageRow(
            project_id=project.id, time_ns=env.time_ns, stage=stage, role=role,
            service="payments" if role == CONSUMER else "/shop", channel="orders",
            system="kafka", event_id="e-7", event_source="/shop", origin=ORIGIN_CLOUDEVENT,
        )  # fmt: skip
        return Batch(project.id, "events", envelopes=[env], stages=[row])

    await writer.submit(report("published", 0, PRODUCER))
    both = report("received", 5, CONSUMER)
    both.envelopes += report("processed", 9, CONSUMER).envelopes
    both.stages += report("processed", 9, CONSUMER).stages
    await writer.submit(both)
    assert await fetch(pg, "SELECT event_id, data FROM collector_envelope") == [
        ("e-7", {"total": 7})
    ]
    stages = await fetch(pg, "SELECT stage FROM collector_stage ORDER BY time")
    assert stages == [("published",), ("received",), ("processed",)]


async def test_a_request_postgresql_refuses_is_refused_alone_and_not_retried(
    telemetry_db, pg, project
):
    writer = Writer(conninfo(), linger=0.2)  # both requests share one transaction
    await writer.start()
    try:
        bad = Batch(project.id, "traces", spans=[span(project.id, 50, 1, service="a\x00b")])
        good = Batch(project.id, "traces", spans=[span(project.id, 51, 1)])
        bad_result, good_result = await asyncio.gather(writer.submit(bad), writer.submit(good))
    finally:
        await writer.stop()
    assert (bad_result.stored, bad_result.refused) == (0, 1)
    assert bad_result.reasons[0].startswith("the data could not be stored: ")
    assert (good_result.stored, good_result.refused) == (1, 0)
    assert await fetch(pg, "SELECT trace_id FROM collector_span") == [(tid(51),)]


async def test_a_request_too_large_for_an_index_is_refused_alone(telemetry_db, pg, project):
    """A name past PostgreSQL's index key limit fails the rollup upsert: permanent, not a 503."""
    writer = Writer(conninfo(), linger=0.2)
    await writer.start()
    try:
        bad = Batch(project.id, "traces", spans=[span(project.id, 60, 1)])
        # Random text: PostgreSQL compresses index keys, a repeated letter would fit.
        huge = base64.b64encode(os.urandom(6000)).decode()
        bad.stages.append(publish(project.id, 60, 1, channel=huge))
        good = Batch(project.id, "traces", spans=[span(project.id, 61, 1)])
        bad_result, good_result = await asyncio.gather(writer.submit(bad), writer.submit(good))
    finally:
        await writer.stop()
    assert (bad_result.stored, bad_result.refused) == (0, 1)
    assert good_result.stored == 1
    assert await fetch(pg, "SELECT trace_id FROM collector_span") == [(tid(61),)]


async def test_failures_are_counted_once_per_group_and_minute(writer, pg, project):
    batch = messaging_batch(project.id)  # one failed, one dead-lettered consume
    await writer.submit(batch)
    await writer.submit(batch)  # a retry adds nothing
    rows = await fetch(
        pg,
        "SELECT service, channel, system, consumer_group, error, count, deadlettered, "
        "first_time <= last_time FROM collector_failurerollup ORDER BY error",
    )
    assert rows == [
        ("payments", "orders", "kafka", "payments", "", 1, 1, True),
        ("payments", "orders", "kafka", "payments", "x", 1, 0, True),
    ]


async def test_rollups_keep_each_value_exactly_across_transactions(writer, pg, project):
    # Two transactions in one minute add to the same flow and failure rows:
    # minute, sums, histograms, times to the microsecond and the example.
    def failed(n, at_ns, **fields):
        stage = consume(project.id, 40 + n, 400 + n, [], stage="failed", error="timeout", ms=7)
        stage.time_ns = BASE_NS + at_ns
        for name, value in fields.items():
            setattr(stage, name, value)
        return stage

    first = failed(1, 1_234_567_891)
    second = failed(2, 59_000_000_999, event_id="evt-2", event_source="/orders")
    await writer.submit(Batch(project.id, "traces", stages=[first]))
    await writer.submit(Batch(project.id, "traces", stages=[second, publish(project.id, 50, 500)]))

    minute = dt.datetime.fromtimestamp(BASE_NS // 10**9, dt.UTC)
    rows = await fetch(
        pg,
        "SELECT minute, count, errors, duration_hist, duration_sum_ms FROM collector_flowrollup "
        "WHERE kind = 'consume'",
    )
    hist = histogram.empty()
    hist[histogram.bucket(7)] = 2
    assert rows == [(minute, 2, 2, hist, 14.0)]
    assert (await edge(pg, "publish"))["count"] == 1
    rows = await fetch(
        pg,
        "SELECT minute, count, first_time, last_time, example_error, example_event_id, "
        "example_event_source, example_trace_id FROM collector_failurerollup",
    )
    at = lambda ns: dt.datetime.fromtimestamp(0, dt.UTC) + dt.timedelta(microseconds=ns // 1000)  # noqa: E731
    assert rows == [
        (
            minute, 2, at(first.time_ns), at(second.time_ns), "timeout", "evt-2", "/orders",
            tid(42),
        )
    ]  # fmt: skip


async def test_the_migration_rebuilds_the_rows_the_writer_keeps(writer, pg, project):
    """Failure rollups rewritten by migration 0006 and rows from the writer must add up."""
    migration = importlib.import_module("collector.migrations.0006_failure_fingerprints")
    await writer.submit(messaging_batch(project.id))
    query = (
        "SELECT minute, group_key, service, channel, system, consumer_group, error, error_type, "
        "fingerprint, count, deadlettered, first_time, last_time, example_error, "
        "example_event_id FROM collector_failurerollup ORDER BY 1, 2"
    )
    written = await fetch(pg, query)
    async with pg.transaction():
        await pg.execute("DELETE FROM collector_failurerollup")
    with psycopg.connect(conninfo()) as conn:  # a transaction, for server-side cursors
        assert migration.rebuild(conn) == len(written)
    assert await fetch(pg, query) == written


async def test_commit_sends_one_hint_per_area_and_project(writer, project):
    async with await psycopg.AsyncConnection.connect(conninfo(), autocommit=True) as listener:
        await listener.execute("LISTEN eventscope")
        await writer.submit(messaging_batch(project.id))
        hints = []
        gen = listener.notifies(timeout=1.0)
        async for note in gen:
            hints.append(json.loads(note.payload))
    assert sorted(h["area"] for h in hints) == ["failures", "flow", "stages"]
    assert {h["project"] for h in hints} == {project.id}


async def test_a_full_queue_answers_saturated_without_storing(telemetry_db, project):
    w = Writer(conninfo(), max_items=10, linger=0)
    await w.start()
    try:
        # Hold the writer's first transaction so the queue fills behind it.
        big = Batch(project.id, "traces", spans=[span(project.id, 9, n) for n in range(1, 11)])
        first = asyncio.create_task(w.submit(big))
        await asyncio.sleep(0)
        with pytest.raises(Saturated) as info:
            await w.submit(
                Batch(project.id, "traces", spans=[span(project.id, 9, n) for n in range(20, 25)])
            )
        assert info.value.status == 429 and info.value.retry_after >= 1
        with pytest.raises(Saturated):
            w.admit()  # receivers ask before decoding the next body
        assert (await first).stored == 10
        w.admit()  # room again once the batch is committed
    finally:
        await w.stop()


async def test_clean_shutdown_commits_everything_acknowledged(telemetry_db, pg, project):
    w = Writer(conninfo(), linger=0.05)
    await w.start()
    batches = [
        Batch(project.id, "traces", spans=[span(project.id, 100 + n, m) for m in range(1, 51)])
        for n in range(20)
    ]
    tasks = [asyncio.create_task(w.submit(b)) for b in batches]
    await asyncio.sleep(0)
    await w.stop()
    results = await asyncio.gather(*tasks)
    assert sum(r.stored for r in results) == 1000
    assert (await fetch(pg, "SELECT count(*) FROM collector_span"))[0][0] == 1000
    with pytest.raises(StorageUnavailable):
        await w.submit(batches[0])


async def test_an_unreachable_database_answers_storage_unavailable(project):
    w = Writer(
        "host=127.0.0.1 port=1 user=postgres dbname=none connect_timeout=1", linger=0, hold=1
    )
    await w.start()
    try:
        assert await w.ready() is False
        started = time.monotonic()
        with pytest.raises(StorageUnavailable) as info:
            await w.submit(Batch(project.id, "traces", spans=[span(project.id, 1, 1)]))
        assert info.value.status == 503 and info.value.retry_after > 0
        # The batch waited for the database as long as the writer holds batches, no longer.
        assert 1 <= time.monotonic() - started < 5
    finally:
        await w.stop()


async def test_ready_is_true_with_a_database(writer):
    assert await writer.ready() is True


# ---- lanes: concurrent transactions ------------------------------------------------------


@pytest.fixture
async def lanes(telemetry_db):
    # One batch per transaction and four transactions at once: a producer and
    # its consumer, queued side by side, are written by two lanes together.
    w = Writer(conninfo(), linger=0, lanes=4, group_items=1)
    await w.start()
    yield w
    await w.stop()


async def test_producers_and_consumers_written_at_once_by_two_lanes_are_joined_once(
    lanes, pg, project
):
    pid, pairs = project.id, 60
    batches = []
    for n in range(1, pairs + 1):
        batches.append(Batch(pid, "traces", stages=[publish(pid, 100 + n, 1000 + n)]))
        consumer = consume(pid, 100 + n, 2000 + n, [(100 + n, 1000 + n)], at=50)
        batches.append(Batch(pid, "traces", stages=[consumer]))
    results = await asyncio.gather(*(lanes.submit(b) for b in batches))
    assert sum(r.stored for r in results) == 2 * pairs
    consumed = await edge(pg, "consume")
    assert consumed["count"] == pairs
    assert consumed["e2e_count"] == pairs
    assert consumed["e2e_hist"][histogram.bucket(50)] == pairs
    rows = await fetch(
        pg, "SELECT e2e_ms, count(*) FROM collector_stage WHERE role = 'consumer' GROUP BY 1"
    )
    assert rows == [(50.0, pairs)]


async def test_client_and_server_spans_written_at_once_by_two_lanes_are_one_call(
    lanes, pg, project
):
    pid, pairs = project.id, 60
    batches = []
    for n in range(1, pairs + 1):
        batches.append(
            Batch(pid, "traces", spans=[span(pid, n, 1, kind=KIND_CLIENT, service="web")])
        )
        server = span(pid, n, 2, parent=1, kind=KIND_SERVER, service="api")
        batches.append(Batch(pid, "traces", spans=[server]))
    await asyncio.gather(*(lanes.submit(b) for b in batches))
    call = await edge(pg, "call")
    assert (call["source"], call["target"], call["count"]) == ("service:web", "service:api", pairs)


async def test_a_transaction_cancelled_to_break_a_deadlock_is_tried_again(
    writer, pg, project, monkeypatch
):
    from collector import writer as writer_module

    run = writer_module._Transaction.run
    calls = []

    async def deadlocked_once(self):
        calls.append(1)
        if len(calls) == 1:
            await self.cur.execute("SELECT 1")  # some of the work was done
            raise psycopg.errors.DeadlockDetected("deadlock detected")
        await run(self)

    monkeypatch.setattr(writer_module._Transaction, "run", deadlocked_once)
    result = await writer.submit(messaging_batch(project.id))
    assert len(calls) == 2
    assert result.stored == 13 and result.duplicates == 0
    assert (await edge(pg, "publish"))["count"] == 3
    # Nothing waits on the failed attempt's write lock.
    await asyncio.wait_for(writer.make_way(), 1)


async def test_decoding_waits_while_a_lane_holds_the_write_lock(writer):
    writer.hold_the_road()
    waiting = asyncio.create_task(writer.make_way())
    await asyncio.sleep(0.05)
    assert not waiting.done()
    writer.clear_the_road()
    await asyncio.wait_for(waiting, 1)


async def test_a_fresh_day_partition_gets_planner_statistics_from_the_writer(writer, pg, project):
    day = dt.datetime.now(dt.UTC).date() - dt.timedelta(days=2)
    name = f"collector_stage_p{day:%Y%m%d}"

    async def analysed():
        rows = await fetch(
            pg, "SELECT analyze_count FROM pg_stat_user_tables WHERE relname = %s", name
        )
        return rows[0][0] if rows else 0

    before = await analysed()
    known = await fetch(pg, "SELECT attname FROM pg_stats WHERE tablename = %s", name)
    assert not known, "the partition has statistics before the test"
    at = int(dt.datetime.combine(day, dt.time(12), dt.UTC).timestamp()) * 10**9
    stages = []
    for n in range(1200):
        stage = publish(project.id, 5000 + n, 7000 + n)
        stage.time_ns = at + n * MS
        stages.append(stage)
    await writer.submit(Batch(project.id, "traces", stages=stages))
    deadline = time.monotonic() + 15
    while await analysed() <= before:
        assert time.monotonic() < deadline, "the partition was not analysed"
        await asyncio.sleep(0.2)
    stats = await fetch(
        pg, "SELECT attname FROM pg_stats WHERE tablename = %s ORDER BY attname", name
    )
    assert {"project_id", "trace_id", "span_id", "time"} <= {a for (a,) in stats}


async def test_an_answered_batch_is_freed_by_reference_counting(writer, project):
    class Tracked(Batch):
        pass  # without slots, so it can be weakly referenced

    gc.disable()
    try:
        batch = Tracked(project.id, "traces")
        source = messaging_batch(project.id)
        batch.spans, batch.stages = source.spans, source.stages
        ref = weakref.ref(batch)
        await writer.submit(batch)
        del batch, source
        # The writer's prepared rows refer back to their request; letting go of
        # them when answered keeps memory bounded without a full collection.
        assert ref() is None
    finally:
        gc.enable()


async def test_a_consumer_finds_a_publish_another_writer_committed(writer, pg, project):
    # The writer remembers the publishes it committed itself; one stored by
    # another collector is looked up in the database.
    other = Writer(conninfo(), linger=0)
    await other.start()
    try:
        await other.submit(Batch(project.id, "traces", stages=[publish(project.id, 9, 90)]))
    finally:
        await other.stop()
    consumer = consume(project.id, 9, 91, [(9, 90)], at=75)
    await writer.submit(Batch(project.id, "traces", stages=[consumer]))
    assert (await edge(pg, "consume"))["e2e_count"] == 1
    assert await fetch(pg, "SELECT e2e_ms FROM collector_stage WHERE role = 'consumer'") == [
        (75.0,)
    ]


async def test_a_publish_committed_while_its_consumer_loads_is_joined_without_an_update(
    writer, pg, project, monkeypatch
):
    # The consumer's transaction looks for its publish, finds none, and
    # another collector commits the publish before this one takes the write
    # lock. The consumer waits for the lock, finds the publish then, and is
    # stored once with its latency: its row is not written twice.
    from collector.writer import joins, transaction

    other = Writer(conninfo(), linger=0)
    await other.start()
    lookup = joins._EndToEnd._stored_publishes
    looked = []

    async def then_published_elsewhere(self, consumers):
        found = await lookup(self, consumers)
        looked.append(len(found))
        if len(looked) == 1:
            await other.submit(Batch(project.id, "traces", stages=[publish(project.id, 8, 80)]))
        return found

    updates = []
    set_e2e = joins._EndToEnd._set_e2e

    async def counted(self, keyed):
        updates.append(len(keyed))
        return await set_e2e(self, keyed)

    monkeypatch.setattr(transaction._Transaction, "_stored_publishes", then_published_elsewhere)
    monkeypatch.setattr(transaction._Transaction, "_set_e2e", counted)
    try:
        consumer = consume(project.id, 8, 81, [(8, 80)], at=40)
        result = await writer.submit(Batch(project.id, "traces", stages=[consumer]))
    finally:
        await other.stop()
    assert looked == [0, 1] and updates == []
    assert result.stored == 1
    assert (await edge(pg, "consume"))["e2e_count"] == 1
    assert await fetch(pg, "SELECT e2e_ms FROM collector_stage WHERE role = 'consumer'") == [
        (40.0,)
    ]


def test_the_writer_forgets_its_oldest_publishes_past_its_limit():
    from collector.writer import _RecentPublishes

    recent = _RecentPublishes(2)
    recent.add([publish(1, n, 10 + n) for n in (1, 2, 3)])
    assert recent.publish_time(consume(1, 1, 20, [(1, 11)], at=5)) is None
    assert recent.publish_time(consume(1, 3, 20, [(3, 13)], at=5)) == BASE_NS
    # A batch receive is settled here only when every message's publish is known.
    assert recent.publish_time(consume(1, 3, 20, [(3, 13), (1, 11)], at=5)) is None


async def test_a_log_record_stamped_on_receipt_is_stored_once_when_retried(writer, pg, project):
    def timeless(received_ns):
        return LogRow(
            project.id, received_ns, "payments", 17, "ERROR", "card declined",
            time_from_record=False,
        )  # fmt: skip

    first = await writer.submit(Batch(project.id, "logs", logs=[timeless(BASE_NS)]))
    retry = await writer.submit(Batch(project.id, "logs", logs=[timeless(BASE_NS + 5_000 * MS)]))
    assert (first.stored, retry.stored, retry.duplicates) == (1, 0, 1)
    # Two deliveries waiting in one transaction are one record too.
    results = await asyncio.gather(
        writer.submit(Batch(project.id, "logs", logs=[timeless(BASE_NS + 7_000 * MS)])),
        writer.submit(Batch(project.id, "logs", logs=[timeless(BASE_NS + 9_000 * MS)])),
    )
    assert sum(r.stored for r in results) == 0
    # A record with a time of its own is still told apart by it.
    timed = LogRow(project.id, BASE_NS + 11_000 * MS, "payments", 17, "ERROR", "card declined")
    assert (await writer.submit(Batch(project.id, "logs", logs=[timed]))).stored == 1
    rows = await fetch(pg, "SELECT count(*) FROM collector_log WHERE project_id = %s", project.id)
    assert rows == [(2,)]


async def test_a_late_publish_gives_latency_only_to_consumers_within_the_window(
    writer, pg, project
):
    # The same day's window either way: a consumer stored two days before its
    # publish (a broken clock) is not joined to it, as a publish two days
    # before a consumer is not looked for.
    far = consume(project.id, 12, 121, [(12, 120)], at=0)
    far.time_ns -= 2 * 86_400 * 10**9
    near = consume(project.id, 12, 122, [(12, 120)], at=40)
    await writer.submit(Batch(project.id, "traces", stages=[far, near]))
    await writer.submit(Batch(project.id, "traces", stages=[publish(project.id, 12, 120)]))
    rows = await fetch(
        pg, "SELECT e2e_ms FROM collector_stage WHERE role = 'consumer' ORDER BY time"
    )
    assert rows == [(None,), (40.0,)]


async def test_a_publish_probes_only_the_consumers_that_wait_for_one(writer, pg, project):
    # Consumers stored with their latency, one waiting for its publish, and
    # one that continues no producer's context (it can never be joined).
    await writer.submit(Batch(project.id, "traces", stages=[publish(project.id, 30, 300)]))
    joined = consume(project.id, 30, 301, [(30, 300)], at=20)
    waiting = consume(project.id, 31, 311, [(31, 310)], at=50)
    loose = consume(project.id, 32, 321, [], at=10)
    await writer.submit(Batch(project.id, "traces", stages=[joined, waiting, loose]))

    index = "SELECT count(*) FROM collector_stage WHERE " + UNSETTLED
    explained = await fetch(pg, "EXPLAIN (FORMAT JSON) " + index)
    assert await _indexes(pg, explained[0][0]) == {"collector_stage_unsettled"}
    assert (await fetch(pg, index)) == [(1,)]

    # The writer's probe, planned as its session plans it, reads that index alone.
    async with await psycopg.AsyncConnection.connect(
        conninfo(), options=WRITER_OPTIONS, autocommit=True
    ) as session:
        cur = await session.execute(
            "EXPLAIN (FORMAT JSON) " + WAITING_CONSUMERS,
            (
                [project.id, project.id],
                [tid(30), tid(31)],
                dt.datetime.now(dt.UTC) - dt.timedelta(days=1),
                dt.datetime.now(dt.UTC) + dt.timedelta(days=1),
            ),
        )
        plan = (await cur.fetchone())[0]
    assert await _indexes(pg, plan) == {"collector_stage_unsettled"}

    # Its publish arrives: the consumer gets its latency and leaves the index.
    await writer.submit(Batch(project.id, "traces", stages=[publish(project.id, 31, 310)]))
    assert (await fetch(pg, index)) == [(0,)]
    assert (await edge(pg, "consume"))["e2e_count"] == 2


UNSETTLED = "role = 'consumer' AND e2e_ms IS NULL AND linked_trace_ids IS NOT NULL"


async def _indexes(pg, plan) -> set[str]:
    """The indexes of collector_stage a JSON plan reads, by the names of the
    table's own indexes (a partition's copy of an index has a name of its own)."""
    found, todo = set(), [plan]
    while todo:
        node = todo.pop()
        if isinstance(node, list):
            todo.extend(node)
        elif isinstance(node, dict):
            if "Index Name" in node:
                found.add(node["Index Name"])
            todo.extend(node.values())
    rows = await fetch(
        pg,
        "SELECT coalesce(p.relname, c.relname) FROM pg_class c "
        "LEFT JOIN pg_inherits i ON i.inhrelid = c.oid LEFT JOIN pg_class p ON p.oid = i.inhparent "
        "WHERE c.relname = ANY(%s)",
        sorted(found),
    )
    return {name for (name,) in rows}


async def test_a_lane_waits_for_requests_on_their_way_and_only_for_those(telemetry_db, pg, project):
    writer = Writer(conninfo(), linger=1.0)
    await writer.start()
    try:
        # Nothing else is being read or decoded: the batch is written at once.
        started = time.monotonic()
        await writer.submit(Batch(project.id, "traces", spans=[span(project.id, 70, 1)]))
        assert time.monotonic() - started < 0.5

        # Two requests hold their reservations, as the receivers take them; one
        # is submitted, the other on its way (being read or decoded): the lane
        # lingers for it, and both are stored by one transaction.
        submitted, coming = writer.admission.reservation(), writer.admission.reservation()
        first = asyncio.create_task(
            writer.submit(Batch(project.id, "traces", spans=[span(project.id, 71, 1)]))
        )
        await asyncio.sleep(0.1)
        assert not first.done()
        second = writer.submit(Batch(project.id, "traces", spans=[span(project.id, 72, 1)]))
        await asyncio.gather(first, second)
        submitted.release()
        coming.release()
    finally:
        await writer.stop()
    transactions = await fetch(
        pg,
        "SELECT count(DISTINCT xmin::text) FROM collector_span WHERE trace_id = ANY(%s)",
        [tid(71), tid(72)],
    )
    assert transactions == [(1,)]
