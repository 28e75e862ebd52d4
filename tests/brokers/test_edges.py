"""Consumer lag joined onto flow graph consume edges."""

import datetime as dt

from collector.brokers import samples
from collector.brokers.offsets import rabbitmq_reading
from collector.brokers.samples import Reading
from dashboard.lag.edges import lag_for_edges

NOW = dt.datetime.now(dt.UTC).replace(microsecond=0)


def test_each_consume_edge_gets_its_groups_lag_in_one_query(
    lag_db, project, other_project, django_assert_num_queries
):
    for age, committed in ((120, 100), (60, 100), (0, 100)):
        t = NOW - dt.timedelta(seconds=age)
        samples.store_sync(
            project.id,
            [Reading("kafka", "orders", "billing", "0", 400, committed, time=t.timestamp())],
            "test",
            now=t,
            window=200,
        )
    samples.store_sync(
        project.id,
        [rabbitmq_reading("/", "payments", 7, 1), rabbitmq_reading("eu", "payments", 5, 0)],
        "test",
    )
    samples.store_sync(other_project.id, [Reading("kafka", "orders", "spy", lag=9)], "test")
    keys = [
        ("kafka", "orders", "billing"),
        ("rabbitmq", "payments", ""),
        ("rabbitmq", "payments", "payments-worker"),  # a queue has no group of its own
        ("kafka", "orders", "spy"),  # another project's
        ("kafka", "refunds", "billing"),  # not reported
    ]
    with django_assert_num_queries(1):
        found = lag_for_edges(project.id, keys)
    assert found[("kafka", "orders", "billing")]["lag"] == 300
    assert found[("kafka", "orders", "billing")]["lag_status"] == "error"
    assert found[("kafka", "orders", "billing")]["lag_seconds"] > 0
    # the same queue in two vhosts: one edge carries both
    assert found[("rabbitmq", "payments", "")] == {
        "lag": 13,
        "lag_seconds": None,
        "lag_status": "ok",
    }
    assert found[("rabbitmq", "payments", "payments-worker")]["lag"] == 13
    assert set(found) == set(keys[:3])
    assert lag_for_edges(project.id, []) == {}
