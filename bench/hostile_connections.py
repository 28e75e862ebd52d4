"""Hostile load on connections, printed as Markdown.

1. **Half-open connections.** A real `manage.py collector`; the benchmark
   opens N connections (default 10,000) to its OTLP/HTTP port as fast as it
   can, half of them silent, half after sending half a request line, and
   keeps them for longer than the header deadline. Meanwhile a probe opens a
   fresh connection for `GET /healthz` every 20 ms. Figures: the probe's
   latency (p50, p99, max) and failures, the collector's RSS and open
   descriptors before, at the peak and after, and how many of the
   benchmark's connections the collector closed.
2. **PostgreSQL connections per web request.** A real `manage.py serve`;
   1,000 `GET /api/flow` requests (16 clients) with a read token. Figures:
   the server's PostgreSQL connections (those libpq names after the server:
   the pool, the leader lock, the LISTEN connection; the writer names its
   own) before, at the peak (sampled every 50 ms) and after.

Everything runs on 127.0.0.1 and stops by itself. It uses the database of
DATABASE_URL as it is (migrating it; nothing is dropped), default
postgresql://postgres@127.0.0.1:5432/eventscope.

    python bench/hostile_connections.py [--half-open 10000] [--requests 1000]
"""

import argparse
import asyncio
import os
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import psutil
import psycopg

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DATABASE_URL = "postgresql://postgres@127.0.0.1:5432/eventscope"
HALF_A_REQUEST_LINE = b"POST /v1/tra"
PROBE_EVERY_SECONDS = 0.02
HEADER_TIMEOUT_SECONDS = 10  # EVENTSCOPE_HTTP_HEADER_TIMEOUT_SECONDS's default


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def database_url() -> str:
    return os.environ.get("DATABASE_URL") or DEFAULT_DATABASE_URL


def environment(**extra) -> dict:
    return {
        **os.environ,
        "DATABASE_URL": database_url(),
        "DJANGO_SETTINGS_MODULE": "dashboard.settings",
        "EVENTSCOPE_LOG_LEVEL": "WARNING",
        **extra,
    }


def manage(*args, log, **extra) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env=environment(**extra),
        stdout=log,
        stderr=subprocess.STDOUT,
    )


