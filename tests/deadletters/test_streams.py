"""Redis Streams and NATS JetStream dead letters on the running servers: found,
peeked without a trace, redriven to the original stream exactly once."""

import json

import pytest

from dashboard.deadletters.models import Redrive
from tests.deadletters.conftest import TRACE, redrive, run_jobs

pytestmark = [pytest.mark.brokers, pytest.mark.django_db(transaction=True)]


def test_the_dead_letter_stream_is_found_and_peeked(stream_world, viewer_client):
    w = stream_world
    ids = w.dead_letter(3)
    items = viewer_client.get("/api/dead-letters?project=shop&limit=500").json()["items"]
    mine = [q for q in items if q["name"] == w.dlq]
    assert len(mine) == 1 and mine[0]["depth"] == 3 and mine[0]["system"] == w.system
    expected_source = w.source if w.system == "redis" else w.subject
    assert mine[0]["source_channel"] == expected_source
    assert 0 <= mine[0]["oldest_age_seconds"] < 60

    url = f"/api/dead-letters/{w.system}/{w.dlq}/messages?project=shop"
    body = viewer_client.get(url).json()
    assert [m["event_id"] for m in body["items"]] == ids
    first = body["items"][0]
    assert first["error"] == "payment 0 declined"
    assert first["original_channel"] == expected_source
    assert json.loads(first["payload"]) == {"order": 0, "password": "[REDACTED]"}
    assert first["traceparent"].startswith(f"00-{TRACE[:-6]}")
    assert w.depth() == 3


def test_a_redrive_sends_each_dead_letter_back_exactly_once(stream_world, editor_client):
    w = stream_world
    ids = w.dead_letter(25)
    job = redrive(editor_client, system=w.system, dead_letter=w.dlq, rate_per_s=500)
    run_jobs()
    done = Redrive.objects.get(pk=job)
    assert (done.state, done.total, done.moved, done.failed) == ("done", 25, 25, 0)
    assert w.depth() == 0
    got = w.consumed()
    assert sorted(m["ce-id"] for m in got) == sorted(ids)
    assert {m["eventscope-redrive-count"] for m in got} == {"1"}
    assert all(m["traceparent"][3:35].startswith(TRACE[:-6]) for m in got)


def test_a_dry_run_moves_nothing_and_picked_messages_move_alone(stream_world, editor_client):
    w = stream_world
    w.dead_letter(4)
    peeked = editor_client.get(
        f"/api/dead-letters/{w.system}/{w.dlq}/messages?project=shop"
    ).json()["items"]
    dry = redrive(editor_client, system=w.system, dead_letter=w.dlq, dry_run=True)
    run_jobs()
    assert Redrive.objects.get(pk=dry).total == 4 and w.depth() == 4
    picked = [peeked[0]["id"], peeked[2]["id"]]
    job = redrive(editor_client, system=w.system, dead_letter=w.dlq, messages=picked)
    run_jobs()
    assert Redrive.objects.get(pk=job).moved == 2
    assert w.depth() == 2
    assert sorted(m["ce-id"] for m in w.consumed()) == sorted(
        [peeked[0]["event_id"], peeked[2]["event_id"]]
    )
