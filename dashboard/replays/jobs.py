"""The worker loop that sends replays asked to retry (`"retry": true`).

The database is the queue: due replays are claimed with FOR UPDATE SKIP
LOCKED and pushed LEASE ahead while one is being sent, so a worker that dies
mid-send leaves it to the next one after the lease. A timeout, a connection
error or a 5xx/408/429 answer is tried again after a backoff that doubles
(BACKOFF_SECONDS, 2×, 4× … at most BACKOFF_MAX) until RETRY_ATTEMPTS were
made; a 4xx or a refused address settles it as failed at once.
"""

import asyncio
import contextlib
import datetime as dt
import logging

from django.db import close_old_connections, connection, transaction
from django.utils import timezone

from dashboard.journeys.queries import NotFound
from dashboard.replays import send
from dashboard.replays.models import Replay, ReplayStatus

log = logging.getLogger(__name__)

RETRY_ATTEMPTS = 8
BACKOFF_SECONDS = 5.0
BACKOFF_MAX = 600.0
LEASE = dt.timedelta(minutes=2)
POLL_SECONDS = 1.0
BATCH = 10


def claim(limit: int = BATCH) -> list[str]:
    """Ids of due queued replays, leased to this worker."""
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(
            "UPDATE dashboard_replay SET next_attempt_at = now() + %s WHERE id IN ("
            " SELECT id FROM dashboard_replay WHERE status = 'queued' AND next_attempt_at <= now()"
            " ORDER BY next_attempt_at LIMIT %s FOR UPDATE SKIP LOCKED) RETURNING id",
            [LEASE, limit],
        )
        return [row[0] for row in cursor.fetchall()]


def backoff(attempts: int) -> dt.timedelta:
    return dt.timedelta(seconds=min(BACKOFF_MAX, BACKOFF_SECONDS * 2 ** max(0, attempts - 1)))


def send_one(replay_id: str) -> None:
    record = Replay.objects.select_related("webhook", "project").get(pk=replay_id)
    if record.status != ReplayStatus.QUEUED:
        return
    record.attempts += 1
    retry = False
    if record.webhook is None:
        record.status, record.error = ReplayStatus.FAILED, "the webhook was deleted"
    else:
        try:
            envelope = send.envelope_of(record.project_id, record.event_id, record.source)
        except (NotFound, send.NotReplayable, send.AmbiguousSource) as exc:
            record.status, record.error = ReplayStatus.FAILED, f"not sent: {exc}"
        else:
            retry = send.attempt(record, envelope, record.webhook)
    if retry and record.attempts < RETRY_ATTEMPTS:
        # Still queued: the answer of this attempt stays visible until the next.
        record.status = ReplayStatus.QUEUED
        record.next_attempt_at = timezone.now() + backoff(record.attempts)
    else:
        record.next_attempt_at = None
    record.save()


def run_due() -> int:
    sent = 0
    for replay_id in claim():
        try:
            send_one(replay_id)
        except Exception:
            log.exception("replay %s: could not be sent; tried again after the lease", replay_id)
        sent += 1
    return sent


def _run_due_and_close() -> int:
    try:
        return run_due()
    finally:
        close_old_connections()


async def run(stop: asyncio.Event) -> None:
    """The worker loop: send due replays until `stop`."""
    while not stop.is_set():
        try:
            sent = await asyncio.to_thread(_run_due_and_close)
        except Exception as exc:
            log.warning("replays: could not look for work: %s", exc)
            sent = 0
        if not sent:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), POLL_SECONDS)
