"""The collector's own metrics, served as Prometheus text on GET /metrics.

Counters are per process and per `signal` (traces, metrics, logs, events):
- received: items that arrived in a decodable request
- accepted: items stored (committed)
- rejected: items refused as invalid (reported in partial_success / 202 body)
- dropped: items not stored because the writer was saturated or the
  database unavailable (the client was told to retry)
Plus the writer's queue depth, the request bytes in flight, a histogram of
batch write durations, and what the attribute limits cut
(collector.attribute_limits), by `limit`: `count` for attributes (and
array/map elements) not kept, `length` for values cut short.
"""

import threading

SIGNALS = ("traces", "metrics", "logs", "events")
WRITE_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

_lock = threading.Lock()
_counters = {
    name: dict.fromkeys(SIGNALS, 0) for name in ("received", "accepted", "rejected", "dropped")
}
_refused_requests = dict.fromkeys(SIGNALS, 0)
_cut = {"count": dict.fromkeys(SIGNALS, 0), "length": dict.fromkeys(SIGNALS, 0)}
_queue_depth = 0
_ingest_bytes = 0
_write_counts = [0] * (len(WRITE_BUCKETS) + 1)
_write_sum = 0.0


def count(kind: str, signal: str, n: int) -> None:
    """Add `n` to counter `kind` (received|accepted|rejected|dropped) for `signal`."""
    if n:
        with _lock:
            _counters[kind][signal] = _counters[kind].get(signal, 0) + n


def refuse_request(signal: str) -> None:
    """A request turned away (429/503) before its body was decoded, so its items are unknown."""
    with _lock:
        _refused_requests[signal] = _refused_requests.get(signal, 0) + 1


def count_cut(signal: str, dropped: int, truncated: int) -> None:
    """Attributes dropped past the count limit and values cut to the length limit."""
    with _lock:
        _cut["count"][signal] = _cut["count"].get(signal, 0) + dropped
        _cut["length"][signal] = _cut["length"].get(signal, 0) + truncated


def set_queue_depth(items: int) -> None:
    global _queue_depth
    _queue_depth = items


def set_ingest_bytes(size: int) -> None:
    global _ingest_bytes
    _ingest_bytes = size


def observe_write(seconds: float) -> None:
    global _write_sum
    with _lock:
        for i, bound in enumerate(WRITE_BUCKETS):
            if seconds <= bound:
                _write_counts[i] += 1
                break
        else:
            _write_counts[-1] += 1
        _write_sum += seconds


def snapshot() -> dict:
    """Current values, for tests and the benchmark."""
    with _lock:
        return {
            **{kind: dict(values) for kind, values in _counters.items()},
            "refused_requests": dict(_refused_requests),
            "truncated_attributes": {limit: dict(values) for limit, values in _cut.items()},
            "queue_depth": _queue_depth,
            "ingest_bytes": _ingest_bytes,
            "writes": sum(_write_counts),
        }


def render() -> str:
    """Prometheus text exposition format 0.0.4."""
    lines = []
    with _lock:
        for kind, values in _counters.items():
            name = f"eventscope_{kind}_items_total"
            lines.append(f"# HELP {name} Telemetry items {kind}, by signal.")
            lines.append(f"# TYPE {name} counter")
            for signal, value in values.items():
                lines.append(f'{name}{{signal="{signal}"}} {value}')
        name = "eventscope_refused_requests_total"
        lines.append(f"# HELP {name} Requests answered 429/503 before their body was decoded.")
        lines.append(f"# TYPE {name} counter")
        for signal, value in _refused_requests.items():
            lines.append(f'{name}{{signal="{signal}"}} {value}')
        name = "eventscope_truncated_attributes_total"
        lines.append(
            f"# HELP {name} Attributes cut by the attribute limits, by signal and limit "
            "(count: not kept, length: value cut short)."
        )
        lines.append(f"# TYPE {name} counter")
        for limit, values in _cut.items():
            for signal, value in values.items():
                lines.append(f'{name}{{signal="{signal}",limit="{limit}"}} {value}')
        lines.append("# HELP eventscope_queue_depth Items waiting in the writer's queue.")
        lines.append("# TYPE eventscope_queue_depth gauge")
        lines.append(f"eventscope_queue_depth {_queue_depth}")
        lines.append(
            "# HELP eventscope_ingest_bytes Request bytes (after decompression) being "
            "decoded or waiting to be stored."
        )
        lines.append("# TYPE eventscope_ingest_bytes gauge")
        lines.append(f"eventscope_ingest_bytes {_ingest_bytes}")
        lines.append("# HELP eventscope_write_seconds Time to write and commit one batch.")
        lines.append("# TYPE eventscope_write_seconds histogram")
        cumulative = 0
        for bound, n in zip(WRITE_BUCKETS, _write_counts, strict=False):
            cumulative += n
            lines.append(f'eventscope_write_seconds_bucket{{le="{bound}"}} {cumulative}')
        cumulative += _write_counts[-1]
        lines.append(f'eventscope_write_seconds_bucket{{le="+Inf"}} {cumulative}')
        lines.append(f"eventscope_write_seconds_sum {_write_sum}")
        lines.append(f"eventscope_write_seconds_count {cumulative}")
    return "\n".join(lines) + "\n"
