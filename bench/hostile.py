"""Hostile load: a real `manage.py collector` against clients that do it harm.

Scenarios (pick with `--scenarios`, default all), each bounded in time and
on loopback only:

- flood: many clients send small gzip requests that inflate to megabytes
  and never back off; the collector's RSS idle, at its peak and once the
  flood has drained.
- saturation: more exporters than the writer keeps up with, each retrying
  429/503 after Retry-After; latency of acknowledged requests and the
  share answered 429.
- outage: an OpenTelemetry SDK exporter with its default settings while
  the collector's database is cut for 10 s (a TCP proxy between the
  collector and PostgreSQL); spans made, spans the SDK gave up on, spans
  stored.

The collector runs on DATABASE_URL's database (migrated first; its
telemetry tables are emptied before each scenario), on free ports, with the
code of this checkout or of `--root`. A scenario is a function registered
with @scenario: it gets a Setup and returns Markdown lines.
"""

import argparse
import asyncio
import gzip
import os
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import httpx
import psutil
import psycopg

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import ingest  # noqa: E402

MiB = 2**20
TELEMETRY_TABLES = (
    "collector_span", "collector_stage", "collector_envelope", "collector_flowrollup",
    "collector_failurerollup", "collector_log",
)  # fmt: skip


@dataclass
class Setup:
    env: dict[str, str]  # the collector's environment
    conninfo: str
    token: str
    root: Path  # the code the collector runs
    args: argparse.Namespace


SCENARIOS: dict[str, tuple[str, object]] = {}


def scenario(name: str, title: str):
    """Register `function(setup) -> list[str]` as scenario `name`."""

    def register(function):
        SCENARIOS[name] = (title, function)
        return function

    return register


# ---- helpers ------------------------------------------------------------------------


def empty_tables(conninfo: str) -> None:
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute(f"TRUNCATE {', '.join(TELEMETRY_TABLES)}")


class RssSampler:
    """The collector's RSS, sampled every 100 ms on a thread, keeping the peak."""

    def __init__(self, collector: ingest.Collector):
        self.collector = collector
        self.peak = collector.rss()
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        while not self._done.wait(0.1):
            try:
                self.peak = max(self.peak, self.collector.rss())
            except psutil.Error:
                return

    def stop(self) -> int:
        self._done.set()
        self._thread.join()
        return self.peak


def metric(url: str, name: str) -> float:
    """A value from the collector's /metrics (0 when absent)."""
    for line in httpx.get(url + "/metrics", timeout=10).text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return 0.0


def queue_depth(url: str) -> int:
    return int(metric(url, "eventscope_queue_depth"))


def wait_until_idle(collector: ingest.Collector, timeout: float) -> float:
    """Wait until the collector's queue is empty and it uses under a tenth of a
    core; returns the seconds waited."""
    started = time.monotonic()
    processes = collector.processes()
    while time.monotonic() - started < timeout:
        cpu = sum(p.cpu_percent(interval=None) for p in processes)
        time.sleep(1.0)
        cpu = sum(p.cpu_percent(interval=None) for p in processes)
        if cpu < 10 and queue_depth(collector.url) == 0:
            break
    return time.monotonic() - started


def warm_up(collector: ingest.Collector, token: str) -> None:
    """A few ordinary and one inflating request, so that "idle" is a collector
    that has served (modules loaded, connections open, partitions made)."""
    workload = ingest.build_workload(3, 50, 20, seed=3)
    headers = {"content-type": "application/x-protobuf", "authorization": f"Bearer {token}"}
    for body in workload.bodies:
        httpx.post(collector.url + "/v1/traces", content=body, headers=headers, timeout=60)
    (small,) = inflating_bodies(1, 2_000)
    httpx.post(
        collector.url + "/v1/traces",
        content=small,
        headers={**headers, "content-encoding": "gzip"},
        timeout=60,
    )
    time.sleep(3)


