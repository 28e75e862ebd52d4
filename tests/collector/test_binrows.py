"""The compiled COPY encoder (collector/writer/binrows.pyx) stores exactly what
psycopg's formatting of the writer's value tuples stores, and the writer still
works, with one warning, where it is not built."""

import datetime as dt
import os
import subprocess
import sys
import time
from pathlib import Path

import psycopg
import pytest

from collector import rollups
from collector.batch import (
    CONSUMER,
    ORIGIN_CLOUDEVENT,
    PRODUCER,
    Batch,
    EnvelopeRow,
    LogRow,
    SpanRow,
    StageRow,
)
from collector.db import conninfo
from collector.writer import ENVELOPES, LOGS, SPANS, STAGES, Writer, items, rows
from collector.writer.prepare import _Pending, _prepare, _window

ROOT = Path(__file__).resolve().parents[2]
NOW_NS = time.time_ns()
EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


def awkward_spans() -> list[SpanRow]:
    shared = {"service.name": "örders ✓", "host": "n-7", "n": 2**70}  # orjson refuses 2**70
    out = []
    for n, (start_ns, duration_ns, attributes, events, links) in enumerate(
        [
            (NOW_NS, 0, {}, [], []),
            (NOW_NS + 999, 2**63 - 1, {"big": 2**64 + 1, "f": 0.1, "nested": {"a": [1, None]}},
             [{"name": "exception", "attributes": {"exception.type": "E"}}],
             [{"trace_id": "ab" * 16, "span_id": "cd" * 8, "attributes": {}}]),
            (NOW_NS - 1, 1, {"emoji": "🚀 \u0301e", "empty": "", "neg": -(2**63)}, [], []),
            (946_684_800 * 10**9 - 1_500, 5, {"x": "y" * 300_000}, [], []),  # before 2000
        ]
    ):  # fmt: skip
        out.append(
            SpanRow(
                project_id=2**31 - 1 - n,
                trace_id=bytes([n]) * 16,
                span_id=bytes([n + 1]) * 8,
                parent_span_id=None if n % 2 else bytearray(b"\x00" * 8),
                start_time_ns=start_ns,
                duration_ns=duration_ns,
                service="" if n == 2 else f"svc-{n} ünïcode",
                name="GET /ä/{id}" * (n + 1),
                kind=n,
                status_code=n % 3,
                status_message=None if n != 1 else "déjà vu\nline 2",
                attributes=attributes,
                resource=shared if n != 3 else {},
                events=events,
                links=links,
                scope=None if n == 0 else "io.opentelemetry.ä",
            )
        )
    return out


def awkward_stages() -> list[StageRow]:
    t = bytes(range(16))
    return [
        StageRow(
            project_id=1, time_ns=NOW_NS + 1, stage="published", role=PRODUCER, service="o",
            trace_id=t, span_id=b"\x01" * 8, duration_ms=None,
        ),
        StageRow(
            project_id=1, time_ns=NOW_NS + 1_999, stage="processed", role=CONSUMER,
            service="påyments", system="kafka", channel="orders ✓", consumer_group="g",
            trace_id=t, span_id=b"\x02" * 8, parent_span_id=b"\x03" * 8,
            linked=[(t, b"\x01" * 8)], event_id="m-1", error="boom\x7f", duration_ms=30,
        ),
        StageRow(
            project_id=2**31 - 1, time_ns=946_684_800 * 10**9 - 1, stage="failed",
            role=CONSUMER, service="", channel="", linked=[(t, b"\x01" * 8), (b"", b""),
            (b"\xff" * 16, b"\xfe" * 8)], event_id="", event_source="/src", event_type="T",
            duration_ms=1e300, origin=ORIGIN_CLOUDEVENT,
        ),
        StageRow(
            project_id=3, time_ns=NOW_NS, stage="retried", role=CONSUMER, service="s",
            duration_ms=-0.0, error="x" * 200_000,
        ),
    ]  # fmt: skip


def awkward_envelopes() -> list[EnvelopeRow]:
    return [
        EnvelopeRow(
            project_id=1, time_ns=NOW_NS + 7, source="/shop", event_id="e-1", type="T",
            data={"huge": 2**70, "text": "naïve ✓"}, data_size=40, truncated=True,
            trace_id=b"\x09" * 16, extensions={"ext": 1},
        ),
        EnvelopeRow(
            project_id=1, time_ns=NOW_NS, source="/shop", event_id="e-2", type="T",
            subject="s", datacontenttype="text/plain", dataschema="x", data_text="aGk=",
            data_base64=True, data_size=2**31 - 1,
        ),
    ]  # fmt: skip


