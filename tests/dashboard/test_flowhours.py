"""Hourly flow rollups: long windows read whole hours from the compacted table
and give exactly the figures the minute rows give."""

import datetime as dt
import time

import pytest
from django.db import connection

from dashboard.flow import hours as flowhours
from dashboard.flow import queries as flowgraph
from tests.dashboard.world import order_journey, store, traces_batch

pytestmark = pytest.mark.usefixtures("telemetry_db")

HOUR_NS = 3600 * 10**9


def graph_from_minutes(project_id, since, until):
    """The reference: the same graph with the hourly table out of the picture."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM dashboard_flowhour_state")
        assert cursor.fetchone()[0] == 0
    return flowgraph.flow_graph(project_id, since, until, now=until)


def test_week_graph_from_hours_equals_the_graph_from_minutes(project):
    now = time.time_ns()
    batches = [
        traces_batch(order_journey(event_id=f"e{i}", start_ns=now - ago * HOUR_NS)[0], project.id)
        for i, ago in enumerate((0.1, 0.5, 2.5, 2.6, 30, 100, 160))
    ]
    store(*batches)
    until = dt.datetime.now(dt.UTC)
    since = until - dt.timedelta(days=7)
    expected = graph_from_minutes(project.id, since, until)
    summed = flowhours.compact_now()
    assert summed is not None
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(DISTINCT hour) FROM dashboard_flowhour")
        assert cursor.fetchone()[0] >= 4  # the older orders were compacted
        sql, _ = flowgraph.window_rows(cursor, project.id, since, until)
    assert "dashboard_flowhour" in sql
    actual = flowgraph.flow_graph(project.id, since, until, now=until)
    assert actual["edges"] == expected["edges"]
    publish = next(e for e in actual["edges"] if e["kind"] == "publish")
    assert publish["count"] == 7


def test_compaction_is_idempotent_and_refreshes_the_last_hour(project):
    store(traces_batch(order_journey(start_ns=time.time_ns() - 3 * HOUR_NS)[0], project.id))
    flowhours.compact_now()
    flowhours.compact_now()
    with connection.cursor() as cursor:
        cursor.execute("SELECT sum(count) FROM dashboard_flowhour WHERE kind = 'publish'")
        assert cursor.fetchone()[0] == 1


def test_short_windows_read_minutes_only(project):
    flowhours.compact_now()
    until = dt.datetime.now(dt.UTC)
    with connection.cursor() as cursor:
        sql, _ = flowgraph.window_rows(cursor, project.id, until - dt.timedelta(hours=1), until)
    assert "dashboard_flowhour" not in sql
