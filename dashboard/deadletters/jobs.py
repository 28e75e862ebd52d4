"""The worker loop that runs redrives. The database is the queue.

A job is claimed with `FOR UPDATE SKIP LOCKED` and held, while it runs, by a
session-level advisory lock on a connection of its own: if the worker dies
(kill -9, a lost host) PostgreSQL ends that session and releases the lock,
and the next worker to look takes the job over where it stood. Nothing else
needs a lease or a heartbeat.

A first run plans the job: it peeks at the dead-letter queue and writes one
item per message with where it goes (a dry run stops there). Then the
system's Mover moves the items still pending, at the job's rate; before each
move the item is marked `moving`, after the broker confirmed it `moved`. On a
resumed run, a `moving` item whose message is still in the dead-letter queue
was not moved (the broker undid it) and is moved again; one that is gone was.
"""

import asyncio
import contextlib
import logging
import threading
import time

import psycopg
from django.conf import settings
from django.db import close_old_connections, connection, transaction
from django.db.models import F
from django.utils import timezone

from collector import notify
from collector.db import conninfo
from dashboard.deadletters.models import FINISHED, ItemState, Redrive, RedriveItem, State
from dashboard.deadletters.systems import (
    REDRIVE_COUNT,
    REDRIVE_ID,
    Hooks,
    MoveStopped,
    Planned,
    brokers_of,
    continue_trace,
    redrive_count,
    registry,
)

log = logging.getLogger(__name__)

AREA = "redrives"
# Two-key advisory locks: (this namespace, redrive id).
LOCK_NAMESPACE = 0x4552
POLL_SECONDS = 1.0
PARALLEL_JOBS = 4
# A running job re-reads its cancel flag and sends a progress hint at most this often.
CHECK_SECONDS = 0.5
# How late a redrive may run and still catch up (with a short burst).
CATCH_UP_SECONDS = 0.2
# Items marked `moving` ahead in one write, and how often confirmed moves are written.
MARK_AHEAD = 100
FLUSH_SECONDS = 0.25


def claim() -> tuple[int, psycopg.Connection] | None:
    """The id of a queued (or orphaned running) redrive, locked for this worker, and the
    connection holding the lock; None when there is nothing to do."""
    conn = psycopg.connect(conninfo(), connect_timeout=10)
    try:
        with conn.transaction():
            rows = conn.execute(
                "SELECT id FROM deadletters_redrive WHERE state IN ('queued', 'running') "
                "ORDER BY id LIMIT 20 FOR UPDATE SKIP LOCKED"
            ).fetchall()
            for (job_id,) in rows:
                got = conn.execute(
                    "SELECT pg_try_advisory_lock(%s, %s)", (LOCK_NAMESPACE, job_id)
                ).fetchone()[0]
                if got:
                    conn.execute(
                        "UPDATE deadletters_redrive SET state = 'running', runs = runs + 1, "
                        "started_at = coalesce(started_at, now()) WHERE id = %s",
                        (job_id,),
                    )
                    notify.send(conn.cursor(), _project_of(conn, job_id), AREA, redrive=job_id)
                    return job_id, conn
    except BaseException:
        conn.close()
        raise
    conn.close()
    return None


def _project_of(conn, job_id: int) -> int:
    return conn.execute(
        "SELECT project_id FROM deadletters_redrive WHERE id = %s", (job_id,)
    ).fetchone()[0]


def hint(project_id: int, job_id: int) -> None:
    with connection.cursor() as cursor:
        notify.send(cursor, project_id, AREA, redrive=job_id)


