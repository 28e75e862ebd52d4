"""Delivery from the outbox to a real local receiver: retries, backoff,
Retry-After, give-up, and a sender killed between claim and send."""

import datetime as dt
import signal
import time

import pytest

from dashboard.alerts import outbox, sender
from dashboard.alerts.models import Attempt, Delivery, Webhook
from tests.alerts.conftest import Reply
from tests.test_commands import command_env, manage

S = dt.timedelta(seconds=1)


def queue(project, url, now):
    hook = Webhook.objects.create(project=project, name="ops", url=url)
    return outbox.enqueue(hook, outbox.sample_notification(hook, now), now)


def run_until_settled(delivery, start, limit=20):
    """Drive the sender through time: at each step, jump to the next retry."""
    now = start
    for _ in range(limit):
        sender.deliver_due(now)
        delivery.refresh_from_db()
        if delivery.status != "pending":
            return delivery
        now = delivery.next_attempt_at
    raise AssertionError("the delivery never settled")


def test_a_receiver_failing_three_times_gets_the_notification_exactly_once_more(
    project, receiver, t0
):
    receiver.script(Reply(500), Reply(502), Reply(503))
    delivery = run_until_settled(queue(project, receiver.url, t0), t0)
    assert delivery.status == "delivered"
    attempts = list(delivery.attempts.all())
    assert [a.status_code for a in attempts] == [500, 502, 503, 200]
    assert sum(a.ok for a in attempts) == 1
    assert len(receiver.requests) == 4
    # One message: the same webhook-id and the same bytes on every attempt.
    assert {r.headers["webhook-id"] for r in receiver.requests} == {delivery.message_id}
    assert len({r.body for r in receiver.requests}) == 1
    # Exponential backoff with jitter: each wait is at least half of 5 s, 10 s, 20 s.
    waits = [(b.at - a.at).total_seconds() for a, b in zip(attempts, attempts[1:], strict=False)]
    assert waits[0] >= 2.5 and waits[1] >= 5 and waits[2] >= 10
    assert attempts[0].next_retry_at == attempts[1].at
    assert sender.deliver_due(t0 + 3600 * S) == 0
    assert len(receiver.requests) == 4


def test_a_400_is_not_retried(project, receiver, t0):
    receiver.script(Reply(400, body=b"no such channel"))
    delivery = queue(project, receiver.url, t0)
    sender.deliver_due(t0)
    delivery.refresh_from_db()
    assert delivery.status == "failed"
    assert delivery.last_error == "HTTP 400: no such channel"
    (attempt,) = delivery.attempts.all()
    assert attempt.status_code == 400 and attempt.next_retry_at is None
    assert sender.deliver_due(t0 + 3600 * S) == 0


@pytest.mark.parametrize("status", [408, 429, 500, 504])
def test_these_answers_are_retried(project, receiver, t0, status):
    receiver.script(Reply(status))
    delivery = queue(project, receiver.url, t0)
    sender.deliver_due(t0)
    delivery.refresh_from_db()
    assert delivery.status == "pending" and delivery.next_attempt_at > t0


def test_429_with_retry_after_is_honoured(project, receiver, t0):
    receiver.script(Reply(429, headers={"Retry-After": "120"}))
    delivery = queue(project, receiver.url, t0)
    sender.deliver_due(t0)
    delivery.refresh_from_db()
    assert delivery.next_attempt_at >= t0 + 120 * S
    assert sender.deliver_due(t0 + 119 * S) == 0
    assert sender.deliver_due(delivery.next_attempt_at) == 1
    delivery.refresh_from_db()
    assert delivery.status == "delivered"


def test_timeouts_and_refused_connections_are_retried(project, receiver, settings, t0):
    settings.WEBHOOK_TIMEOUT_SECONDS = 1
    receiver.script(Reply(200, delay=2.5))
    slow = queue(project, receiver.url, t0)
    closed = queue(project, "http://127.0.0.1:9/hook", t0)  # the discard port: nothing listens
    sender.deliver_due(t0)
    for delivery in (slow, closed):
        delivery.refresh_from_db()
        assert delivery.status == "pending"
    assert slow.last_error == "timed out"
    assert closed.last_error.startswith("connection failed")
    assert Attempt.objects.get(delivery=closed).status_code is None


def test_it_gives_up_at_the_end_of_the_retry_window(project, receiver, settings, t0):
    settings.WEBHOOK_RETRY_HOURS = 1
    receiver.script(*[Reply(503)] * 50)
    delivery = run_until_settled(queue(project, receiver.url, t0), t0, limit=50)
    assert delivery.status == "failed"
    assert delivery.last_error.startswith(f"gave up after {delivery.attempt_count} attempts")
    last = delivery.attempts.last()
    assert last.at == t0 + 3600 * S  # the last try is at the end of the window, not before
    assert delivery.attempt_count >= 5


def test_a_claimed_row_is_not_claimed_twice_until_its_lease_runs_out(project, receiver, t0):
    delivery = queue(project, receiver.url, t0)
    assert [d for d, _ in sender.claim(t0)] == [delivery.pk]
    assert sender.claim(t0 + S) == []
    reclaimed = sender.claim(t0 + sender.lease() + S)
    assert [d for d, _ in reclaimed] == [delivery.pk]
    # The first claimant's result no longer counts.
    first_token = Delivery.objects.get(pk=delivery.pk).claim_token
    assert reclaimed[0][1] == first_token


def test_a_test_send_posts_once_and_records_the_attempt(project, receiver):
    from dashboard.alerts.api import send_test

    hook = Webhook.objects.create(project=project, name="ops", url=receiver.url)
    delivery = send_test(hook)
    assert delivery.status == "delivered" and delivery.event == "test"
    assert receiver.requests[0].json()["type"] == "webhook.test"
    receiver.script(Reply(500))
    failed = send_test(hook)
    assert failed.status == "failed" and failed.last_error == "HTTP 500: ok"


def wait_for(condition, seconds, what):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.mark.timeout(120)
def test_a_worker_killed_between_claim_and_send_still_delivers_after_restart(
    transactional_db, project, receiver
):
    delivery = queue(project, receiver.url, dt.datetime.now(dt.UTC))
    env = command_env(EVENTSCOPE_WEBHOOK_ALLOW_PRIVATE="1", EVENTSCOPE_WEBHOOK_TIMEOUT_SECONDS="2")
    receiver.hold.set()  # the first request hangs: the worker has claimed and is sending
    worker = manage("worker", env=env)
    try:
        if not receiver.arrived.wait(40):
            worker.kill()
            raise AssertionError(f"the worker never sent: {worker.communicate()[0][-2000:]}")
        delivery.refresh_from_db()
        assert delivery.claimed_until is not None and delivery.attempt_count == 0
        worker.send_signal(signal.SIGKILL)
        worker.wait(10)
    finally:
        if worker.poll() is None:
            worker.kill()
    receiver.hold.clear()
    receiver.release.set()
    assert receiver.requests == []  # nothing was answered

    restarted = manage("worker", env=env)
    try:
        wait_for(lambda: Delivery.objects.get(pk=delivery.pk).status == "delivered", 40, "delivery")
    finally:
        restarted.send_signal(signal.SIGTERM)
        output = restarted.communicate(timeout=20)[0]
    delivery.refresh_from_db()
    assert [r.headers["webhook-id"] for r in receiver.requests] == [delivery.message_id]
    (attempt,) = delivery.attempts.all()
    assert attempt.status_code == 200, output[-2000:]
