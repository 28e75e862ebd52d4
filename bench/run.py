"""`make bench`: Eventscope's benchmarks, printed as Markdown.

Needs a PostgreSQL server: BENCH_DATABASE_URL (a server URL; the database
in it is dropped and recreated), else DATABASE_URL's server, else
postgresql://postgres@127.0.0.1:5432. The benchmark database is
`eventscope_bench` unless the URL names another.
"""

import argparse
import asyncio
import datetime as dt
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import ingest, instructions  # noqa: E402

DEFAULT_SERVER = "postgresql://postgres@127.0.0.1:5432"
BENCH_DB = "eventscope_bench"


def bench_database_url() -> str:
    url = os.environ.get("BENCH_DATABASE_URL") or os.environ.get("DATABASE_URL") or DEFAULT_SERVER
    parts = urlsplit(url)
    name = parts.path.lstrip("/") if os.environ.get("BENCH_DATABASE_URL") else ""
    return urlunsplit(parts._replace(path="/" + (name or BENCH_DB)))


def recreate_database(url: str) -> None:
    parts = urlsplit(url)
    name = parts.path.lstrip("/")
    admin = urlunsplit(parts._replace(path="/postgres"))
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')


def count(conninfo, sql) -> int:
    with psycopg.connect(conninfo) as conn:
        return conn.execute(sql).fetchone()[0] or 0


def verify(conninfo, workload) -> dict:
    """Everything sent is stored exactly once and counted once in the rollups."""
    checks = {
        "spans stored": (count(conninfo, "SELECT count(*) FROM collector_span"), workload.spans),
        "distinct spans": (
            count(conninfo, "SELECT count(DISTINCT (trace_id, span_id)) FROM collector_span"),
            workload.spans,
        ),
        "stages stored": (
            count(conninfo, "SELECT count(*) FROM collector_stage"),
            workload.messages + workload.consumed,
        ),
        "publish edge count": (
            count(conninfo, "SELECT sum(count) FROM collector_flowrollup WHERE kind = 'publish'"),
            workload.messages,
        ),
        "consume edge count": (
            count(conninfo, "SELECT sum(count) FROM collector_flowrollup WHERE kind = 'consume'"),
            workload.consumed,
        ),
        "consume e2e latencies": (
            count(
                conninfo, "SELECT sum(e2e_count) FROM collector_flowrollup WHERE kind = 'consume'"
            ),
            workload.consumed,
        ),
        "call edge count": (
            count(conninfo, "SELECT sum(count) FROM collector_flowrollup WHERE kind = 'call'"),
            workload.calls,
        ),
    }
    return checks


def raw_rows(workload) -> tuple[list, list]:
    """The workload's span and stage rows, encoded as the writer encodes them."""
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceRequest,
    )

    from collector import writer
    from collector.normalize import normalize_traces

    spans, stages, resources = [], [], {}
    for body in workload.bodies:
        request = ExportTraceServiceRequest()
        request.ParseFromString(body)
        batch = normalize_traces(request, 1).batch
        spans += [writer.span_values(s, resources) for s in batch.spans]
        stages += [writer.stage_values(s, s.dedupe_key(), None) for s in batch.stages]
    return spans, stages


def raw_copy_rate(conninfo, rows, chunk_spans=5000) -> tuple[float, float]:
    """Spans/s of plain binary COPY of the same rows (encoded beforehand, not
    timed), and PostgreSQL's CPU per span in µs."""
    from collector import partitions, writer

    spans, stages = rows
    today = dt.datetime.now(dt.UTC).date()
    with psycopg.connect(conninfo) as conn:
        # The workload's times are around now; the collector creates these on demand.
        partitions.ensure(conn.cursor(), [today + dt.timedelta(days=d) for d in (-1, 0, 1)])
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute("TRUNCATE collector_span, collector_stage, collector_flowrollup")
    ratio = len(stages) / max(1, len(spans))
    server = ingest.PostgresCPU(conninfo)
    server_before = server.seconds()
    started = time.perf_counter()
    with psycopg.connect(conninfo) as conn:
        # The writer's own row encoding (orjson jsonb, nanosecond times).
        writer.configure_copy(conn)
        cur = conn.cursor()
        step = max(1, int(chunk_spans * ratio))
        for i, j in zip(range(0, len(spans), chunk_spans), range(0, 10**12, step), strict=False):
            for table, rows in (
                (writer.SPANS, spans[i : i + chunk_spans]),
                (writer.STAGES, stages[j : j + step]),
            ):
                if not rows:
                    continue
                with cur.copy(
                    f"COPY {table.name} ({table.column_list}) FROM STDIN (FORMAT BINARY)"
                ) as copy:
                    copy.set_types(table.copy_types)
                    for row in rows:
                        copy.write_row(row)
            conn.commit()
    seconds = time.perf_counter() - started
    server_us = (server.seconds() - server_before) / len(spans) * 1e6
    return len(spans) / seconds, server_us


