"""Webhook delivery from the outbox (the Delivery table).

A sender claims due rows with `FOR UPDATE SKIP LOCKED` and commits the
claim as a lease (claimed_until, claim_token) before it sends, so several
senders never post the same row at once, and a sender killed mid-send
leaves a row that another claims again when the lease runs out. Rows of a
batch are sent one after another, so each row's lease is renewed (only if
the claim is still ours) just before its request, and the request cannot
outlast the lease. Each attempt is recorded with its outcome; the result is
written only while the claim is still ours (the token matches).

Retries: 5xx, 408, 429, timeouts and connection errors are retried with
exponential backoff and full jitter, never sooner than a Retry-After; other
4xx (and refused addresses) are not. An unexpected error while sending is
recorded as a failed attempt and retried, so one broken row cannot stop the
rows behind it. A delivery still failing when its retry window
(EVENTSCOPE_WEBHOOK_RETRY_HOURS) ends is given up; the last attempt happens
at the end of the window.
"""

import asyncio
import contextlib
import datetime as dt
import logging
import random
import time
import uuid

from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import close_old_connections, connection, transaction
from django.utils import timezone

from collector import notify
from dashboard.alerts.models import Attempt, Delivery, DeliveryStatus
from dashboard.alerts.transports import TransportError, transport_for

log = logging.getLogger(__name__)

BACKOFF_FIRST_SECONDS = 5.0
BACKOFF_MAX_SECONDS = 30 * 60.0
RETRY_AFTER_MAX_SECONDS = 6 * 3600.0
CLAIM_BATCH = 20
POLL_SECONDS = 1.0


def lease() -> dt.timedelta:
    """How long a claim lasts. A request ends within WEBHOOK_TIMEOUT_SECONDS
    in all (the outbound client's hard limit), so a lease renewed just
    before it outlives it, with room left to record the outcome."""
    return dt.timedelta(seconds=3 * settings.WEBHOOK_TIMEOUT_SECONDS)


def backoff(attempt: int, rng: random.Random = random) -> float:
    """Seconds before retry number `attempt` (1 = the first retry): exponential,
    with jitter between half and the full step so receivers coming back up are
    not hit by every sender at once."""
    step = min(BACKOFF_MAX_SECONDS, BACKOFF_FIRST_SECONDS * 2 ** (attempt - 1))
    return step * (0.5 + rng.random() / 2)


def claim(now: dt.datetime | None = None, limit: int = CLAIM_BATCH) -> list[tuple[int, uuid.UUID]]:
    """Claim up to `limit` due deliveries; returns (id, claim token) pairs. Commits."""
    now = now or timezone.now()
    token = uuid.uuid4()
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(
            """UPDATE alerts_delivery SET claimed_until = %s, claim_token = %s
               WHERE id IN (
                   SELECT id FROM alerts_delivery
                   WHERE status = 'pending' AND next_attempt_at <= %s
                     AND (claimed_until IS NULL OR claimed_until < %s)
                   ORDER BY next_attempt_at
                   LIMIT %s
                   FOR UPDATE SKIP LOCKED)
               RETURNING id""",
            [now + lease(), token, now, now, limit],
        )
        return [(row[0], token) for row in cursor.fetchall()]


def renew(delivery_id: int, token: uuid.UUID, now: dt.datetime) -> bool:
    """Extend our claim on one row from `now`; False when it is no longer ours
    (another sender claimed it after our lease ran out, or it is settled)."""
    return bool(
        Delivery.objects.filter(
            pk=delivery_id, claim_token=token, status=DeliveryStatus.PENDING
        ).update(claimed_until=now + lease())
    )