def awkward_logs() -> list[LogRow]:
    return [
        LogRow(project_id=1, time_ns=NOW_NS, service="s", severity_number=-32768, body="ü"),
        LogRow(
            project_id=1, time_ns=NOW_NS + 1, service="", severity_number=32767,
            severity_text="FATAL", trace_id=b"\x01" * 16, span_id=b"\x02" * 8,
            attributes={"a": [1, 2.5, "x"]},
        ),
    ]  # fmt: skip


def psycopg_values(table, row, key=None, e2e=None) -> tuple:
    """The pure-Python path's tuple for a row (what psycopg formats)."""
    if table is SPANS:
        return rows.span_values(row, {})
    if table is STAGES:
        return rows.stage_values(row, key, e2e)
    if table is ENVELOPES:
        return rows.envelope_values(row)
    return rows.log_values(row, key)


def compiled_items(table, source, e2e) -> list:
    if table is SPANS:
        return items.binrows.span_items(source, None, {})
    if table is STAGES:
        out = items.binrows.stage_items(source, items.binrows.stage_keys(source), None)
        for item, latency in zip(out, e2e, strict=True):
            item.e2e = latency
        return out
    if table is ENVELOPES:
        return [items.envelope_item(row, None) for row in source]
    return [items.log_item(row, None, row.dedupe_key()) for row in source]


def test_the_compiled_encoder_is_built_and_used_in_this_checkout(telemetry_db):
    assert items.COMPILED, "collector/writer/binrows.pyx is not built: run make install"
    batch = Batch(1, "traces", spans=awkward_spans()[:3], stages=awkward_stages()[:2])
    pending = _Pending(batch, None)
    _prepare(pending, *_window())
    assert {type(i) for i in pending.spans + pending.stages} == {items.binrows.Item}
    assert all(type(i.values) is bytes for i in pending.spans + pending.stages)
    assert [i.key for i in pending.stages] == [s.dedupe_key() for s in batch.stages]