def overload(env, token, workload, clients, seconds, processes, tls=None) -> dict:
    """Exporters that never back off against a collector with a small queue."""
    collector = ingest.Collector({**env, "EVENTSCOPE_QUEUE_MAX_ITEMS": "20000"}, processes, tls)
    idle_rss = collector.rss()
    peak = [idle_rss]
    done = threading.Event()

    def sample():
        while not done.is_set():
            try:
                peak[0] = max(peak[0], collector.rss())
            except Exception:
                return
            time.sleep(0.1)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        result = asyncio.run(
            ingest.drive(
                collector.url + "/v1/traces",
                token,
                workload.bodies,
                clients,
                honour_retry_after=False,
                deadline=time.monotonic() + seconds,
                tls=tls,
            )
        )
    finally:
        done.set()
        sampler.join()
        collector.stop()
    return {
        "clients": clients,
        "processes": processes,
        "acknowledged": result.acked_requests,
        "429": result.throttled,
        "503": result.unavailable,
        "other errors": len(result.errors),
        "idle_rss_mib": idle_rss / 2**20,
        "peak_rss_mib": peak[0] / 2**20,
    }


def ingest_run(env, conninfo, token, workload, clients, processes, tls=None) -> dict:
    """One collector (with `processes` processes) on empty tables: rate, CPU, checks."""
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute("TRUNCATE collector_span, collector_stage, collector_flowrollup")
    collector = ingest.Collector(env, processes, tls)
    server = ingest.PostgresCPU(conninfo)
    try:
        cpu_before, server_before = collector.cpu_seconds(), server.seconds()
        result = asyncio.run(
            ingest.drive(collector.url + "/v1/traces", token, workload.bodies, clients, tls=tls)
        )
        cpu = collector.cpu_seconds() - cpu_before
        server_cpu = server.seconds() - server_before
    finally:
        collector.stop()
    return {
        "processes": processes,
        "rate": workload.spans / result.seconds,
        "cpu_us_per_span": cpu / workload.spans * 1e6,
        "server_us_per_span": server_cpu / workload.spans * 1e6,
        "result": result,
        "checks": verify(conninfo, workload),
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=800)
    parser.add_argument("--messages", type=int, default=150, help="messages per request")
    parser.add_argument("--calls", type=int, default=50, help="HTTP call pairs per request")
    parser.add_argument(
        "--clients",
        default="8,32",
        help="concurrent exporters, comma-separated: the first for every run, the others "
        "for the multi-process collector",
    )
    parser.add_argument(
        "--processes",
        type=int,
        default=os.cpu_count() or 1,
        help="collector processes of the second run (the first always has one)",
    )
    parser.add_argument("--overload-clients", type=int, default=64)
    parser.add_argument("--overload-seconds", type=float, default=15)
    parser.add_argument("--skip-queries", action="store_true", help="ingest figures only")
    parser.add_argument(
        "--instructions",
        type=int,
        default=20,
        metavar="REQUESTS",
        help="requests of the callgrind count of instructions per span (bench/instructions.py) "
        "printed beside the wall-clock figures; 0 skips it",
    )
    parser.add_argument(
        "--tls",
        action="store_true",
        help="the collector serves TLS (a certificate made for the run) and the exporters "
        "send over https, each keeping its connection alive as real exporters do",
    )
    args = parser.parse_args(argv)

    url = bench_database_url()
    recreate_database(url)
    env = {
        **os.environ,
        "DATABASE_URL": url,
        "DJANGO_SETTINGS_MODULE": "dashboard.settings",
        "EVENTSCOPE_LOG_LEVEL": "WARNING",
        "EVENTSCOPE_INGEST_AUTH": "required",
    }
    os.environ.update(
        DATABASE_URL=url,
        DJANGO_SETTINGS_MODULE="dashboard.settings",
        EVENTSCOPE_LOG_LEVEL="WARNING",
    )
    import django

    django.setup()
    from collector.db import conninfo as django_conninfo

    conninfo = django_conninfo()
    tls = None
    if args.tls:
        tls_dir = Path(tempfile.mkdtemp(prefix="eventscope-bench-tls-"))
        tls_env, tls = ingest.tls_setup(tls_dir)
        env.update(tls_env)
    ingest.manage(env, "migrate", "--verbosity", "0")
    token = ingest.manage(env, "createtoken", "bench").stdout.strip()

    print(f"building {args.requests} requests ...", file=sys.stderr)
    workload = ingest.build_workload(args.requests, args.messages, args.calls)
    clients = [int(c) for c in args.clients.split(",") if c.strip()]
    processes = max(1, args.processes)
    setups = [(1, clients[0])]
    if processes > 1:
        setups += [(processes, c) for c in clients]
    rows = raw_rows(workload)
    # The baseline is measured before every collector run and after the last:
    # a shared machine's speed drifts, and each run is set against the mean
    # of the baselines on either side of it.
    runs, baselines = [], []
    for count, exporters in setups:
        print("raw COPY baseline ...", file=sys.stderr)
        baselines.append(raw_copy_rate(conninfo, rows))
        print(f"collector: {count} process(es), {exporters} exporters ...", file=sys.stderr)
        run = ingest_run(env, conninfo, token, workload, exporters, count, tls)
        runs.append({**run, "clients": exporters})
    print("raw COPY baseline ...", file=sys.stderr)
    baselines.append(raw_copy_rate(conninfo, rows))
    for n, run in enumerate(runs):
        run["baseline"] = (baselines[n][0] + baselines[n + 1][0]) / 2
    raw_rate = sum(rate for rate, _ in baselines) / len(baselines)
    raw_server_us = sum(us for _, us in baselines) / len(baselines)

    print("overload ...", file=sys.stderr)
    overload_workload = ingest.build_workload(args.requests, args.messages, args.calls, seed=11)
    flood = overload(
        env, token, overload_workload, args.overload_clients, args.overload_seconds,
        runs[-1]["processes"], tls,
    )  # fmt: skip

    counted = None
    if args.instructions:
        why = instructions.available()
        if why:
            counted = why
        else:
            print("instructions (callgrind) ...", file=sys.stderr)
            instructions_url = url + "_instructions"
            try:
                instructions.prepare_database(instructions_url)
                counted = instructions.measure(
                    instructions_url, args.instructions, 4, args.messages, args.calls
                )
            except (RuntimeError, OSError, subprocess.CalledProcessError) as exc:
                # The wall-clock figures above are still worth printing.
                counted = f"the count failed ({str(exc).strip().splitlines()[-1]})"

    info = ingest.machine(conninfo)
    print("## Ingest benchmark\n")
    print(
        f"Machine: {info['cores']} cores, {info['ram_gib']} GiB RAM, {info['cpu']}; "
        f"PostgreSQL {info['postgresql']}; Python {info['python']}; load average "
        f"{info['load']} at the end (a shared machine is slower when others work).\n"
    )
    print(
        f"Workload: {args.requests} OTLP/HTTP protobuf requests"
        + (" over TLS (https, TLS 1.3, kept-alive connections)" if args.tls else "")
        + f", {workload.spans} spans "
        f"({workload.messages} publishes, {workload.consumed} consumes, {workload.calls} "
        f"HTTP call pairs).\n"
    )
    print("| collector (HTTP + decode + dedupe + rollups) | exporters | spans/s "
          "| raw COPY spans/s (before and after) | ratio to raw COPY "
          "| collector CPU per span | PostgreSQL CPU per span | 429 / 503 |")  # fmt: skip
    print("|---|---:|---:|---:|---:|---:|---:|---|")
    ok = True
    errors = []
    for run in runs:
        result = run["result"]
        errors += result.errors
        print(
            f"| {run['processes']} process(es) | {run['clients']} | {run['rate']:,.0f} "
            f"| {run['baseline']:,.0f} | {run['rate'] / run['baseline']:.2f} "
            f"| {run['cpu_us_per_span']:.1f} µs | {run['server_us_per_span']:.1f} µs "
            f"| {result.throttled} / {result.unavailable} |"
        )
    print(
        f"| raw psycopg binary COPY of the same rows (mean of {len(baselines)}: "
        + ", ".join(f"{rate:,.0f}" for rate, _ in baselines)
        + f") | | {raw_rate:,.0f} | | 1.00 | | {raw_server_us:.1f} µs | |"
    )
    print()
    print(
        "| check | expected | "
        + " | ".join(f"{r['processes']} p, {r['clients']} exp." for r in runs)
        + " |"
    )
    print("|---|---:|" + "---:|" * len(runs))
    for name, (_, expected) in runs[0]["checks"].items():
        got = [run["checks"][name][0] for run in runs]
        ok &= all(g == expected for g in got)
        print(f"| {name} | {expected} | " + " | ".join(str(g) for g in got) + " |")
    print()
    print(
        f"Overload ({flood['clients']} exporters that never back off, "
        f"{flood['processes']} process(es), EVENTSCOPE_QUEUE_MAX_ITEMS=20000, "
        f"{args.overload_seconds:.0f} s): "
        f"{flood['acknowledged']} requests acknowledged, {flood['429']} answered 429, "
        f"{flood['503']} answered 503, {flood['other errors']} other errors; collector RSS "
        f"{flood['idle_rss_mib']:.0f} MiB idle, {flood['peak_rss_mib']:.0f} MiB peak."
    )
    if isinstance(counted, dict):
        print(
            f"\nInstructions per span, counted by callgrind (bench/instructions.py: "
            f"{args.instructions} of the same requests, {counted['spans']:,} spans, 4 requests "
            "a transaction; the same on any machine with this code and these libraries):\n"
        )
        print(instructions.table(counted))
        ok &= all(got == expected for got, expected in counted["checks"].values())
    elif counted:
        print(f"\nInstructions per span not counted: {counted}.")
        ok &= not counted.startswith("the count failed")
    if errors:
        print(f"\nErrors during the runs: {errors[:5]}")
    if args.skip_queries:
        return 0 if ok and not errors else 1
    # Dashboard reads on a week of data, in a process of its own (its own database).
    sys.stdout.flush()
    queries = subprocess.run([sys.executable, str(ROOT / "bench" / "query.py")], check=False)
    ok &= queries.returncode == 0
    return 0 if ok and not errors else 1


if __name__ == "__main__":
    sys.exit(main())
