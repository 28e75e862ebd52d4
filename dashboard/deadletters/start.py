"""Starting and cancelling redrives: one place for the API and the pages."""

import json

from django.conf import settings
from django.db import connection, transaction

from collector import notify
from dashboard.audit.trail import record
from dashboard.deadletters.models import FINISHED, Redrive, State
from dashboard.deadletters.queries import NoSuchQueue, find_queue
from dashboard.deadletters.systems import registry
from dashboard.query_params import BadParameter

FIELDS = ("system", "dead_letter", "vhost", "messages", "destination", "rate_per_s", "dry_run")
MAX_IDS = 10_000


def parse_request(body: bytes) -> dict:
    """The redrive request from a JSON body; BadParameter says what is wrong."""
    try:
        data = json.loads(body or b"{}")
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadParameter(f"the body is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise BadParameter("the body must be a JSON object")
    unknown = sorted(set(data) - set(FIELDS))
    if unknown:
        raise BadParameter(f"{unknown[0]!r} is not a field of a redrive ({', '.join(FIELDS)})")
    return clean(data)


def clean(data: dict) -> dict:
    system = data.get("system")
    if system not in registry.MODULES:
        raise BadParameter(f"system must be one of {', '.join(registry.MODULES)}")
    name = data.get("dead_letter")
    if not isinstance(name, str) or not name or len(name) > 500 or "\x00" in name:
        raise BadParameter("dead_letter is required: the dead-letter queue's name")
    vhost = data.get("vhost")
    if vhost is not None and (not isinstance(vhost, str) or "\x00" in vhost):
        raise BadParameter("vhost must be a string")
    messages = data.get("messages", "all")
    if messages != "all":
        if (
            not isinstance(messages, list)
            or not messages
            or not all(isinstance(m, str) and m and "\x00" not in m for m in messages)
        ):
            raise BadParameter('messages must be "all" or a non-empty list of message ids')
        if len(messages) > MAX_IDS:
            raise BadParameter(f"at most {MAX_IDS} message ids per redrive")
        messages = list(dict.fromkeys(messages))
    destination = data.get("destination") or ""
    if not isinstance(destination, str) or len(destination) > 500 or "\x00" in destination:
        raise BadParameter("destination must be a channel name of the same system")
    rate = data.get("rate_per_s", 50)
    if isinstance(rate, bool) or not isinstance(rate, int | float) or not rate > 0:
        raise BadParameter("rate_per_s must be a number above 0 (messages per second)")
    if rate > settings.REDRIVE_MAX_RATE:
        raise BadParameter(
            f"rate_per_s is at most {settings.REDRIVE_MAX_RATE} (EVENTSCOPE_REDRIVE_MAX_RATE)"
        )
    dry_run = data.get("dry_run", False)
    if not isinstance(dry_run, bool):
        raise BadParameter("dry_run must be true or false")
    return {
        "system": system,
        "dead_letter": name,
        "vhost": vhost,
        "messages": messages,
        "destination": destination.strip(),
        "rate_per_s": float(rate),
        "dry_run": dry_run,
    }


def start(request, wanted: dict) -> Redrive:
    """Queue a redrive for the worker (NoSuchQueue when the queue is not the project's)."""
    broker, queue = find_queue(
        request.project, wanted["system"], wanted["dead_letter"], wanted["vhost"]
    )
    with transaction.atomic():
        redrive = Redrive.objects.create(
            project=request.project,
            system=queue.system,
            broker=broker.source,
            dead_letter=queue.name,
            namespace=queue.namespace,
            selection=None if wanted["messages"] == "all" else wanted["messages"],
            destination=wanted["destination"],
            rate_per_s=wanted["rate_per_s"],
            dry_run=wanted["dry_run"],
            requested_by_user=request.user,
            requested_by=request.user.get_username(),
        )
        record(
            "redrive.requested",
            request=request,
            project=request.project,
            target=f"redrive {redrive.pk}: {queue.system} {queue.name}",
            details={
                "from": queue.name,
                "broker": broker.source,
                "to": wanted["destination"] or "original destination",
                "messages": "all" if redrive.selection is None else len(redrive.selection),
                "rate_per_s": redrive.rate_per_s,
                "dry_run": redrive.dry_run,
            },
        )
        with connection.cursor() as cursor:
            notify.send(cursor, request.project.pk, "redrives", redrive=redrive.pk)
    return redrive


class AlreadyFinished(Exception):
    pass


def cancel(request, redrive: Redrive) -> Redrive:
    """Stop a redrive: a queued one at once, a running one before its next message."""
    with transaction.atomic():
        redrive = Redrive.objects.select_for_update().get(pk=redrive.pk)
        if redrive.state in FINISHED:
            raise AlreadyFinished(f"redrive {redrive.pk} is already {redrive.state}")
        redrive.cancel_requested = True
        fields = ["cancel_requested"]
        if redrive.state == State.QUEUED:
            from django.utils import timezone

            redrive.state, redrive.finished_at = State.CANCELLED, timezone.now()
            fields += ["state", "finished_at"]
        redrive.save(update_fields=fields)
        record(
            "redrive.cancelled",
            request=request,
            project=request.project,
            target=f"redrive {redrive.pk}: {redrive.system} {redrive.dead_letter}",
            details={"moved": redrive.moved, "total": redrive.total},
        )
        with connection.cursor() as cursor:
            notify.send(cursor, request.project.pk, "redrives", redrive=redrive.pk)
    return redrive


__all__ = ["AlreadyFinished", "NoSuchQueue", "cancel", "parse_request", "start"]