class JobHooks(Hooks):
    """Pace, cancel and bookkeeping around each move of one job.

    PostgreSQL commits cost more than a broker's round trip, so the items are
    written in batches: up to MARK_AHEAD items are marked `moving` in one
    UPDATE before the first of them moves, and moves are recorded every
    FLUSH_SECONDS (with the time each was confirmed). A worker killed between
    two flushes leaves confirmed moves marked `moving`; the resumed run finds
    their messages gone from the dead-letter queue and counts them moved.
    """

    def __init__(self, job: Redrive, mover, stopping: threading.Event, pending: list[Planned]):
        self.job, self.mover, self.stopping = job, mover, stopping
        self.rate = job.rate_per_s
        self.next_slot = time.monotonic()
        self.begun: set[int] = set()
        self.checked = 0.0
        self.cancelled = False
        self.current: RedriveItem | None = None
        self.items = {i.pk: i for i in job.items.all()}
        self.order = [p.item_id for p in pending]
        self.already_moving = {
            p.item_id for p in pending if self.items[p.item_id].state == ItemState.MOVING
        }
        self.marked: set[int] = set(self.already_moving)
        self.confirmed: list[tuple[int, object, str]] = []
        self.flushed = time.monotonic()

    def _check(self) -> bool:
        now = time.monotonic()
        if now - self.checked >= CHECK_SECONDS:
            self.checked = now
            self.flush()
            self.cancelled = Redrive.objects.filter(pk=self.job.pk, cancel_requested=True).exists()
            hint(self.job.project_id, self.job.pk)
        return not (self.cancelled or self.stopping.is_set())

    def begin(self, planned: Planned) -> bool:
        if not self._check():
            return False
        # One message every 1 / rate seconds. Lateness up to CATCH_UP_SECONDS
        # (sleep overshoot, a slow answer) is made up; a longer stall is not
        # made up with a burst: the rate is a limit.
        wait = self.next_slot - time.monotonic()
        while wait > 0:
            self.mover.idle(min(wait, CHECK_SECONDS))
            if not self._check():
                return False
            wait = self.next_slot - time.monotonic()
        self.next_slot = max(self.next_slot, time.monotonic() - CATCH_UP_SECONDS) + 1 / self.rate
        if planned.item_id not in self.marked:
            self._mark_ahead(planned.item_id)
        self.begun.add(planned.item_id)
        self.current = self.items[planned.item_id]
        return True

    def _mark_ahead(self, item_id: int) -> None:
        ahead = [item_id] + [i for i in self.order if i not in self.marked and i != item_id][
            : MARK_AHEAD - 1
        ]
        RedriveItem.objects.filter(pk__in=ahead, state=ItemState.PENDING).update(
            state=ItemState.MOVING, started_at=timezone.now()
        )
        self.marked.update(ahead)

    def outgoing_headers(self, headers: dict) -> dict:
        item = self.current
        headers = {k: v for k, v in headers.items() if str(k).lower() != "traceparent"}
        headers[REDRIVE_COUNT] = str(item.redrive_count)
        headers[REDRIVE_ID] = str(self.job.pk)
        if item.traceparent:
            headers["traceparent"] = item.traceparent
        return headers

    def done(self, planned: Planned, error: str = "", note: str = "") -> None:
        self.confirmed.append((planned.item_id, timezone.now(), error))
        if len(self.confirmed) >= MARK_AHEAD or time.monotonic() - self.flushed >= FLUSH_SECONDS:
            self.flush()

    def flush(self) -> None:
        """Record the confirmed moves; a run that ends also un-marks what it never began."""
        confirmed, self.confirmed = self.confirmed, []
        self.flushed = time.monotonic()
        if confirmed:
            finish_items(self.job, confirmed)

    def finish(self) -> None:
        self.flush()
        untouched = self.marked - self.begun - self.already_moving
        if untouched:
            RedriveItem.objects.filter(pk__in=untouched, state=ItemState.MOVING).update(
                state=ItemState.PENDING, started_at=None
            )


def finish_items(job: Redrive, confirmed: list[tuple[int, object, str]]) -> None:
    """Mark items moved (or failed: a non-empty error) and count them on the job, together."""
    with transaction.atomic():
        moved = failed = 0
        for item_id, when, error in confirmed:
            changed = RedriveItem.objects.filter(
                pk=item_id, state__in=(ItemState.PENDING, ItemState.MOVING)
            ).update(
                state=ItemState.FAILED if error else ItemState.MOVED,
                error=error[:2000],
                moved_at=when,
            )
            if changed:
                failed += bool(error)
                moved += not error
        if moved or failed:
            Redrive.objects.filter(pk=job.pk).update(
                moved=F("moved") + moved, failed=F("failed") + failed
            )


def _broker_for(job: Redrive):
    for broker in brokers_of(job.project.slug, job.system):
        if broker.source == job.broker:
            return broker
    return None


def plan(job: Redrive, mover) -> None:
    """Write the job's items: the messages it moves and where each goes."""
    selection = set(job.selection) if job.selection is not None else None
    messages = mover.plan(selection, settings.REDRIVE_MAX_MESSAGES)
    items = []
    for message in messages:
        destination = job.destination or message.original_channel or ""
        parsed = continue_trace(message.traceparent)
        items.append(
            RedriveItem(
                redrive=job,
                message_id=message.id,
                destination=destination,
                event_id=(message.event_id or "")[:300],
                trace_id=parsed[3:35] if parsed else "",
                traceparent=parsed or "",
                redrive_count=redrive_count(message.headers) + 1,
                state=ItemState.WOULD_MOVE if job.dry_run else ItemState.PENDING,
                error="" if destination else "no original destination known: pick one",
            )
        )
    found = {m.id for m in messages}
    missing = sorted(selection - found) if selection else []
    for message_id in missing:
        items.append(
            RedriveItem(
                redrive=job,
                message_id=message_id[:300],
                destination=job.destination,
                state=ItemState.FAILED,
                error="not in the dead-letter queue (moved or consumed meanwhile?)",
            )
        )
    with transaction.atomic():
        RedriveItem.objects.bulk_create(items, batch_size=1000)
        Redrive.objects.filter(pk=job.pk).update(
            total=len(items), failed=len(missing), guarantee=mover.exactly_once
        )
    job.refresh_from_db()


