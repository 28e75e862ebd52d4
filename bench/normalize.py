"""Normalisation cost of OTLP trace requests, in microseconds per request.

`python bench/normalize.py` decodes nothing and stores nothing: it times
collector.normalize.normalize_traces alone, the CPU-bound hot path of
ingest, on two kinds of 400-span protobuf requests built beforehand:

- `bench`: the ingest benchmark's requests (Kafka producer and consumer
  spans, HTTP call pairs; one to four attributes a span);
- `sdk`: spans shaped like an instrumented service's (a resource of eight
  attributes, twelve attributes a span, an event on every tenth span).

Each figure is the best of several rounds (a shared machine's speed drifts),
so two runs of different code can be set side by side.
"""

import argparse
import os
import random
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "dashboard.settings")

import django  # noqa: E402

django.setup()

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (  # noqa: E402
    ExportTraceServiceRequest,
)

from bench import ingest  # noqa: E402
from collector.normalize import normalize_traces  # noqa: E402


def sdk_requests(count: int, spans: int = 400, seed: int = 3) -> list[bytes]:
    rng = random.Random(seed)
    now = time.time_ns()
    bodies = []
    for r in range(count):
        request = ExportTraceServiceRequest()
        resource_spans = request.resource_spans.add()
        for key, value in (
            ("service.name", "checkout"), ("service.version", "1.4.2"),
            ("deployment.environment", "production"), ("host.name", "checkout-7f9c"),
            ("telemetry.sdk.name", "opentelemetry"), ("telemetry.sdk.language", "python"),
            ("telemetry.sdk.version", "1.27.0"), ("process.pid", 4242),
        ):  # fmt: skip
            ingest._attr(resource_spans.resource, key, value)
        scope = resource_spans.scope_spans.add()
        for n in range(spans):
            span = scope.spans.add()
            span.trace_id, span.span_id = rng.randbytes(16), rng.randbytes(8)
            span.name, span.kind = "POST /orders", ingest.KIND_SERVER
            span.start_time_unix_nano = now + (r * spans + n) * 1000
            span.end_time_unix_nano = span.start_time_unix_nano + 5_000_000
            for key, value in (
                ("http.request.method", "POST"), ("http.route", "/orders"),
                ("http.response.status_code", 201), ("url.scheme", "https"),
                ("url.path", f"/orders/{rng.randrange(10**6)}"), ("server.address", "shop"),
                ("server.port", 443), ("client.address", "10.0.3.7"),
                ("user_agent.original", "Mozilla/5.0 (X11; Linux x86_64) Firefox/128.0"),
                ("network.protocol.version", "1.1"), ("order.items", rng.randrange(1, 9)),
                ("order.currency", "EUR"),
            ):  # fmt: skip
                ingest._attr(span, key, value)
            if n % 10 == 0:
                event = span.events.add()
                event.name, event.time_unix_nano = "cache miss", span.start_time_unix_nano + 10
                kv = event.attributes.add()
                kv.key, kv.value.string_value = "cache.key", f"order:{n}"
        bodies.append(request.SerializeToString())
    return bodies


def best_microseconds(bodies: list[bytes], rounds: int) -> float:
    requests = []
    for body in bodies:
        request = ExportTraceServiceRequest()
        request.ParseFromString(body)
        requests.append(request)
    best = float("inf")
    for _ in range(rounds):
        started = time.perf_counter()
        for request in requests:
            normalize_traces(request, 1)
        best = min(best, (time.perf_counter() - started) / len(requests))
    return best * 1e6


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=9)
    args = parser.parse_args(argv)
    workloads = {
        "bench": ingest.build_workload(args.requests, 150, 50).bodies,
        "sdk": sdk_requests(args.requests),
    }
    print("| requests | µs per 400-span request (best of rounds) |")
    print("|---|---:|")
    for name, bodies in workloads.items():
        print(f"| {name} | {best_microseconds(bodies, args.rounds):,.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