def wait_healthz(port: int, process: subprocess.Popen, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"the server exited with {process.returncode}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise SystemExit(f"port {port} did not answer within {seconds}s")


def stop(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(60)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def mib(value: int) -> str:
    return f"{value / 2**20:.0f} MiB"


class Sampler(threading.Thread):
    """RSS and open descriptors of one process, every 100 ms."""

    def __init__(self, pid: int):
        super().__init__(daemon=True)
        self.process = psutil.Process(pid)
        self.samples: list[tuple[int, int]] = []
        self.done = threading.Event()

    def now(self) -> tuple[int, int]:
        return self.process.memory_info().rss, self.process.num_fds()

    def run(self):
        while not self.done.wait(0.1):
            self.samples.append(self.now())

    def peak(self) -> tuple[int, int]:
        return max(rss for rss, _ in self.samples), max(fds for _, fds in self.samples)


class Prober(threading.Thread):
    """GET /healthz on a fresh connection every PROBE_EVERY_SECONDS."""

    def __init__(self, port: int):
        super().__init__(daemon=True)
        self.port = port
        self.latencies: list[float] = []
        self.failures: dict[str, int] = {}
        self.done = threading.Event()

    def probe(self) -> None:
        started = time.perf_counter()
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=5) as client:
                client.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
                answer = b""
                while b"ok\n" not in answer:
                    chunk = client.recv(4096)
                    if not chunk:
                        break
                    answer += chunk
            if not answer.startswith(b"HTTP/1.1 200"):
                raise OSError(answer.split(b"\r\n", 1)[0].decode() or "closed without an answer")
            self.latencies.append(time.perf_counter() - started)
        except OSError as exc:
            name = type(exc).__name__ if not str(exc).startswith("HTTP") else str(exc)
            self.failures[name] = self.failures.get(name, 0) + 1

    def run(self):
        while not self.done.wait(PROBE_EVERY_SECONDS):
            self.probe()


async def open_half_open(port: int, count: int, concurrency: int = 256):
    """`count` connections, half silent, half with half a request line; returns
    the open (reader, writer) pairs and the connection errors."""
    opened, errors = [], {}
    gate = asyncio.Semaphore(concurrency)

    async def one(i):
        async with gate:
            try:
                reader, writer = await asyncio.wait_for(
                    asyncio.open_connection("127.0.0.1", port), 10
                )
            except (OSError, TimeoutError) as exc:
                errors[type(exc).__name__] = errors.get(type(exc).__name__, 0) + 1
                return
            if i % 2:
                writer.write(HALF_A_REQUEST_LINE)
            opened.append((reader, writer))

    await asyncio.gather(*(one(i) for i in range(count)))
    return opened, errors


def raise_own_file_limit(needed: int) -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < needed and soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        soft = hard
    return soft


def half_open(count: int) -> None:
    limit = raise_own_file_limit(count + 512)
    if limit < count + 512:
        count = max(100, limit - 512)
        print(f"(this process may open only {limit} files: {count} connections)\n")
    http_port, grpc_port = free_port(), free_port()
    with tempfile.TemporaryFile() as log:
        collector = manage(
            "collector", "--otlp-http-port", str(http_port), "--otlp-grpc-port", str(grpc_port),
            log=log,
        )  # fmt: skip
        try:
            wait_healthz(http_port, collector)
            time.sleep(1)
            sampler = Sampler(collector.pid)
            before = sampler.now()
            idle = Prober(http_port)
            for _ in range(50):
                idle.probe()
            sampler.start()
            prober = Prober(http_port)
            prober.start()

            opened, errors, opening, closed = asyncio.run(flood(http_port, count))
            prober.done.set()
            prober.join()
            time.sleep(1)
            sampler.done.set()
            sampler.join()
            after = sampler.now()
            peak_rss, peak_fds = sampler.peak()
        finally:
            stop(collector)

    latencies = [1000 * value for value in prober.latencies]
    idle_ms = [1000 * value for value in idle.latencies]
    print("### Half-open connections\n")
    print(
        f"{count:,} connections to the OTLP/HTTP port opened in {opening:.1f} s "
        f"({len(opened):,} connected; errors: {errors or 'none'}), half silent, half after "
        f"`{HALF_A_REQUEST_LINE.decode()}`, held {HEADER_TIMEOUT_SECONDS + 3} s; "
        f"{closed:,} of them closed by the collector by then.\n"
    )
    print("| | p50 | p99 | max | probes | failed |")
    print("|---|---:|---:|---:|---:|---:|")
    print(
        f"| `/healthz` idle | {statistics.median(idle_ms):.1f} ms | "
        f"{percentile(idle_ms, 0.99):.1f} ms | {max(idle_ms):.1f} ms | {len(idle_ms)} | 0 |"
    )
    failed = sum(prober.failures.values())
    print(
        f"| `/healthz` during | {statistics.median(latencies):.1f} ms | "
        f"{percentile(latencies, 0.99):.1f} ms | {max(latencies):.1f} ms | "
        f"{len(latencies) + failed} | {failed}{f' {prober.failures}' if failed else ''} |"
    )
    print()
    print("| collector | before | peak | after |")
    print("|---|---:|---:|---:|")
    print(f"| RSS | {mib(before[0])} | {mib(peak_rss)} | {mib(after[0])} |")
    print(f"| open descriptors | {before[1]} | {peak_fds} | {after[1]} |")
    print()


async def flood(port: int, count: int):
    """Open the connections, hold them past the header deadline, count those the
    collector closed, close the rest."""
    started = time.monotonic()
    opened, errors = await open_half_open(port, count)
    opening = time.monotonic() - started
    await asyncio.sleep(HEADER_TIMEOUT_SECONDS + 3)
    closed = _closed_by_peer(opened)
    for _reader, writer in opened:
        writer.close()
    return opened, errors, opening, closed


def _closed_by_peer(opened) -> int:
    closed = 0
    for _reader, writer in opened:
        sock = writer.get_extra_info("socket")
        try:
            # Readable with nothing to read: the peer closed it.
            raw = socket.socket(fileno=os.dup(sock.fileno()))
        except OSError:
            closed += 1
            continue
        with raw:
            raw.setblocking(False)
            try:
                if raw.recv(1, socket.MSG_PEEK) == b"":
                    closed += 1
            except BlockingIOError:
                pass
            except OSError:
                closed += 1
    return closed


def read_token() -> str:
    result = subprocess.run(
        [sys.executable, "manage.py", "createtoken", "hostile-bench", "--project", "bench",
         "--scope", "read"],
        cwd=ROOT, env=environment(), capture_output=True, text=True, check=True,
    )  # fmt: skip
    return result.stdout.strip()


def web_requests(count: int, clients: int = 16) -> None:
    subprocess.run(
        [sys.executable, "manage.py", "migrate", "--noinput", "-v0"],
        cwd=ROOT, env=environment(), check=True,
    )  # fmt: skip
    token = read_token()
    port = free_port()
    name = f"eventscope-bench-{port}"
    with tempfile.TemporaryFile() as log:
        server = manage(
            "serve", "--port", str(port),
            "--otlp-http-port", str(free_port()), "--otlp-grpc-port", str(free_port()),
            log=log, PGAPPNAME=name,
        )  # fmt: skip
        try:
            wait_healthz(port, server)
            time.sleep(2)  # the worker's first passes
            with psycopg.connect(database_url(), autocommit=True) as conn:

                def connections() -> int:
                    return conn.execute(
                        "SELECT count(*) FROM pg_stat_activity "
                        "WHERE datname = current_database() AND application_name = %s",
                        (name,),
                    ).fetchone()[0]

                before = connections()
                samples, done = [], threading.Event()

                def sample():
                    while not done.wait(0.05):
                        samples.append(connections())

                statuses: dict[int, int] = {}
                lock = threading.Lock()
                url = f"http://127.0.0.1:{port}/api/flow?window=1h"
                headers = {"authorization": f"Bearer {token}"}

                def client(share: int):
                    with httpx.Client(headers=headers, timeout=30) as session:
                        for _ in range(share):
                            status = session.get(url).status_code
                            with lock:
                                statuses[status] = statuses.get(status, 0) + 1

                # The sampler's connection is used from one thread only.
                sampler = threading.Thread(target=sample, daemon=True)
                sampler.start()
                started = time.monotonic()
                shares = [count // clients + (i < count % clients) for i in range(clients)]
                with ThreadPoolExecutor(clients) as pool:
                    list(pool.map(client, shares))
                elapsed = time.monotonic() - started
                done.set()
                sampler.join()
                right_after = connections()
                time.sleep(5)
                later = connections()
        finally:
            stop(server)
    sent = sum(statuses.values())
    print("### PostgreSQL connections per web request\n")
    print(
        f"{sent:,} `GET /api/flow` requests from {clients} keep-alive clients to `serve` "
        f"(`EVENTSCOPE_DB_POOL_SIZE` default, 10) in {elapsed:.1f} s "
        f"({sent / elapsed:.0f}/s); answers: {statuses}.\n"
    )
    print("| the server's PostgreSQL connections | before | peak | right after | 5 s later |")
    print("|---|---:|---:|---:|---:|")
    print(f"| pool, leader lock, LISTEN | {before} | {max(samples)} | {right_after} | {later} |")
    print()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--half-open", type=int, default=10_000)
    parser.add_argument("--requests", type=int, default=1_000)
    parser.add_argument(
        "--scenarios", default="half-open,web", help="comma-separated: half-open, web"
    )
    args = parser.parse_args()
    scenarios = args.scenarios.split(",")
    print("## Hostile load: connections\n")
    if "half-open" in scenarios:
        half_open(args.half_open)
    if "web" in scenarios:
        web_requests(args.requests)


if __name__ == "__main__":
    main()
