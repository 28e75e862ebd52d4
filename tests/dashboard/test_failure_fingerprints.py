"""Failure groups by fingerprint, from OTLP sent to the real receiver and writer.

"carrier rejected the address of ord-000195" (…196, …197) is one failure
with many ids: one group, counted whole, with a trend across the window.
"""

import asyncio
import importlib
import json
import threading
import time

import httpx
import psycopg
import pytest
from django.db import connection

from collector import fingerprint
from collector.db import conninfo
from tests.collector.receiver_harness import http_receiver, running_writer
from tests.dashboard.world import (
    KIND_CONSUMER,
    messaging,
    new_span_id,
    new_trace_id,
    request,
    span,
)

pytestmark = pytest.mark.usefixtures("telemetry_db")

MINUTE_NS = 60 * 10**9


def send_otlp(token: str, *documents: dict) -> None:
    """POST each OTLP JSON document to the real OTLP/HTTP receiver backed by the real writer."""

    async def run():
        async with running_writer() as writer, http_receiver(writer) as url:
            async with httpx.AsyncClient() as client:
                for document in documents:
                    response = await client.post(
                        url + "/v1/traces",
                        content=json.dumps(document).encode(),
                        headers={
                            "content-type": "application/json",
                            "authorization": f"Bearer {token}",
                        },
                    )
                    assert response.status_code == 200, response.text

    errors = []

    def target():
        try:
            asyncio.run(run())
        except BaseException as exc:
            errors.append(exc)

    worker = threading.Thread(target=target)
    worker.start()
    worker.join()
    if errors:
        raise errors[0]


def failed_consume(start_ns, message, event_id, error_type=None, exception_type=None, group="ship"):
    """One shipping consumer span that failed on an order, as OTLP JSON."""
    attrs = messaging("kafka", "orders", "process", group, event_id)
    if error_type:
        attrs["error.type"] = error_type
    out = span(
        new_trace_id(),
        new_span_id(),
        "orders process",
        KIND_CONSUMER,
        start_ns,
        4,
        attrs=attrs,
        error=message,
    )
    if exception_type:
        out["events"] = [
            {
                "timeUnixNano": str(start_ns + 1000),
                "name": "exception",
                "attributes": [
                    {"key": "exception.type", "value": {"stringValue": exception_type}},
                    {"key": "exception.message", "value": {"stringValue": message}},
                ],
            }
        ]
    return out


def twenty_carrier_failures(now_ns: int) -> list[dict]:
    """20 failures, differing only in the order id, one every 2.5 minutes over 50 minutes."""
    return [
        failed_consume(
            now_ns - 55 * MINUTE_NS + i * 150 * 10**9,
            f"carrier rejected the address of ord-{195 + i:06d}",
            f"evt-{195 + i}",
        )
        for i in range(20)
    ]


def test_failures_that_differ_only_in_ids_are_one_group_with_a_real_trend(
    client, viewer, ingest_token
):
    now = time.time_ns()
    spans = twenty_carrier_failures(now)
    spans.append(failed_consume(now - 5 * MINUTE_NS, "label printer offline", "evt-900"))
    send_otlp(ingest_token, request({"shipping": spans}))
    client.force_login(viewer)

    groups = client.get("/api/failures?group_by=error&window=1h").json()["items"]
    assert [(g["error"], g["count"]) for g in groups] == [
        ("carrier rejected the address of <id>", 20),
        ("label printer offline", 1),
    ]
    carrier = groups[0]
    assert (carrier["service"], carrier["channel"], carrier["system"], carrier["group"]) == (
        "shipping",
        "orders",
        "kafka",
        "ship",
    )
    assert carrier["example_error"] in {
        f"carrier rejected the address of ord-{195 + i:06d}" for i in range(20)
    }
    # The trend covers the whole hour: 30 buckets of 2 minutes, 20 failures in many of them.
    assert len(carrier["trend"]) == 30 and sum(carrier["trend"]) == 20
    assert sum(1 for count in carrier["trend"] if count) > 10
    assert carrier["first_seen"] < carrier["last_seen"]
    assert (carrier["first"], carrier["last"]) == (carrier["first_seen"], carrier["last_seen"])
    assert carrier["examples"] and set(carrier["examples"]) <= {f"evt-{195 + i}" for i in range(20)}

    # The group's own list: its 20 failures and nothing else, paged.
    seen, cursor = [], ""
    while True:
        page = client.get(
            f"/api/failures?window=1h&limit=7&fingerprint={carrier['fingerprint']}{cursor}"
        ).json()
        seen += page["items"]
        if not page["next_cursor"]:
            break
        cursor = f"&cursor={page['next_cursor']}"
    assert sorted(item["event_id"] for item in seen) == sorted(f"evt-{195 + i}" for i in range(20))
    assert {item["fingerprint"] for item in seen} == {carrier["fingerprint"]}
    assert [item["time"] for item in seen] == sorted((item["time"] for item in seen), reverse=True)