@pytest.mark.parametrize("table", [SPANS, STAGES, ENVELOPES, LOGS], ids=lambda t: t.name)
async def test_awkward_rows_are_stored_alike_by_both_encoders(telemetry_db, table):
    source = {
        SPANS.name: awkward_spans,
        STAGES.name: awkward_stages,
        ENVELOPES.name: awkward_envelopes,
        LOGS.name: awkward_logs,
    }[table.name]()
    e2e = [None, 12.5, 0.0, None][: len(source)]
    keys = [getattr(row, "dedupe_key", lambda: None)() for row in source]
    # The compiled path, written as the writer writes it, in blocks: here of
    # one row each (a block ends once it holds `limit` bytes).
    encoded = compiled_items(table, source, e2e)
    blocks, start = [], 0
    while True:
        block, start = items.binrows.copy_block(encoded, start, table is STAGES, 1)
        blocks.append(block)
        if start >= len(encoded):
            break
    assert len(blocks) == len(source)
    async with await psycopg.AsyncConnection.connect(conninfo()) as conn:
        rows.configure_copy(conn)
        cur = conn.cursor()
        for name in ("es_a", "es_b"):
            await cur.execute(f"CREATE TEMP TABLE {name} (LIKE {table.name})")
        async with cur.copy(f"COPY es_a ({table.column_list}) FROM STDIN (FORMAT BINARY)") as copy:
            for block in blocks:
                await copy.write(block)
        async with cur.copy(f"COPY es_b ({table.column_list}) FROM STDIN (FORMAT BINARY)") as copy:
            copy.set_types(table.copy_types)
            for row, key, latency in zip(source, keys, e2e, strict=True):
                await copy.write_row(psycopg_values(table, row, key, latency))
        stored = {}
        for name in ("es_a", "es_b"):
            await cur.execute(f"SELECT {table.column_list} FROM {name} ORDER BY ctid")
            stored[name] = await cur.fetchall()
    compiled, reference = stored["es_a"], stored["es_b"]
    assert len(compiled) == len(reference) == len(source)
    for n, (got, expected) in enumerate(zip(compiled, reference, strict=True)):
        for column, a, b in zip(table.columns, got, expected, strict=True):
            assert a == b and type(a) is type(b), (n, column, a, b)
    # And what was stored is what the rows say, whichever the path.
    if table is SPANS:
        first = dict(zip(table.columns, compiled[1], strict=True))
        assert first["start_time"] == EPOCH + dt.timedelta(microseconds=(NOW_NS + 999) // 1000)
        assert first["duration_ns"] == 2**63 - 1
        assert first["attributes"]["big"] == 2**64 + 1
        assert first["resource"]["n"] == 2**70
        before_2000 = dict(zip(table.columns, compiled[3], strict=True))
        assert before_2000["start_time"] == dt.datetime(1999, 12, 31, 23, 59, 59, 999998, dt.UTC)
        assert before_2000["resource"] is None and before_2000["events"] is None
        assert [r[0] for r in compiled] == [2**31 - 1 - n for n in range(4)]
    if table is STAGES:
        by = [dict(zip(table.columns, r, strict=True)) for r in compiled]
        assert [r["e2e_ms"] for r in by] == e2e
        assert by[2]["linked_span_ids"] == [b"\x01" * 8, b"", b"\xfe" * 8]
        assert by[0]["linked_trace_ids"] is None and by[1]["duration_ms"] == 30.0
        assert by[2]["duration_ms"] == 1e300 and by[2]["origin"] == ORIGIN_CLOUDEVENT
    if table is ENVELOPES:
        assert compiled[0][table.columns.index("data")] == {"huge": 2**70, "text": "naïve ✓"}
        assert compiled[1][table.columns.index("data_base64")] is True


async def test_array_parameters_arrive_as_the_values_given(telemetry_db):
    # The writer's array parameters (keys, names, rollup columns) are encoded
    # by the compiled encoder; PostgreSQL reads back exactly what was given.
    columns = (
        (items.int4_array, "int", [1, -2, 2**31 - 1, None]),
        (items.int8_array, "bigint", [0, -(2**63), 2**63 - 1, None]),
        (items.float8_array, "float8", [0.1, -1e300, 12.5, None]),
        (items.text_array, "text", ["", "é ü", "x" * 300, None]),
        (items.bytea_array, "bytea", [b"", bytes(range(256)), b"\x00", None]),
        (items.int8_array, "bigint", []),
    )
    async with await psycopg.AsyncConnection.connect(conninfo()) as conn:
        items.configure_connection(conn)
        for encode, kind, values in columns:
            cur = await conn.execute(f"SELECT %b::{kind}[]", (encode(list(values)),))
            assert (await cur.fetchone())[0] == values, kind


def test_rows_that_postgresql_cannot_hold_get_a_clear_error():
    bad = awkward_spans()[0]
    bad.kind = 2**15
    with pytest.raises(OverflowError, match="out of range for int2"):
        items.binrows.span_row(bad)
    bad = awkward_stages()[0]
    bad.service = b"bytes"
    with pytest.raises(TypeError, match="text column got bytes"):
        items.binrows.stage_row(bad, b"k")


FALLBACK = """
import asyncio, logging, sys
sys.modules["collector.writer.binrows"] = None  # as in a checkout where it is not built
import django
django.setup()
from collector.batch import Batch, SpanRow, StageRow
from collector.writer import Writer, items

logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s %(message)s")
conninfo, project_id, now = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])

async def main():
    assert not items.COMPILED
    for attempt in range(2):  # two writers in one process: one warning
        writer = Writer(conninfo, linger=0)
        await writer.start()
        spans = [SpanRow(project_id, bytes([attempt]) * 16, bytes([n + 1]) * 8, None,
                         now + n, 5, "svc", "op", 4, 0, None, {"k": "v"}, {"r": 1})
                 for n in range(3)]
        stages = [StageRow(project_id, now + n, "published", "producer", "svc", "kafka",
                           "orders", "", spans[n].trace_id, spans[n].span_id) for n in range(3)]
        result = await writer.submit(Batch(project_id, "traces", spans=spans, stages=stages))
        again = await writer.submit(Batch(project_id, "traces", spans=spans, stages=stages))
        await writer.stop()
        print("stored", result.stored, "duplicates", again.duplicates, flush=True)

asyncio.run(main())
"""


def test_without_the_compiled_encoder_the_writer_stores_the_same_and_warns_once(
    telemetry_db, project
):
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "dashboard.settings", "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-c", FALLBACK, conninfo(), str(project.id), str(time.time_ns())],
        env=env, cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.split("\n")[:2] == ["stored 6 duplicates 6"] * 2
    warnings = [line for line in done.stderr.splitlines() if "compiled COPY encoder" in line]
    assert len(warnings) == 1, done.stderr
    with psycopg.connect(conninfo()) as conn:
        count = conn.execute(
            "SELECT count(*) FROM collector_span WHERE project_id = %s", (project.id,)
        ).fetchone()[0]
    assert count == 6


