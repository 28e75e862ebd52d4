"""A 10,000-span trace: one indexed read, a bounded page, and a waterfall that
only puts the visible rows in the DOM."""

import time

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from tests.dashboard.world import store_big_trace

pytestmark = pytest.mark.usefixtures("telemetry_db")
SPANS = 10_000


@pytest.fixture
def big_trace(project):
    return store_big_trace(project.id, SPANS)


def test_a_10k_span_trace_is_served_whole_and_quickly(client, viewer, big_trace):
    client.force_login(viewer)
    with CaptureQueriesContext(connection) as queries:
        began = time.perf_counter()
        body = client.get(f"/api/traces/{big_trace}").json()
        elapsed = time.perf_counter() - began
    assert len(body["spans"]) == SPANS and not body["truncated"]
    assert len([q for q in queries if "collector_span" in q["sql"]]) == 1
    assert elapsed < 5, elapsed
    page = client.get(f"/traces/{big_trace}")
    assert page.status_code == 200
    assert page.content.count(b"wf-row") == 0  # rows are drawn by the browser, on demand
