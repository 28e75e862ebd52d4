"""Audit retention: rows older than EVENTSCOPE_AUDIT_RETENTION_DAYS are deleted
by the worker leader once an hour.

The table's trigger refuses every DELETE unless the transaction says, with
SET LOCAL, which cutoff the purge works to; the setting ends with the
transaction, so nothing else on the connection inherits the permission.
"""

import asyncio
import datetime as dt
import logging

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

log = logging.getLogger(__name__)

INTERVAL_SECONDS = 3600


def purge(now: dt.datetime | None = None) -> int:
    """Delete the audit events past retention; returns how many went."""
    cutoff = (now or timezone.now()) - dt.timedelta(days=settings.AUDIT_RETENTION_DAYS)
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(
            "SELECT set_config('eventscope.audit_purge_before', %s, true)", [cutoff.isoformat()]
        )
        cursor.execute("DELETE FROM audit_auditevent WHERE time < %s", [cutoff])
        deleted = cursor.rowcount
    if deleted:
        log.info("audit retention: deleted %d event(s) before %s", deleted, cutoff)
    return deleted


async def run(stop: asyncio.Event) -> None:
    """Worker loop: purge now, then every INTERVAL_SECONDS until `stop` is set."""
    from asgiref.sync import sync_to_async

    while not stop.is_set():
        try:
            await sync_to_async(purge, thread_sensitive=False)()
        except Exception:
            log.exception("audit retention failed; retrying in %ss", INTERVAL_SECONDS)
        try:
            await asyncio.wait_for(stop.wait(), INTERVAL_SECONDS)
        except TimeoutError:
            pass