def request_bytes(url: str, token: str, body: bytes, gzipped: bool) -> bytes:
    parts = urlsplit(url)
    encoding = "content-encoding: gzip\r\n" if gzipped else ""
    head = (
        f"POST {parts.path} HTTP/1.1\r\nhost: {parts.netloc}\r\n"
        f"content-type: application/x-protobuf\r\nauthorization: Bearer {token}\r\n"
        f"{encoding}content-length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


@dataclass
class Answers:
    latencies: list[float]  # of acknowledged requests
    statuses: dict[int, int]
    errors: int = 0

    def count(self, status: int) -> int:
        return self.statuses.get(status, 0)

    @property
    def total(self) -> int:
        return sum(self.statuses.values())


async def send_loop(url, requests, clients, seconds, honour_retry_after) -> Answers:
    """`clients` connections POST `requests` in turn for `seconds`. A refused
    request is sent again, after Retry-After when `honour_retry_after`."""
    answers = Answers([], {})
    deadline = time.monotonic() + seconds
    parts = urlsplit(url)
    turn = iter(range(10**9))

    async def client():
        connection = ingest._Connection(parts.hostname, parts.port)
        index = next(turn) % len(requests)
        try:
            while time.monotonic() < deadline:
                started = time.monotonic()
                try:
                    status, headers, _ = await connection.post(requests[index])
                except (OSError, asyncio.IncompleteReadError, ValueError):
                    answers.errors += 1
                    await connection.close()
                    await asyncio.sleep(0.2)
                    continue
                answers.statuses[status] = answers.statuses.get(status, 0) + 1
                if status == 200:
                    answers.latencies.append(time.monotonic() - started)
                    index = next(turn) % len(requests)
                elif status in (429, 503) and honour_retry_after:
                    await asyncio.sleep(float(headers.get("retry-after", "1")))
        finally:
            await connection.close()

    tasks = [asyncio.create_task(client()) for _ in range(clients)]
    # Requests still unanswered at the deadline are abandoned, as a client
    # that times out abandons them.
    await asyncio.wait(tasks, timeout=seconds + 15)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    return answers


def percentile(values: list[float], share: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


# ---- scenarios ------------------------------------------------------------------------


def inflating_bodies(variants: int, spans: int) -> list[bytes]:
    """gzip bodies of `spans` spans with 20 repetitive attributes each: some
    125 kB that inflate to 17 MB. Each variant is a different trace."""
    from tests.otlp_requests import trace_request

    template = trace_request(1, spans, service="flood", attributes=20, value_size=40)
    old = b"\x0a\x10" + (1).to_bytes(16, "big")  # the trace_id field
    return [
        gzip.compress(template.replace(old, b"\x0a\x10" + (v + 2).to_bytes(16, "big")))
        for v in range(variants)
    ]


@scenario("flood", "Byte flood: small gzip requests that inflate to megabytes")
def flood(setup: Setup) -> list[str]:
    args = setup.args
    empty_tables(setup.conninfo)
    bodies = inflating_bodies(8, args.flood_spans)
    inflated = len(gzip.decompress(bodies[0]))
    collector = ingest.Collector(setup.env, 1, root=setup.root)
    try:
        warm_up(collector, setup.token)
        idle = collector.rss()
        sampler = RssSampler(collector)
        requests = [
            request_bytes(collector.url + "/v1/traces", setup.token, b, True) for b in bodies
        ]
        answers = asyncio.run(
            send_loop(collector.url, requests, args.flood_clients, args.flood_seconds, False)
        )
        print(f"  flood over, peak so far {sampler.peak / MiB:.0f} MiB; draining", file=sys.stderr)
        drained = wait_until_idle(collector, args.drain_timeout)
        peak = sampler.stop()
        for _ in range(10):  # RSS then, and every second, to see memory go back
            time.sleep(1)
            print(f"  after: {collector.rss() / MiB:.0f} MiB", file=sys.stderr)
        after = collector.rss()
    finally:
        collector.stop()
    return [
        f"{args.flood_clients} clients, {args.flood_seconds:.0f} s, never backing off; each "
        f"request {len(bodies[0]) / 1024:.0f} kB gzip, {inflated / MiB:.1f} MiB inflated "
        f"({args.flood_spans:,} spans).",
        "",
        "| RSS idle | RSS peak | RSS after (drained) | drained in | 200 | 429 | 503 "
        "| other answers / errors |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
        f"| {idle / MiB:.0f} MiB | {peak / MiB:.0f} MiB | {after / MiB:.0f} MiB "
        f"| {drained:.0f} s | {answers.count(200)} | {answers.count(429)} "
        f"| {answers.count(503)} "
        f"| {answers.total - answers.count(200) - answers.count(429) - answers.count(503)}"
        f" / {answers.errors} |",
    ]


@scenario("saturation", "Saturation: more exporters than the writer keeps up with")
def saturation(setup: Setup) -> list[str]:
    args = setup.args
    empty_tables(setup.conninfo)
    workload = ingest.build_workload(args.saturation_requests, 300, 150, seed=13)
    spans_per_request = workload.spans / len(workload.bodies)
    collector = ingest.Collector(setup.env, 1, root=setup.root)
    try:
        requests = [
            ingest.http_request(collector.url + "/v1/traces", setup.token, body)
            for body in workload.bodies
        ]
        answers = asyncio.run(
            send_loop(
                collector.url, requests, args.saturation_clients, args.saturation_seconds, True
            )
        )
        wait_until_idle(collector, args.drain_timeout)
        early = metric(collector.url, 'eventscope_refused_requests_total{signal="traces"}')
        late = metric(collector.url, 'eventscope_dropped_items_total{signal="traces"}')
    finally:
        collector.stop()
    print(
        f"  refused before decoding: {early:.0f}, spans refused after: {late:.0f}", file=sys.stderr
    )
    acked = answers.latencies
    share = answers.count(429) / answers.total if answers.total else 0.0
    return [
        f"{args.saturation_clients} exporters for {args.saturation_seconds:.0f} s, each POSTing "
        f"requests of about {spans_per_request:.0f} spans and retrying after Retry-After.",
        "",
        "| acknowledged | spans/s acknowledged | p50 | p99 | max | answered 429 | 503 | errors |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
        f"| {len(acked)} | {len(acked) * spans_per_request / args.saturation_seconds:,.0f} "
        f"| {percentile(acked, 0.5):.2f} s | {percentile(acked, 0.99):.2f} s "
        f"| {max(acked, default=float('nan')):.2f} s | {share:.0%} ({answers.count(429)}) "
        f"| {answers.count(503)} | {answers.errors} |",
    ]


@scenario("outage", "Database outage: an SDK exporter with default settings")
def outage(setup: Setup) -> list[str]:
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExportResult

    from tests.collector.tcp_proxy import ThreadedProxy

    args = setup.args
    empty_tables(setup.conninfo)
    proxy = ThreadedProxy(setup.conninfo)
    parts = urlsplit(setup.env["DATABASE_URL"])
    through_proxy = urlunsplit(
        parts._replace(netloc=f"{parts.username or 'postgres'}@127.0.0.1:{proxy.proxy.port}")
    )
    collector = ingest.Collector({**setup.env, "DATABASE_URL": through_proxy}, 1, root=setup.root)
    given_up = [0]

    class CountingExporter(OTLPSpanExporter):
        def export(self, spans):
            result = super().export(spans)
            if result is not SpanExportResult.SUCCESS:
                given_up[0] += len(spans)
            return result

    spans = int(args.outage_rate * args.outage_produce_seconds)
    service = f"outage-{time.time_ns()}"
    try:
        provider = TracerProvider(resource=Resource.create({"service.name": service}))
        provider.add_span_processor(
            BatchSpanProcessor(
                CountingExporter(
                    endpoint=collector.url + "/v1/traces",
                    headers={"authorization": f"Bearer {setup.token}"},
                )
            )
        )
        tracer = provider.get_tracer("bench.outage")
        started = time.monotonic()

        def produce():
            for n in range(spans):
                with tracer.start_as_current_span("charge"):
                    pass
                delay = started + (n + 1) / args.outage_rate - time.monotonic()
                if delay > 0:
                    time.sleep(delay)

        app = threading.Thread(target=produce)
        app.start()
        time.sleep(args.outage_at)
        proxy.cut()
        time.sleep(args.outage_seconds)
        proxy.restore()
        app.join()
        provider.shutdown()
        wait_until_idle(collector, args.drain_timeout)
    finally:
        collector.stop()
        proxy.close()
    with psycopg.connect(setup.conninfo) as conn:
        stored, distinct = conn.execute(
            "SELECT count(*), count(DISTINCT span_id) FROM collector_span WHERE service = %s",
            (service,),
        ).fetchone()
    return [
        f"The OTLP/HTTP exporter of opentelemetry-exporter-otlp-proto-http with its defaults "
        f"(10 s for all attempts of a batch) behind a default BatchSpanProcessor; "
        f"{args.outage_rate:.0f} spans/s for {args.outage_produce_seconds:.0f} s, the "
        f"collector's database cut from {args.outage_at:.0f} s for "
        f"{args.outage_seconds:.0f} s.",
        "",
        "| spans made | batches' spans the SDK gave up on | spans stored | distinct |",
        "|---:|---:|---:|---:|",
        f"| {spans} | {given_up[0]} | {stored} | {distinct} |",
    ]


# ---- main ------------------------------------------------------------------------------


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--scenarios", default=",".join(SCENARIOS), help=f"comma-separated: {', '.join(SCENARIOS)}"
    )
    parser.add_argument("--root", type=Path, default=ROOT, help="the checkout the collector runs")
    parser.add_argument("--drain-timeout", type=float, default=120)
    parser.add_argument("--flood-clients", type=int, default=64)
    parser.add_argument("--flood-seconds", type=float, default=15)
    parser.add_argument("--flood-spans", type=int, default=14_000)
    parser.add_argument("--saturation-clients", type=int, default=64)
    parser.add_argument("--saturation-seconds", type=float, default=30)
    parser.add_argument("--saturation-requests", type=int, default=120)
    parser.add_argument("--outage-rate", type=float, default=100, help="spans per second")
    parser.add_argument("--outage-produce-seconds", type=float, default=24)
    parser.add_argument(
        "--outage-at", type=float, default=7, help="after the exporter's first batch (5 s)"
    )
    parser.add_argument("--outage-seconds", type=float, default=10)
    args = parser.parse_args(argv)
    chosen = [name.strip() for name in args.scenarios.split(",") if name.strip()]
    unknown = [name for name in chosen if name not in SCENARIOS]
    if unknown:
        parser.error(f"unknown scenario(s) {', '.join(unknown)}; known: {', '.join(SCENARIOS)}")

    url = os.environ.get("DATABASE_URL")
    if not url:
        parser.error("DATABASE_URL must name the database the collector may use")
    env = {
        **os.environ,
        "DATABASE_URL": url,
        "DJANGO_SETTINGS_MODULE": "dashboard.settings",
        "EVENTSCOPE_LOG_LEVEL": "WARNING",
        "EVENTSCOPE_INGEST_AUTH": "required",
    }
    os.environ.update(DJANGO_SETTINGS_MODULE="dashboard.settings", EVENTSCOPE_LOG_LEVEL="WARNING")
    import django

    django.setup()
    from collector.db import conninfo as django_conninfo

    conninfo = django_conninfo()
    ingest.manage(env, "migrate", "--verbosity", "0")
    token = ingest.manage(env, "createtoken", "hostile-bench").stdout.strip()
    setup = Setup(env, conninfo, token, args.root.resolve(), args)

    info = ingest.machine(conninfo)
    print("## Hostile load\n")
    print(
        f"Machine: {info['cores']} cores (nproc), {info['cpu']}; PostgreSQL "
        f"{info['postgresql']}; Python {info['python']}. Collector code: "
        f"{'this checkout' if setup.root == ROOT else 'the --root checkout'}.\n"
    )
    for name in chosen:
        title, function = SCENARIOS[name]
        print(f"{name} ...", file=sys.stderr)
        print(f"### {title}\n")
        print("\n".join(function(setup)))
        print()
        sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
