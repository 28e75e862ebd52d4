"""Delivery from the outbox to a real local receiver: retries, backoff,
Retry-After, give-up, leases, and a sender killed between claim and send."""

import datetime as dt
import email.utils
import signal
import threading
import time

import pytest
from django.db import connection, transaction

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


def test_an_http_date_retry_after_is_honoured(project, receiver, t0):
    later = email.utils.format_datetime(t0 + 300 * S, usegmt=True)  # "Tue, 01 Dec ... GMT"
    receiver.script(Reply(503, headers={"Retry-After": later}))
    delivery = queue(project, receiver.url, t0)
    sender.deliver_due(t0)
    delivery.refresh_from_db()
    assert delivery.status == "pending"
    assert t0 + 300 * S <= delivery.next_attempt_at < t0 + 302 * S
    assert sender.deliver_due(t0 + 299 * S) == 0
    assert sender.deliver_due(delivery.next_attempt_at) == 1


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


def test_a_receiver_dribbling_its_answer_is_cut_off_and_recorded_as_a_timeout(
    project, receiver, settings, t0
):
    settings.WEBHOOK_TIMEOUT_SECONDS = 1
    receiver.script(Reply(200, dribble=8))
    delivery = queue(project, receiver.url, t0)
    started = time.monotonic()
    assert sender.deliver_due(t0) == 1
    assert time.monotonic() - started < 2
    delivery.refresh_from_db()
    assert delivery.status == "pending" and delivery.last_error == "timed out"
    (attempt,) = delivery.attempts.all()
    assert attempt.status_code is None and 900 <= attempt.duration_ms < 1600
    assert attempt.next_retry_at is not None


def test_one_broken_webhook_does_not_stop_the_others(project, receiver, t0):
    # A secret edited by hand in the database is not valid base64: signing fails.
    broken = Webhook.objects.create(project=project, name="bad", url=receiver.url, secret="whsec_!")
    first = outbox.enqueue(broken, outbox.sample_notification(broken, t0), t0 - S)
    second = queue(project, receiver.url, t0)
    assert sender.deliver_due(t0) == 2
    first.refresh_from_db()
    second.refresh_from_db()
    assert second.status == "delivered" and len(receiver.requests) == 1
    assert first.status == "pending" and first.attempt_count == 1
    assert first.last_error.startswith("unexpected error: Error: ")
    assert first.next_attempt_at > t0  # retried later, not first in line again at once
    (attempt,) = first.attempts.all()
    assert attempt.status_code is None and attempt.next_retry_at == first.next_attempt_at


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
    ((_, first_token),) = sender.claim(t0)
    assert sender.claim(t0 + S) == []
    later = t0 + sender.lease() + S
    ((reclaimed, second_token),) = sender.claim(later)
    assert reclaimed == delivery.pk and second_token != first_token
    # The first claimant, coming back late, posts nothing and records nothing.
    assert sender.send(delivery.pk, first_token, later) is None
    assert receiver.requests == [] and not Attempt.objects.exists()
    assert sender.send(delivery.pk, second_token, later).ok
    assert len(receiver.requests) == 1


def in_thread(work):
    """Run `work` on its own thread, so with its own database connection."""
    result = {}

    def run():
        try:
            result["value"] = work()
        finally:
            connection.close()

    thread = threading.Thread(target=run)
    thread.start()
    return thread, result


def test_two_senders_claiming_at_once_get_disjoint_rows(transactional_db, project, receiver, t0):
    due = {queue(project, receiver.url, t0).pk for _ in range(6)}
    holding, finish = threading.Event(), threading.Event()

    def first_sender():
        # Its claim stays uncommitted (rows locked) while the other one claims.
        with transaction.atomic():
            claimed = sender.claim(t0, limit=3)
            holding.set()
            finish.wait(10)
        return claimed

    thread, first = in_thread(first_sender)
    assert holding.wait(10)
    second = sender.claim(t0, limit=10)
    finish.set()
    thread.join(10)
    a, b = {pk for pk, _ in first["value"]}, {pk for pk, _ in second}
    assert len(a) == 3 and len(b) == 3 and a.isdisjoint(b) and a | b == due


def test_a_row_sent_late_in_its_batch_is_not_claimed_again_while_it_is_posted(
    transactional_db, project, receiver, t0
):
    first = queue(project, receiver.url, t0)
    last = queue(project, receiver.url, t0)
    claimed = dict(sender.claim(t0))
    # The batch's earlier rows took the whole lease; this row's turn comes after it.
    turn = t0 + sender.lease() + S
    receiver.hold.set()  # the POST stays in flight until released
    thread, result = in_thread(lambda: sender.send(last.pk, claimed[last.pk], turn))
    assert receiver.arrived.wait(10)
    try:
        # Its lease was renewed when its turn came; the first row's was not.
        assert [pk for pk, _ in sender.claim(turn + S)] == [first.pk]
    finally:
        receiver.release.set()
        thread.join(20)
    assert result["value"] is not None
    last.refresh_from_db()
    assert last.attempt_count == 1 and last.claim_token is None


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