def _fail_items_without_destination(job: Redrive, mover) -> None:
    pending = job.items.filter(state__in=(ItemState.PENDING, ItemState.MOVING))
    now = timezone.now()
    failing = [(i.pk, now, i.error or "no destination") for i in pending.filter(destination="")]
    for destination in (
        pending.exclude(destination="").values_list("destination", flat=True).distinct()
    ):
        why = mover.check_destination(destination)
        if why:
            failing += [
                (item_id, now, why)
                for item_id in pending.filter(destination=destination).values_list("pk", flat=True)
            ]
    finish_items(job, failing)


def _finish(job: Redrive, state: str, error: str = "") -> None:
    Redrive.objects.filter(pk=job.pk).update(
        state=state, error=error[:4000], finished_at=timezone.now()
    )
    job.refresh_from_db()
    hint(job.project_id, job.pk)
    from dashboard.audit.trail import record

    record(
        "redrive.finished",
        actor=job.requested_by,
        project=job.project,
        target=f"redrive {job.pk}: {job.system} {job.dead_letter}",
        details={
            "state": job.state,
            "total": job.total,
            "moved": job.moved,
            "failed": job.failed,
            "dry_run": job.dry_run,
            "error": job.error,
        },
        ip="",
    )


def execute(job_id: int, stopping: threading.Event) -> None:
    """Run (or resume) one claimed redrive until it finishes, is cancelled or the worker stops."""
    job = Redrive.objects.select_related("project").get(pk=job_id)
    if job.state in FINISHED:
        return
    if job.cancel_requested and not job.items.exists():
        _finish(job, State.CANCELLED)
        return
    module = registry.MODULES.get(job.system)
    broker = _broker_for(job) if module else None
    if broker is None:
        _finish(job, State.FAILED, f"{job.broker} is no longer in EVENTSCOPE_BROKERS")
        return
    mover = module.open_mover(broker, job.dead_letter, job.namespace)
    try:
        if not job.items.exists():
            plan(job, mover)
            if job.dry_run:
                _finish(job, State.DONE)
                return
        _fail_items_without_destination(job, mover)
        pending = [
            Planned(item.pk, item.message_id, item.destination)
            for item in job.items.filter(state__in=(ItemState.PENDING, ItemState.MOVING))
        ]
        hooks = JobHooks(job, mover, stopping, pending)
        try:
            try:
                mover.move(pending, hooks)
            finally:
                hooks.finish()
        except MoveStopped as exc:
            _skip_rest(job, "not moved: the redrive stopped")
            _finish(job, State.FAILED, str(exc))
            return
        if hooks.cancelled:
            _skip_rest(job, "not moved: cancelled")
            _finish(job, State.CANCELLED)
            return
        if stopping.is_set():
            return  # resumed by the next worker
        _settle_leftovers(job)
        job.refresh_from_db()
        _finish(job, State.DONE if job.moved + job.failed == job.total else State.FAILED)
    finally:
        mover.close()


def _skip_rest(job: Redrive, why: str) -> None:
    job.items.filter(state=ItemState.PENDING).update(state=ItemState.SKIPPED, error=why)
    # A message that was being moved when the job stopped: the broker either did
    # it or undid it; counted by what a resumed run would find.
    _settle_leftovers(job)


def _settle_leftovers(job: Redrive) -> None:
    """Items the walk through the queue did not meet: their messages are gone."""
    now = timezone.now()
    # Started before a restart and gone since: the broker completed the move.
    settled = [
        (pk, now, "")
        for pk in job.items.filter(state=ItemState.MOVING).values_list("pk", flat=True)
    ]
    gone = "no longer in the dead-letter queue (consumed elsewhere?)"
    settled += [
        (pk, now, gone)
        for pk in job.items.filter(state=ItemState.PENDING).values_list("pk", flat=True)
    ]
    finish_items(job, settled)


def run_claimed(job_id: int, lock_conn, stopping: threading.Event) -> None:
    try:
        execute(job_id, stopping)
    except Exception as exc:
        log.exception("redrive %s failed", job_id)
        try:
            job = Redrive.objects.select_related("project").get(pk=job_id)
            _skip_rest(job, "not moved: the redrive failed")
            _finish(job, State.FAILED, f"{type(exc).__name__}: {exc}")
        except Exception:
            log.exception("redrive %s: could not record the failure", job_id)
    finally:
        with contextlib.suppress(Exception):
            lock_conn.close()  # releases the advisory lock
        close_old_connections()
        connection.close()


async def run(stop: asyncio.Event) -> None:
    """The worker loop: claim redrives and run up to PARALLEL_JOBS of them at once."""
    stopping = threading.Event()
    running: set[asyncio.Task] = set()
    try:
        while not stop.is_set():
            claimed = None
            if len(running) < PARALLEL_JOBS:
                try:
                    claimed = await asyncio.to_thread(claim)
                except Exception as exc:
                    log.warning("redrives: could not look for work: %s", exc)
            if claimed is not None:
                task = asyncio.create_task(
                    asyncio.to_thread(run_claimed, *claimed, stopping), name=f"redrive {claimed[0]}"
                )
                running.add(task)
                task.add_done_callback(running.discard)
                continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), POLL_SECONDS)
    finally:
        stopping.set()
        if running:
            await asyncio.gather(*running, return_exceptions=True)
