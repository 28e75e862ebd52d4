"""What one counter increment of collector.stats costs on the ingest path, in
one process (values in memory) and under `collector --processes N` (values
in memory-mapped files shared by the processes), next to a bare locked dict
add. Prints a Markdown table.

    python bench/metrics_cost.py
"""

import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
INCREMENTS = 200_000

_MEASURE = f"""
import time
from collector import stats
n = {INCREMENTS}
start = time.perf_counter()
for _ in range(n):
    stats.count("accepted", "traces", 3)
print((time.perf_counter() - start) / n * 1e9)
"""


def dict_add_ns() -> float:
    """A counter as a plain dict behind a lock."""
    lock = threading.Lock()
    counters = {"accepted": {"traces": 0}}
    start = time.perf_counter()
    for _ in range(INCREMENTS):
        with lock:
            counters["accepted"]["traces"] = counters["accepted"].get("traces", 0) + 3
    return (time.perf_counter() - start) / INCREMENTS * 1e9


def stats_ns(multiprocess_dir: str | None) -> float:
    env = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
    if multiprocess_dir:
        env["PROMETHEUS_MULTIPROC_DIR"] = multiprocess_dir
    out = subprocess.run(
        [sys.executable, "-c", _MEASURE], cwd=ROOT, env=env, check=True, capture_output=True,
        text=True,
    )  # fmt: skip
    return float(out.stdout)


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="eventscope-metrics-") as shared:
        rows = [
            ("locked dict add", dict_add_ns()),
            ("stats.count, one process", stats_ns(None)),
            ("stats.count, --processes N (mmap)", stats_ns(shared)),
        ]
    print("| counter increment | ns each |\n|---|---:|")
    for name, ns in rows:
        print(f"| {name} | {ns:.0f} |")


if __name__ == "__main__":
    main()