def test_flow_rollups_of_new_stages_are_the_python_sums():
    def stage(name, role, *, at_s=0, ms=None, channel="orders", group="", project=1):
        return StageRow(
            project_id=project, time_ns=NOW_NS + at_s * 10**9, stage=name, role=role,
            service="svc", system="kafka", channel=channel, consumer_group=group,
            duration_ms=ms,
        )  # fmt: skip

    stages = [
        stage("published", PRODUCER, ms=0.5),
        stage("published", PRODUCER, ms=1),  # an int duration, on a bucket's bound
        stage("failed", PRODUCER, ms=2.5, at_s=61),
        stage("retried", PRODUCER),  # not counted on a publish edge
        stage("received", CONSUMER, ms=3.0, group="g"),
        stage("processed", CONSUMER, ms=300_000.5, group="g"),
        stage("processed", CONSUMER, ms=-1.0, group="g", project=2),
        stage("failed", CONSUMER, ms=1e300, group="g"),
        stage("deadlettered", CONSUMER, group="g"),
        stage("retried", CONSUMER, ms=4.0, group="g"),
        stage("processed", CONSUMER, ms=5.0, channel=""),  # no edge, still a project
        stage("failed", CONSUMER, channel=""),  # no edge, still a failure
    ]
    compiled, python = rollups.Rollups(), rollups.Rollups()
    failed, projects = items.binrows.add_stages(
        compiled, [items.Item(s, None, None, s.time_ns, b"") for s in stages]
    )
    for s in stages:
        python.add_stage(s)
    assert compiled.params() == python.params()
    assert failed == [s for s in stages if s.stage in rollups.ERRORS]
    assert projects == {1, 2}
    by_edge = {(p[0], p[4], p[1]): p for p in compiled.params()}
    minute = rollups.minute_of(NOW_NS)
    publish = by_edge[(1, "publish", minute)]
    assert publish[6:9] == (2, 0, 0) and publish[11][:2] == [2, 0]  # both up to 1 ms
    consume = by_edge[(1, "consume", minute)]
    # count, received, errors, dead letters, retries; a duration above 300 s
    assert consume[6:11] == (3, 1, 2, 1, 1) and consume[11][-1] == 2


def test_end_to_end_latencies_are_counted_as_the_python_sums():
    def stage(name, *, role=CONSUMER, at_s=0, channel="orders", group="g"):
        return StageRow(
            project_id=1, time_ns=NOW_NS + at_s * 10**9, stage=name, role=role,
            service="svc", system="kafka", channel=channel, consumer_group=group,
        )  # fmt: skip

    stages = [
        stage("processed"),
        stage("processed", at_s=61),
        stage("failed", group=""),
        stage("deadlettered"),
        stage("received"),  # not an outcome: no latency counted
        stage("processed", channel=""),  # no edge
        stage("published", role=PRODUCER),  # counted on its consume edge only if an outcome
        stage("processed"),  # no latency known
    ]
    latencies = [12.5, 0.0, 1e300, 3, 7.0, 9.0, 1.0, None]
    e2e = {id(s): ms for s, ms in zip(stages, latencies, strict=True) if ms is not None}
    compiled, python = rollups.Rollups(), rollups.Rollups()
    items.binrows.count_e2e(compiled, stages, e2e)
    for s in stages:  # what the writer did before, in Python
        latency = e2e.get(id(s))
        if latency is not None and s.stage in rollups.OUTCOMES:
            edge = python.edge_of(s, CONSUMER)
            if edge is not None:
                python.add_e2e(edge, s.time_ns, latency)
    assert compiled.params() == python.params()
    counted = {(p[1], p[5]): (p[13], p[14], p[15]) for p in compiled.params()}
    minute = rollups.minute_of(NOW_NS)
    hist, count, total = counted[(minute, "g")]
    assert (count, total, sum(hist)) == (2, 15.5, 2)  # 12.5 ms and 3 ms
    assert counted[(minute, "")][1:] == (1, 1e300)


async def test_a_time_beyond_64_bits_is_refused_and_the_rest_stored(telemetry_db, project):
    good_span, bad_span = awkward_spans()[:2]
    bad_span.start_time_ns = 2**70
    good_stage, bad_stage = awkward_stages()[:2]
    bad_stage.time_ns = 2**70
    for row in (good_span, bad_span, good_stage, bad_stage):
        row.project_id = project.id
    writer = Writer(conninfo(), linger=0)
    await writer.start()
    try:
        spans = await writer.submit(Batch(project.id, "traces", spans=[good_span, bad_span]))
        stages = await writer.submit(Batch(project.id, "traces", stages=[good_stage, bad_stage]))
    finally:
        await writer.stop()
    assert (spans.stored, spans.refused) == (1, 1)
    assert "more than a day in the future" in spans.reasons[0]
    assert stages.stored == 1  # a stage's refusal is counted with its span's
