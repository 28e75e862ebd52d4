"""Replays asked to retry are jobs of the worker: a receiver that fails twice
gets the event on the third attempt; a 4xx settles it at once."""

import pytest

from dashboard.replays import jobs
from dashboard.replays.models import Replay
from tests.alerts.conftest import Reply
from tests.alerts.conftest import receiver as receiver  # noqa: F401 - the real local receiver
from tests.dashboard.test_replay import hook as hook  # noqa: F401
from tests.dashboard.test_replay import post_replay
from tests.dashboard.test_replay import stored as stored  # noqa: F401

pytestmark = pytest.mark.usefixtures("telemetry_db")


def run_until_settled(monkeypatch, attempts: int = 20) -> None:
    """The worker's loop, one pass at a time, with the backoff shortened to nothing."""
    monkeypatch.setattr(jobs, "BACKOFF_SECONDS", 0.0)
    for _ in range(attempts):
        jobs.run_due()
        if not Replay.objects.filter(status="queued").exists():
            return
    raise AssertionError("the replay never settled")


def test_a_retried_replay_is_delivered_after_two_failures(
    client, editor, stored, hook, receiver, monkeypatch
):
    receiver.script(Reply(503, body=b"busy"), Reply(500, body=b"down"))
    client.force_login(editor)
    response = post_replay(client, "ord-7", {"webhook": hook.pk, "retry": True})
    assert response.status_code == 202
    queued = response.json()
    assert (queued["status"], queued["attempts"], queued["retry"]) == ("queued", 0, True)
    assert receiver.requests == []  # the worker sends it, not the request

    run_until_settled(monkeypatch)
    [listed] = client.get("/api/events/ord-7/replays").json()["items"]
    assert (listed["status"], listed["attempts"], listed["http_status"]) == ("delivered", 3, 200)
    assert listed["next_attempt_at"] is None and listed["error"] is None
    assert len(receiver.requests) == 3
    ids = {r.headers["webhook-id"] for r in receiver.requests}
    assert ids == {queued["id"]}  # the same replay each time, so a receiver can deduplicate


def test_a_client_error_is_not_retried(client, editor, stored, hook, receiver, monkeypatch):
    receiver.script(Reply(410, body=b"gone"))
    client.force_login(editor)
    post_replay(client, "ord-7", {"webhook": hook.pk, "retry": True})
    run_until_settled(monkeypatch)
    record = Replay.objects.get()
    assert (record.status, record.attempts, record.http_status) == ("failed", 1, 410)
    assert len(receiver.requests) == 1


def test_retries_stop_after_the_last_attempt(client, editor, stored, hook, receiver, monkeypatch):
    monkeypatch.setattr(jobs, "RETRY_ATTEMPTS", 3)
    receiver.script(*[Reply(500)] * 5)
    client.force_login(editor)
    post_replay(client, "ord-7", {"webhook": hook.pk, "retry": True})
    run_until_settled(monkeypatch)
    record = Replay.objects.get()
    assert (record.status, record.attempts, record.http_status) == ("failed", 3, 500)
    assert len(receiver.requests) == 3


def test_retry_must_be_a_boolean(client, editor, stored, hook):
    client.force_login(editor)
    response = post_replay(client, "ord-7", {"webhook": hook.pk, "retry": "yes"})
    assert response.status_code == 400 and "retry" in response.json()["error"]


def test_the_event_page_queues_a_replay_that_retries(
    client, editor, stored, hook, receiver, monkeypatch
):
    receiver.script(Reply(502))
    client.force_login(editor)
    page = client.get("/events/ord-7").content.decode()
    assert 'id="replay-retry"' in page
    response = client.post(
        "/events/ord-7", {"webhook": hook.pk, "retry": "1"}, HTTP_HX_REQUEST="true"
    )
    assert "the worker sends it and retries" in response.content.decode()
    run_until_settled(monkeypatch)
    record = Replay.objects.get()
    assert (record.status, record.attempts) == ("delivered", 2)
