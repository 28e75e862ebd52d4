"""Instructions per span of ingest, counted by valgrind's callgrind.

Wall-clock figures move by a third on a shared machine; the instructions a
fixed workload executes do not. `python bench/instructions.py` runs the
ingest benchmark's requests (bench/ingest.py) through the collector's own
code in one process under `valgrind --tool=callgrind` and prints the
instructions per span of three parts:

- decode and normalise: what the receivers do with a protobuf trace request
  (collector.normalize.wire). The compiled reader does both in two passes
  over the bytes: "decode" is its first, which checks the request the way
  upb parses it (`_wire.check`), "normalise" its second, which builds the
  rows (`_wire.read`). With `--upb` (or when the reader is not built), the
  upb path: decode is `ParseFromString` into ExportTraceServiceRequest
  messages, normalise is `normalize_traces` on each;
- writer: what `Writer.submit` and a writing lane do with the batches
  (checking and encoding the rows, collecting a group, its transaction on
  a real PostgreSQL: COPY, joins, rollups, commit), `--group` requests a
  transaction as several exporters make it; the server's own work is not
  counted.

The parts are delimited by callgrind's client requests from a small C
helper compiled for the run (gcc and valgrind's headers); everything else
(Python's start, Django, building the workload) runs uninstrumented. After
the run the stored rows are checked as in the throughput benchmark.
"""

import argparse
import asyncio
import contextlib
import ctypes
import datetime as dt
import gc
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

PARTS = ("decode", "normalise", "writer")
_MARKERS_C = r"""
#include <valgrind/callgrind.h>
void es_start(void) { CALLGRIND_START_INSTRUMENTATION; CALLGRIND_ZERO_STATS; }
void es_dump(const char *part) { CALLGRIND_DUMP_STATS_AT(part); }
void es_stop(void) { CALLGRIND_STOP_INSTRUMENTATION; }
"""


def available() -> str | None:
    """Why the measurement cannot run here, or None."""
    if not shutil.which("valgrind"):
        return "valgrind is not installed"
    if not shutil.which("gcc"):
        return "gcc is not installed"
    if not Path("/usr/include/valgrind/callgrind.h").exists():
        return "valgrind's headers (valgrind/callgrind.h) are not installed"
    return None


