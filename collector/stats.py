"""The collector's own metrics, served as Prometheus text on GET /metrics.

Counters are per `signal` (traces, metrics, logs, events):
- received: items that arrived in a decodable request
- accepted: items stored (committed)
- rejected: items refused as invalid (reported in partial_success / 202 body)
- dropped: items not stored because the writer was saturated or the
  database unavailable (the client was told to retry)
Plus the writer's queue depth, the request bytes in flight, a histogram of
batch write durations, and what the attribute limits cut
(collector.attribute_limits), by `limit`: `count` for attributes (and
array/map elements) not kept, `length` for values cut short; and the
protobuf trace requests that the compiled reader handed to upb
(collector.normalize.wire): malformed or unusual ones, which upb then
accepted or refused.

Under `collector --processes N` the parent names a fresh directory in
PROMETHEUS_MULTIPROC_DIR (MULTIPROC_ENV) before it starts the children:
each child keeps its values in memory-mapped files there (prometheus_client's
multiprocess mode), and whichever child a scrape reaches answers with the
sum over all of them. Counters of a child that exited stay in the sum, so a
restart never sets a total back; its gauges leave it (`mark_dead`). Without
that variable the values live in this process alone.
"""

import os

import prometheus_client
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client import multiprocess as _multiprocess

SIGNALS = ("traces", "metrics", "logs", "events")
WRITE_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

# No `_created` series: the families stay what they have always been.
prometheus_client.disable_created_metrics()

_registry = CollectorRegistry(auto_describe=False)
_KINDS = ("received", "accepted", "rejected", "dropped")
_families = {
    kind: Counter(
        f"eventscope_{kind}_items",
        f"Telemetry items {kind}, by signal.",
        ["signal"],
        registry=_registry,
    )
    for kind in _KINDS
}
_refused_family = Counter(
    "eventscope_refused_requests",
    "Requests answered 429/503 before their body was decoded.",
    ["signal"],
    registry=_registry,
)
_cut_family = Counter(
    "eventscope_truncated_attributes",
    "Attributes cut by the attribute limits, by signal and limit "
    "(count: not kept, length: value cut short).",
    ["signal", "limit"],
    registry=_registry,
)
_wire_fallbacks = Counter(
    "eventscope_wire_fallbacks",
    "Protobuf trace requests the compiled reader handed to the upb parser "
    "(malformed or unusual wire data).",
    registry=_registry,
)
# `livesum`: the children's values added up, of the children alive.
_queue_depth = Gauge(
    "eventscope_queue_depth",
    "Items waiting in the writer's queue.",
    registry=_registry,
    multiprocess_mode="livesum",
)
_ingest_bytes = Gauge(
    "eventscope_ingest_bytes",
    "Request bytes (after decompression) being decoded or waiting to be stored.",
    registry=_registry,
    multiprocess_mode="livesum",
)
_writes = Histogram(
    "eventscope_write_seconds",
    "Time to write and commit one batch.",
    buckets=WRITE_BUCKETS,
    registry=_registry,
)

# The labelled children, made once: every series is there from the start
# (at 0), and an increment on the hot path is one dict lookup and one add.
_counters = {kind: {s: _families[kind].labels(s) for s in SIGNALS} for kind in _KINDS}
_refused_requests = {s: _refused_family.labels(s) for s in SIGNALS}
_cut = {limit: {s: _cut_family.labels(s, limit) for s in SIGNALS} for limit in ("count", "length")}


def count(kind: str, signal: str, n: int) -> None:
    """Add `n` to counter `kind` (received|accepted|rejected|dropped) for `signal`."""
    if n:
        _counters[kind][signal].inc(n)


def refuse_request(signal: str) -> None:
    """A request turned away (429/503) before its body was decoded, so its items are unknown."""
    _refused_requests[signal].inc()


def count_cut(signal: str, dropped: int, truncated: int) -> None:
    """Attributes dropped past the count limit and values cut to the length limit."""
    if dropped:
        _cut["count"][signal].inc(dropped)
    if truncated:
        _cut["length"][signal].inc(truncated)


def count_wire_fallback() -> None:
    """A protobuf trace request went to upb instead of the compiled reader."""
    _wire_fallbacks.inc()


def set_queue_depth(items: int) -> None:
    _queue_depth.set(items)


def set_ingest_bytes(size: int) -> None:
    _ingest_bytes.set(size)


def observe_write(seconds: float) -> None:
    _writes.observe(seconds)


def _int(child) -> int:
    return int(child._value.get())


def snapshot() -> dict:
    """This process's current values, for tests and the benchmark."""
    return {
        **{kind: {s: _int(c) for s, c in values.items()} for kind, values in _counters.items()},
        "refused_requests": {s: _int(c) for s, c in _refused_requests.items()},
        "truncated_attributes": {
            limit: {s: _int(c) for s, c in values.items()} for limit, values in _cut.items()
        },
        "wire_fallbacks": _int(_wire_fallbacks),
        "queue_depth": _int(_queue_depth),
        "ingest_bytes": _int(_ingest_bytes),
        "writes": sum(int(b.get()) for b in _writes._buckets),
    }


def render() -> str:
    """Prometheus text exposition format 0.0.4: of every collector process
    sharing MULTIPROC_ENV's directory when it is set, else of this one."""
    if os.environ.get(MULTIPROC_ENV):
        registry = CollectorRegistry(auto_describe=False)
        _multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry).decode()
    return generate_latest(_registry).decode()


def mark_dead(pid: int, path: str) -> None:
    """In the parent of `collector --processes`: the child `pid` exited, so its
    gauges leave the sums in `path` (its counters stay in them)."""
    _multiprocess.mark_process_dead(pid, path)
