"""An event received in a batch: its journey holds its own stages and the batch
receive, never the processing of the other messages of the batch.

Four orders are published in four traces; email receives them in one receive
span linking the four publishes, then processes each in a span of its own
under the receive, linked to its message's publish (the OTel messaging
conventions' batch shape, as the demo's email consumer exports it).
"""

import time

import pytest

from tests.dashboard.world import (
    KIND_CONSUMER,
    KIND_PRODUCER,
    messaging,
    new_span_id,
    new_trace_id,
    request,
    span,
    store,
    traces_batch,
)

pytestmark = pytest.mark.usefixtures("telemetry_db")

ORDERS = ["ord-a", "ord-b", "ord-c", "ord-d"]


def store_batch(project_id: int) -> dict:
    """Store the four publishes and the batch; returns the ids by name."""
    start = time.time_ns() - 5_000_000_000
    ids = {"batch_trace": new_trace_id(), "receive": new_span_id()}
    publishes = []
    for n, order in enumerate(ORDERS):
        ids[order] = {"trace": new_trace_id(), "publish": new_span_id(), "process": new_span_id()}
        publishes.append(
            span(
                ids[order]["trace"],
                ids[order]["publish"],
                "orders publish",
                KIND_PRODUCER,
                start + n * 1_000_000,
                2,
                attrs=messaging("kafka", "orders", "send", message_id=order),
            )
        )
    batch_trace, receive = ids["batch_trace"], ids["receive"]
    consumer = [
        span(
            batch_trace,
            receive,
            "orders receive",
            KIND_CONSUMER,
            start + 50_000_000,
            3,
            attrs=messaging(
                "kafka",
                "orders",
                "receive",
                "email",
                **{"messaging.batch.message_count": len(ORDERS)},
            ),
            links=[(ids[o]["trace"], ids[o]["publish"]) for o in ORDERS],
        )  # fmt: skip
    ]
    for n, order in enumerate(ORDERS):
        consumer.append(
            span(
                batch_trace,
                ids[order]["process"],
                "orders process",
                KIND_CONSUMER,
                start + 60_000_000 + n * 10_000_000,
                8,
                parent=receive,
                attrs=messaging("kafka", "orders", "process", "email", order),
                error="550 mailbox unavailable" if order == "ord-b" else None,
                links=[(ids[order]["trace"], ids[order]["publish"])],
            )
        )
    store(
        traces_batch(request({"orders": publishes}), project_id),
        traces_batch(request({"email": consumer}), project_id),
    )
    return ids


@pytest.mark.parametrize("order", ORDERS)
def test_each_event_of_a_batch_has_exactly_its_own_stages(client, viewer, project, order):
    ids = store_batch(project.id)
    client.force_login(viewer)
    body = client.get(f"/api/events/{order}").json()
    stages = [
        (s["stage"], s["service"], s["event_id"], s["span_id"], s.get("batch_size"))
        for s in body["stages"]
    ]
    outcome = "failed" if order == "ord-b" else "processed"
    assert stages == [
        ("published", "orders", order, ids[order]["publish"], None),
        ("received", "email", None, ids["receive"], 4),
        (outcome, "email", order, ids[order]["process"], None),
    ]
    receive = body["stages"][1]
    assert receive["trace_id"] == ids["batch_trace"]
    assert [e["event_id"] for e in body["errors"]] == (["ord-b"] if order == "ord-b" else [])
    # The batch trace's spans: the receive and this event's processing, no other message's.
    spans = {s["span_id"] for s in body["spans"]}
    assert spans == {ids[order]["publish"], ids["receive"], ids[order]["process"]}


def test_the_event_page_shows_the_batch_receive_with_a_link_to_the_batch(client, viewer, project):
    ids = store_batch(project.id)
    client.force_login(viewer)
    page = client.get("/events/ord-a").content.decode()
    table = page[page.index('id="journey-stages"') : page.index("</table>")]
    assert table.count('<tr class="stage-') == 3
    assert table.count("stage-processed") == 1 and "stage-failed" not in table
    assert "in a batch of 4" in table
    assert f'href="/traces/{ids["batch_trace"]}"' in table
    # The batch page itself still shows the whole batch.
    trace = client.get(f"/api/traces/{ids['batch_trace']}").json()
    outcomes = sorted((s["event_id"], s["stage"]) for s in trace["stages"] if s["event_id"])
    assert ("ord-b", "failed") in outcomes and len(trace["stages"]) >= 5