def measure(
    conninfo: str,
    requests: int,
    group: int,
    messages=150,
    calls=50,
    keep: Path | None = None,
    upb: bool = False,
) -> dict:
    """{part: instructions per span, "spans": n, "checks": {...}} for a fresh run;
    `keep` receives callgrind's files (for callgrind_annotate)."""
    with tempfile.TemporaryDirectory(prefix="eventscope-callgrind-") as tmp:
        library = Path(tmp) / "markers.so"
        source = Path(tmp) / "markers.c"
        source.write_text(_MARKERS_C)
        subprocess.run(["gcc", "-O1", "-shared", "-fPIC", "-o", library, source], check=True)
        out = Path(tmp) / "callgrind.out"
        report = Path(tmp) / "report.json"
        env = {
            **os.environ,
            "DATABASE_URL": conninfo,
            "DJANGO_SETTINGS_MODULE": "dashboard.settings",
            "EVENTSCOPE_LOG_LEVEL": "WARNING",
            "PYTHONHASHSEED": "0",  # the same dict layouts, so the same count run to run
        }
        done = subprocess.run(
            [
                "valgrind", "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={out}",
                sys.executable, __file__, "--child", "--markers", str(library), "--report",
                str(report), "--requests", str(requests), "--group", str(group),
                "--messages", str(messages), "--calls", str(calls), *(["--upb"] if upb else []),
            ],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        if done.returncode:
            raise RuntimeError(f"the measured run failed:\n{done.stderr[-3000:]}")
        result = json.loads(report.read_text())
        totals = {}
        for dump in Path(tmp).glob("callgrind.out*"):
            text = dump.read_text(errors="replace")
            trigger = re.search(r"^desc: Trigger: Client Request: (\w+)", text, re.M)
            total = re.search(r"^(?:totals|summary): (\d+)", text, re.M)
            if trigger and total and trigger.group(1) in PARTS:
                totals[trigger.group(1)] = int(total.group(1))
                if keep:
                    keep.mkdir(parents=True, exist_ok=True)
                    shutil.copy(dump, keep / f"callgrind.{trigger.group(1)}")
    missing = [part for part in PARTS if part not in totals]
    if missing:
        raise RuntimeError(f"callgrind gave no count for {', '.join(missing)}")
    spans = result["spans"]
    return {**{part: totals[part] / spans for part in PARTS}, **result}


def _child(args) -> int:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "dashboard.settings")
    import django

    django.setup()
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceRequest,
    )

    from bench import ingest, run
    from collector import runtime
    from collector.normalize import normalize_traces, wire
    from collector.writer import Writer, _Lane, _Pending, _prepare, _window

    markers = ctypes.CDLL(args.markers)
    markers.es_dump.argtypes = [ctypes.c_char_p]
    workload = ingest.build_workload(args.requests, args.messages, args.calls)
    conninfo = os.environ["DATABASE_URL"]

    async def main():
        import psycopg

        async with await psycopg.AsyncConnection.connect(conninfo, autocommit=True) as conn:
            await conn.execute(
                "TRUNCATE collector_span, collector_stage, collector_flowrollup, "
                "collector_failurerollup"
            )
        writer = Writer(conninfo, lanes=1)
        lane = _Lane(writer)
        await lane.connection()
        today = dt.datetime.now(dt.UTC).date()
        await writer._ensure_partitions({today + dt.timedelta(days=d) for d in (-1, 0, 1)})
        loop = asyncio.get_running_loop()
        gc.collect()
        runtime.tune_gc()  # as the collector process does at start-up

        bodies = workload.bodies
        if args.upb or not wire.compiled():
            markers.es_start()
            messages = []
            for body in bodies:
                message = ExportTraceServiceRequest()
                message.ParseFromString(body)
                messages.append(message)
            markers.es_dump(b"decode")
            batches = [normalize_traces(message, 1).batch for message in messages]
            markers.es_dump(b"normalise")
        else:
            from collector.normalize import _wire

            markers.es_start()
            checked = [_wire.check(body) for body in bodies]
            markers.es_dump(b"decode")
            batches = [_wire.read(body, 1).batch for body in bodies]
            markers.es_dump(b"normalise")
            if not all(checked):
                raise RuntimeError("the compiled reader refused a benchmark request")
        for start in range(0, len(batches), args.group):
            group = []
            for batch in batches[start : start + args.group]:
                pending = _Pending(batch, loop.create_future())
                _prepare(pending, *_window())
                group.append(pending)
            await writer._write_group(lane, group)
            for pending in group:
                pending.clear()
        markers.es_dump(b"writer")
        markers.es_stop()
        await lane.close()

    asyncio.run(main())
    checks = run.verify(conninfo, workload)
    Path(args.report).write_text(
        json.dumps(
            {"spans": workload.spans, "checks": {k: [int(x) for x in v] for k, v in checks.items()}}
        )
    )
    return 0


def prepare_database(url: str) -> None:
    """A fresh, migrated database at `url`."""
    from bench import ingest, run

    run.recreate_database(url)
    ingest.manage({**os.environ, "DATABASE_URL": url}, "migrate", "--verbosity", "0")


def table(figures: dict) -> str:
    lines = [
        "| part | instructions per span |",
        "|---|---:|",
        *(f"| {part} | {figures[part]:,.0f} |" for part in PARTS),
        f"| normalise + writer | {figures['normalise'] + figures['writer']:,.0f} |",
    ]
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=20)
    parser.add_argument("--group", type=int, default=4, help="requests per transaction")
    parser.add_argument("--messages", type=int, default=150, help="messages per request")
    parser.add_argument("--calls", type=int, default=50, help="HTTP call pairs per request")
    parser.add_argument("--keep", type=Path, help="a folder for callgrind's files, one a part")
    parser.add_argument(
        "--upb", action="store_true", help="decode with upb and normalise its messages"
    )
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--markers", help=argparse.SUPPRESS)
    parser.add_argument("--report", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return _child(args)
    why = available()
    if why:
        print(f"instructions not measured: {why}")
        return 1
    from bench import run

    url = run.bench_database_url() + "_instructions"
    prepare_database(url)
    figures = measure(
        url, args.requests, args.group, args.messages, args.calls, args.keep, args.upb
    )
    from collector.normalize import wire

    reader = "upb" if args.upb or not wire.compiled() else "the compiled reader"
    print(f"Workload: {args.requests} requests, {figures['spans']:,} spans, "
          f"{args.group} requests a transaction; protobuf read by {reader}\n")  # fmt: skip
    print(table(figures))
    bad = {k: v for k, v in figures["checks"].items() if v[0] != v[1]}
    print("\nChecks: " + ("all hold" if not bad else f"FAILED {bad}"))
    return 1 if bad else 0


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
