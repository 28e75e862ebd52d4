"""Fixed-bucket latency histograms, shared by the writer and every reader.

Rollups keep one count per bucket, so histograms from several minutes,
edges or collector processes add up element-wise, and percentiles over any
window come from the sum. The bounds never change once data is stored:
adding a bucket means a new column, not a new list here.
"""

import bisect

# Upper bounds in milliseconds; the last bucket is everything above 300 s.
BOUNDS_MS = (
    1, 2, 5, 10, 20, 50, 100, 200, 500,
    1_000, 2_000, 5_000, 10_000, 30_000, 60_000, 300_000,
)  # fmt: skip
SIZE = len(BOUNDS_MS) + 1


def empty() -> list[int]:
    return [0] * SIZE


def bucket(ms: float) -> int:
    """Index of the bucket holding a latency of `ms` milliseconds."""
    return bisect.bisect_left(BOUNDS_MS, ms)


def add(hist: list[int], other) -> list[int]:
    """Element-wise sum; tolerates a shorter or missing `other`."""
    for i, value in enumerate(other or ()):
        hist[i] += value or 0
    return hist


def percentile(hist, q: float) -> float | None:
    """The q-quantile (0..1) by linear interpolation inside its bucket, or None if empty."""
    total = sum(hist or ())
    if total == 0:
        return None
    rank = q * total
    seen = 0
    for i, count in enumerate(hist):
        if count == 0:
            continue
        if seen + count >= rank:
            lower = 0.0 if i == 0 else float(BOUNDS_MS[i - 1])
            if i >= len(BOUNDS_MS):
                return lower  # open-ended top bucket: report its floor
            upper = float(BOUNDS_MS[i])
            return lower + (upper - lower) * max(rank - seen, 0) / count
        seen += count
    return float(BOUNDS_MS[-1])
