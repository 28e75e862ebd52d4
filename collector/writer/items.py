"""Rows on their way in (`Item`), and the encoder that turns them into COPY data.

The compiled encoder (binrows.pyx, built by setup.py) writes each row in
PostgreSQL's binary COPY format once, when its batch is submitted, and a
table's rows go to COPY as a few large blocks. Without it (a checkout whose
compiled parts were not built) the rows are value tuples that psycopg
formats one by one (rows.span_values, ...): the same stored values, at about
twice the writer's instructions per span; the writer warns once at start.
"""

import collections
import logging
import operator

from psycopg import pq
from psycopg.adapt import Dumper

from collector import rollups
from collector.batch import CONSUMER
from collector.writer.rows import (
    ENVELOPES,
    LOGS,
    envelope_values,
    log_values,
    span_values,
    stage_values,
)

try:
    from collector.writer import binrows
except ImportError:  # not built: the pure-Python path below
    binrows = None

log = logging.getLogger(__name__)

COMPILED = binrows is not None
_warned = False


def warn_if_not_compiled() -> None:
    """Say once per process that the compiled encoder is missing."""
    global _warned
    if not COMPILED and not _warned:
        _warned = True
        log.warning(
            "the compiled COPY encoder (collector/writer/binrows.pyx) is not built: "
            "rows are encoded in Python, at about twice the CPU per span; "
            "build it with `make install` (or `pip install -e .`)"
        )


class _Item:
    """One row on its way in: the source object, its pending request, its
    dedupe key (stages, log records), its time and its COPY row."""

    __slots__ = ("row", "pending", "key", "time_ns", "values", "e2e")

    def __init__(self, row, pending, key, time_ns, values):
        self.row = row
        self.pending = pending
        self.key = key  # a stage's or log record's dedupe key
        self.time_ns = time_ns
        self.values = values  # the COPY row (a stage's with e2e_ms NULL)
        self.e2e = None  # a stage's e2e_ms, set in the transaction


_pending_of = operator.attrgetter("pending")


def _count_stored(items: list) -> None:
    # Counted per request rather than per row: most of a group's rows belong
    # to a handful of requests.
    for pending, count in collections.Counter(map(_pending_of, items)).items():
        pending.result.stored += count


if COMPILED:
    Item = binrows.Item
    span_items = binrows.span_items
    span_item = binrows.span_item
    stage_keys = binrows.stage_keys
    stage_items = binrows.stage_items
    stage_item = binrows.stage_item
    count_stored = binrows.count_stored
    span_bounds = binrows.span_bounds
    add_stages = binrows.add_stages
    count_e2e = binrows.count_e2e
    stage_bounds = binrows.stage_bounds
    _ENVELOPE_CODES = tuple(binrows.CODES[t] for t in ENVELOPES.copy_types)
    _LOG_CODES = tuple(binrows.CODES[t] for t in LOGS.copy_types)

    def envelope_item(env, pending):
        return binrows.values_item(
            env, pending, None, env.time_ns, envelope_values(env), _ENVELOPE_CODES
        )

    def log_item(record, pending, key):
        return binrows.values_item(
            record, pending, key, record.time_ns, log_values(record, key), _LOG_CODES
        )

else:
    Item = _Item
    count_stored = _count_stored

    def span_items(spans, pending, resources):
        return [_Item(s, pending, None, s.start_time_ns, span_values(s, resources)) for s in spans]

    def span_item(span, pending, resources):
        return _Item(span, pending, None, span.start_time_ns, span_values(span, resources))

    def stage_keys(stages):
        return [stage.dedupe_key() for stage in stages]

    def add_stages(flow, items):
        """Add each item's stage to the flow rollups `flow`; returns (the failed
        and dead-lettered stages, the stages' projects)."""
        add_stage, errors = flow.add_stage, rollups.ERRORS
        failed = []
        for item in items:
            stage = item.row
            add_stage(stage)
            if stage.stage in errors:
                failed.append(stage)
        return failed, {item.row.project_id for item in items}

    def count_e2e(flow, stages, e2e):
        """Add the end-to-end latency (`e2e`, by id of stage) of each consume
        outcome among `stages` to its consume edge in `flow`."""
        for stage in stages:
            latency = e2e.get(id(stage))
            if latency is not None and stage.stage in rollups.OUTCOMES:
                edge = flow.edge_of(stage, CONSUMER)
                if edge is not None:
                    flow.add_e2e(edge, stage.time_ns, latency)

    def span_bounds(spans):
        starts = [span.start_time_ns for span in spans]
        return min(starts), max(starts), {span.span_id for span in spans}

    def stage_bounds(stages, keys):
        times = [stage.time_ns for stage in stages]
        return min(times), max(times), set(keys)

    def stage_items(stages, keys, pending):
        return [
            _Item(s, pending, key, s.time_ns, stage_values(s, key, None))
            for s, key in zip(stages, keys, strict=True)
        ]

    def stage_item(stage, key, pending):
        return _Item(stage, pending, key, stage.time_ns, stage_values(stage, key, None))

    def envelope_item(env, pending):
        return _Item(env, pending, None, env.time_ns, envelope_values(env))

    def log_item(record, pending, key):
        return _Item(record, pending, key, record.time_ns, log_values(record, key))


# Array query parameters (ids, keys, names of a group's rows): psycopg dumps a
# list element by element in Python; the compiled encoder writes the binary
# array at once. The query casts the parameter (`%b::bytea[]`), which gives
# it its type. Without the encoder they stay lists.
if COMPILED:
    int4_array = binrows.int4_array
    int8_array = binrows.int8_array
    float8_array = binrows.float8_array
    bytea_array = binrows.bytea_array
    text_array = binrows.text_array

    class _EncodedArrayDumper(Dumper):
        format = pq.Format.BINARY  # oid 0: the type comes from the query's cast

        def dump(self, obj):
            return obj.data

else:

    def int4_array(values: list) -> list:
        return values

    int8_array = float8_array = bytea_array = text_array = int4_array


_ARRAYS = {
    "int4": int4_array,
    "int8": int8_array,
    "float8": float8_array,
    "bytea": bytea_array,
    "text": text_array,
}


def array_params(columns: list[tuple[str, list]]) -> list:
    """Query parameters for columns given as (element type, values)."""
    return [_ARRAYS[kind](values) for kind, values in columns]


def configure_connection(conn) -> None:
    """Let `conn` send the encoded array parameters."""
    if COMPILED:
        conn.adapters.register_dumper(binrows.EncodedArray, _EncodedArrayDumper)


async def copy_rows(copy, table, items: list, with_e2e: bool) -> None:
    """Write `items` to an open binary COPY of `table` (its copy_types columns);
    `with_e2e`: each stage's e2e_ms is its last column."""
    if COMPILED:
        # Whole blocks, COPY's header and trailer included: psycopg passes them on.
        start, count = 0, len(items)
        while True:
            block, start = binrows.copy_block(items, start, with_e2e)
            await copy.write(block)
            if start >= count:
                return
    copy.set_types(table.copy_types)
    # The formatter fills a buffer and hands it over when full; calling it
    # directly spares an awaited coroutine per row.
    formatter = copy.formatter
    for item in items:
        values = item.values
        if with_e2e and item.e2e != values[-1]:
            values = item.values = values[:-1] + (item.e2e,)
        if data := formatter.write_row(values):
            await copy.write(data)