def test_the_same_text_with_different_error_types_is_different_groups(client, viewer, ingest_token):
    now = time.time_ns()
    message = "order ord-000001 could not be shipped"
    spans = [
        failed_consume(now - 9 * 10**9, message, "evt-1", error_type="TimeoutError"),
        failed_consume(now - 8 * 10**9, message.replace("01", "02"), "evt-2", "TimeoutError"),
        failed_consume(now - 7 * 10**9, message, "evt-3", exception_type="ConnectionRefusedError"),
        failed_consume(now - 6 * 10**9, message, "evt-4"),
    ]
    send_otlp(ingest_token, request({"shipping": spans}))
    client.force_login(viewer)

    groups = client.get("/api/failures?group_by=error&window=1h").json()["items"]
    by_type = {g["error_type"]: g for g in groups}
    assert sorted((g["error_type"], g["count"]) for g in groups) == [
        ("", 1),
        ("ConnectionRefusedError", 1),
        ("TimeoutError", 2),
    ]
    assert {g["error"] for g in groups} == {"order <id> could not be shipped"}
    assert len({g["fingerprint"] for g in groups}) == 3
    refused = by_type["ConnectionRefusedError"]["fingerprint"]
    items = client.get(f"/api/failures?window=1h&fingerprint={refused}").json()["items"]
    assert [(i["event_id"], i["error_type"]) for i in items] == [
        ("evt-3", "ConnectionRefusedError")
    ]


def test_the_page_shows_the_template_an_example_and_links_to_the_group(
    client, viewer, ingest_token, project
):
    send_otlp(ingest_token, request({"shipping": twenty_carrier_failures(time.time_ns())}))
    client.force_login(viewer)
    html = client.get("/failures/?window=1h").content.decode()
    table = html[html.index('id="failure-groups"') : html.index('id="failure-rows"')]
    assert table.count("<tr data-fingerprint=") == 1
    assert "carrier rejected the address of &lt;id&gt;" in table
    assert "e.g. carrier rejected the address of ord-000" in table
    fp = client.get("/api/failures?group_by=error&window=1h").json()["items"][0]["fingerprint"]
    assert f"fingerprint={fp}" in table
    assert "/events/evt-" in table
    narrowed = client.get(f"/failures/?window=1h&fingerprint={fp}").content.decode()
    rows = narrowed[narrowed.index('id="failure-rows"') :]
    assert rows.count("carrier rejected the address of ord-") == 20


def test_a_fingerprint_that_is_not_one_is_a_clear_400(client, viewer):
    client.force_login(viewer)
    response = client.get("/api/failures?fingerprint=not-hex")
    assert response.status_code == 400
    assert "fingerprint" in response.json()["error"]


def test_the_migration_regroups_rollups_older_than_the_stored_failures(project):
    """Rollups outlive raw rows: those minutes are regrouped by their messages' templates."""
    migration = importlib.import_module("collector.migrations.0006_failure_fingerprints")
    with connection.cursor() as cursor:
        for i, minute in enumerate(("2026-01-01 10:00Z", "2026-01-01 10:00Z", "2026-01-01 10:07Z")):
            cursor.execute(
                "INSERT INTO collector_failurerollup (project_id, minute, group_key, service, "
                "channel, system, consumer_group, error, count, deadlettered, first_time, "
                "last_time) VALUES (%s, %s, %s, 'shipping', 'orders', 'kafka', 'ship', %s, 2, 1, "
                "%s, %s)",
                [
                    project.id,
                    minute,
                    bytes([i]),
                    f"carrier rejected the address of ord-{195 + i:06d}",
                    minute,
                    minute,
                ],
            )
    with psycopg.connect(conninfo()) as conn:
        assert migration.rebuild(conn) == 2  # two minutes of one group
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT error, fingerprint, sum(count), sum(deadlettered), min(example_error) "
            "FROM collector_failurerollup GROUP BY 1, 2"
        )
        rows = cursor.fetchall()
    template, fp = fingerprint.of("carrier rejected the address of ord-000195")
    assert rows == [(template, fp, 6, 3, "carrier rejected the address of ord-000195")]