def send(delivery_id: int, token: uuid.UUID, now: dt.datetime | None = None) -> Attempt | None:
    """Post one claimed delivery and record the attempt; None if the claim was lost."""
    started = now or timezone.now()
    if not renew(delivery_id, token, started):
        return None
    delivery = Delivery.objects.select_related("webhook").filter(pk=delivery_id).first()
    if delivery is None:  # its webhook was deleted meanwhile
        return None
    clock = time.monotonic()
    error = None
    try:
        response = transport_for(delivery.webhook).notify(
            delivery.message_id, delivery.body, started
        )
        status_code, duration = response.status_code, response.elapsed_ms
    except TransportError as exc:
        error = exc
        status_code, duration = exc.status_code, exc.duration_ms
    except Exception as exc:
        # Something nobody foresaw (a bug, a hand-edited row) costs this row
        # one attempt, retried like a network error; left to escape, it would
        # end the pass and the row, still due, would be first in the next one.
        log.exception("webhook %s delivery %s: unexpected error", delivery.webhook_id, delivery.pk)
        status_code, duration = None, (time.monotonic() - clock) * 1000
        error = TransportError(
            f"unexpected error: {type(exc).__name__}: {exc}", duration_ms=duration
        )
    return record(delivery, token, started, status_code, duration, error)


def record(delivery, token, at, status_code, duration_ms, error: TransportError | None):
    """Store an attempt and the delivery's next state, if the claim is still ours."""
    with transaction.atomic():
        current = (
            Delivery.objects.select_for_update().filter(pk=delivery.pk, claim_token=token).first()
        )
        if current is None:
            return None
        current.attempt_count += 1
        current.claimed_until = None
        current.claim_token = None
        next_retry = None
        if error is None:
            current.status = DeliveryStatus.DELIVERED
            current.delivered_at = at
            current.last_error = ""
        else:
            current.last_error = error.message
            done = at + dt.timedelta(milliseconds=duration_ms)
            if error.permanent or done >= current.give_up_at:
                current.status = DeliveryStatus.FAILED
                if not error.permanent and current.attempt_count > 1:
                    current.last_error = (
                        f"gave up after {current.attempt_count} attempts: {error.message}"
                    )
            else:
                delay = backoff(current.attempt_count)
                if error.retry_after is not None:
                    delay = max(delay, min(error.retry_after, RETRY_AFTER_MAX_SECONDS))
                next_retry = min(done + dt.timedelta(seconds=delay), current.give_up_at)
                current.next_attempt_at = next_retry
        current.save()
        attempt = Attempt.objects.create(
            delivery=current,
            at=at,
            status_code=status_code,
            error=error.message if error else "",
            duration_ms=round(duration_ms, 1),
            next_retry_at=next_retry,
        )
        with connection.cursor() as cursor:
            notify.send(cursor, current.project_id, notify.ALERTS)
    if error is not None:
        log.info(
            "webhook %s delivery %s attempt %s failed: %s%s",
            delivery.webhook_id,
            delivery.pk,
            current.attempt_count,
            error.message,
            f"; retry at {next_retry:%H:%M:%S}" if next_retry else "; not retried",
        )
    return attempt


def deliver_due(now: dt.datetime | None = None) -> int:
    """Claim and send every due delivery once; returns how many attempts were made."""
    attempts = 0
    while True:
        claimed = claim(now)
        for delivery_id, token in claimed:
            try:
                if send(delivery_id, token, now) is not None:
                    attempts += 1
            except Exception:
                # Recording failed (the database, most likely): the row stays
                # claimed until its lease ends, and the others still go out.
                log.exception("webhook delivery %s could not be recorded", delivery_id)
        if len(claimed) < CLAIM_BATCH:
            return attempts


def _deliver_in_thread() -> int:
    close_old_connections()
    try:
        return deliver_due()
    finally:
        close_old_connections()


async def run(stop: asyncio.Event) -> None:
    """The worker loop: deliver whatever is due, about once a second."""
    log.info("webhook sender started")
    while not stop.is_set():
        try:
            await sync_to_async(_deliver_in_thread, thread_sensitive=False)()
        except Exception:
            log.exception("webhook delivery pass failed")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), POLL_SECONDS)
