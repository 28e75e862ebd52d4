"""Retention of the dashboard's own records, run by the worker leader.

Raw telemetry, rollups and broker figures have their own retention
(collector/maintenance.py, collector/brokers/poller.py); this purges what
sign-ins, alerts and replays leave behind, which would otherwise grow for as
long as the installation lives:

- expired sessions (what `manage.py clearsessions` does);
- webhook deliveries older than EVENTSCOPE_HISTORY_RETENTION_DAYS that are
  finished (delivered, failed, or pending long past their give-up time),
  with their attempts;
- alerts resolved longer ago than that;
- replays older than that.

Open alerts, deliveries still being retried and everything younger stay.
Rows go in batches, each in a short transaction of its own, so a first pass
over years of history holds no lock for long.
"""

import asyncio
import datetime as dt
import logging
from dataclasses import dataclass, field
from importlib import import_module

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

log = logging.getLogger(__name__)

INTERVAL_SECONDS = 3600
BATCH = 5000


@dataclass
class Report:
    deleted: dict[str, int] = field(default_factory=dict)

    def add(self, table: str, rows: int) -> None:
        if rows:
            self.deleted[table] = self.deleted.get(table, 0) + rows


def _in_batches(select_ids: str, params: list, delete) -> int:
    """Run `delete(ids)` in its own transaction for each batch of ids the query
    finds (it must take LIMIT %s last), until none is left; returns how many."""
    total = 0
    while True:
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(select_ids, [*params, BATCH])
            ids = [row[0] for row in cursor.fetchall()]
            if ids:
                delete(cursor, ids)
        total += len(ids)
        if len(ids) < BATCH:
            return total


def purge_deliveries(cutoff: dt.datetime, report: Report) -> None:
    def delete(cursor, ids):
        # Django emulates ON DELETE CASCADE; in SQL the attempts go first.
        cursor.execute("DELETE FROM alerts_attempt WHERE delivery_id = ANY(%s)", [ids])
        report.add("alerts_attempt", cursor.rowcount)
        cursor.execute("DELETE FROM alerts_delivery WHERE id = ANY(%s)", [ids])

    report.add(
        "alerts_delivery",
        _in_batches(
            """SELECT id FROM alerts_delivery
               WHERE created_at < %s AND (status <> 'pending' OR give_up_at < %s)
               ORDER BY id LIMIT %s""",
            [cutoff, cutoff],
            delete,
        ),
    )


def purge_alerts(cutoff: dt.datetime, report: Report) -> None:
    def delete(cursor, ids):
        # A delivery keeps its record when its alert goes (on_delete=SET_NULL).
        cursor.execute("UPDATE alerts_delivery SET alert_id = NULL WHERE alert_id = ANY(%s)", [ids])
        cursor.execute("DELETE FROM alerts_alert WHERE id = ANY(%s)", [ids])

    report.add(
        "alerts_alert",
        _in_batches(
            """SELECT id FROM alerts_alert WHERE state = 'resolved' AND resolved_at < %s
               ORDER BY id LIMIT %s""",
            [cutoff],
            delete,
        ),
    )


def purge_replays(cutoff: dt.datetime, report: Report) -> None:
    def delete(cursor, ids):
        cursor.execute("DELETE FROM dashboard_replay WHERE id = ANY(%s)", [ids])

    report.add(
        "dashboard_replay",
        _in_batches(
            "SELECT id FROM dashboard_replay WHERE requested_at < %s ORDER BY id LIMIT %s",
            [cutoff],
            delete,
        ),
    )


def purge_sessions(report: Report) -> None:
    """Expired sessions, through the session engine as `clearsessions` does."""
    engine = import_module(settings.SESSION_ENGINE)
    if settings.SESSION_ENGINE != "django.contrib.sessions.backends.db":
        engine.SessionStore.clear_expired()
        return
    report.add(
        "django_session",
        _in_batches(
            "SELECT session_key FROM django_session WHERE expire_date < %s LIMIT %s",
            [timezone.now()],
            lambda cursor, keys: cursor.execute(
                "DELETE FROM django_session WHERE session_key = ANY(%s)", [keys]
            ),
        ),
    )


def purge(now: dt.datetime | None = None) -> Report:
    """One retention pass over every table this module looks after."""
    now = now or timezone.now()
    cutoff = now - dt.timedelta(days=settings.HISTORY_RETENTION_DAYS)
    report = Report()
    purge_deliveries(cutoff, report)
    purge_alerts(cutoff, report)
    purge_replays(cutoff, report)
    purge_sessions(report)
    return report


def _purge_in_thread() -> Report:
    # A pool thread's connection would otherwise stay open between passes.
    try:
        return purge()
    finally:
        connection.close()


async def run(stop: asyncio.Event, interval: float = INTERVAL_SECONDS) -> None:
    """Worker loop: a pass now, then every `interval` seconds until `stop` is set."""
    from asgiref.sync import sync_to_async

    while not stop.is_set():
        try:
            report = await sync_to_async(_purge_in_thread, thread_sensitive=False)()
            if report.deleted:
                log.info("retention: deleted %s", report.deleted)
        except Exception:
            log.exception("retention pass failed; retrying in %ss", interval)
        try:
            await asyncio.wait_for(stop.wait(), interval)
        except TimeoutError:
            pass
