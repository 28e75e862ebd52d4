"""bench/query.py measures real requests: each answers on a small database
shaped like the benchmark's (its edge names), so the bench never times an error."""

import importlib.util
import time
from pathlib import Path

import pytest

from tests.dashboard.test_api_flow import stream

pytestmark = pytest.mark.usefixtures("telemetry_db")

BENCH = Path(__file__).resolve().parent.parent.parent / "bench" / "query.py"


def bench_module():
    spec = importlib.util.spec_from_file_location("bench_query", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_benchmarked_flow_request_answers_with_data(client, viewer, project):

    from tests.dashboard.world import (
        KIND_CONSUMER,
        messaging,
        new_span_id,
        new_trace_id,
        request,
        span,
        store,
        traces_batch,
    )

    stream(project.id, first_s_ago=60, messages=5, topic="topic-00", service="svc-00")
    now = time.time_ns()
    consumes = [
        span(new_trace_id(), new_span_id(), "topic-00 process", KIND_CONSUMER, now - i * 10**9, 3,
             attrs=messaging("kafka", "topic-00", "process", "svc-03"))
        for i in range(4)
    ]  # fmt: skip
    store(traces_batch(request({"svc-03": consumes}), project.id))
    client.force_login(viewer)
    flow_requests = [(label, path) for label, path in bench_module().requests("ab" * 16)
                     if path.startswith("/api/flow")]  # fmt: skip
    assert any("series" in path for _, path in flow_requests)
    for label, path in flow_requests:
        response = client.get(path)
        assert response.status_code == 200, (label, response.content[:300])
        answer = response.json()
        if "series" in path:
            assert sum(p["count"] for p in answer["points"]) == 4, label
        else:
            assert answer["edges"], label


def test_every_benchmarked_search_request_finds_something(client, viewer, project):
    from tests.dashboard.test_search import order_event
    from tests.dashboard.world import events_batch, store, store_order

    trace_no = 1_234_567
    names = {"orders": "svc-00", "payments": "svc-03", "email": "svc-07", "topic": "topic-00"}
    ids = store_order(project.id, event_id=f"evt-{trace_no}", names=names)
    order = f"ord-{trace_no - 1}"
    event = order_event(order, subject=order, data={"order_id": order, "customer": "c-42"})
    store(events_batch([event], project.id))
    client.force_login(viewer)
    measured = [
        (label, path)
        for label, path in bench_module().requests(ids["trace"], trace_no)
        if path.startswith(("/api/search", "/api/traces?", "/search/"))
    ]
    assert len(measured) == 12
    for label, path in measured:
        response = client.get(path)
        assert response.status_code == 200, (label, response.content[:300])
        if path.startswith("/api/"):
            assert response.json()["items"], label
