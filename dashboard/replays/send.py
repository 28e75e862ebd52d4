"""Replays: an editor re-sends a failed or dead-lettered event, as it was stored,
to one of the project's webhooks.

The event goes out as one CloudEvents 1.0 structured-mode request
(`application/cloudevents+json`) through the one outbound client
(dashboard.alerts.outbound, with its timeouts and private-address guard),
signed like every webhook post (Standard Webhooks) when the webhook has a
secret. `id`, `source`, `type` and `time` are the stored ones, so a receiver
that deduplicates on source + id knows it has seen the event; the extension
attribute `esreplay` (also the `webhook-id`) tells it this is a replay and
which one.

Only CloudEvents have a stored envelope; span-derived events carry no
payload. A payload cut at the size cap is not replayed (it would not be
the event), and what redaction replaced at ingest goes out as [REDACTED].
Every attempt, delivered or not, is recorded as a `Replay`.
"""

import base64
import datetime as dt
import json
import logging

from django.db.models import Q
from django.utils import timezone

from collector.attribute_limits import DROPPED_KEY, TRUNCATED_KEY
from collector.cloudevents import CORE, ES_ATTRIBUTES, is_json_type
from collector.models import Envelope, Stage
from dashboard.alerts.models import Format, Webhook, secret_key
from dashboard.alerts.transports import Transport, TransportError, signature_headers
from dashboard.audit.trail import record as audit_record
from dashboard.journeys.queries import NotFound, iso
from dashboard.query_params import BadParameter, clean_text
from dashboard.replays.models import Replay, ReplayStatus

log = logging.getLogger(__name__)

CONTENT_TYPE = "application/cloudevents+json"
# Eventscope's own attributes report one stage of the journey (where it
# failed, with which error); they are not part of the event, and a receiver
# that reports to Eventscope itself would otherwise file the replay as
# another dead letter. Nor is Eventscope's record of what the attribute limits cut.
NOT_REPLAYED = frozenset((*ES_ATTRIBUTES, DROPPED_KEY, TRUNCATED_KEY))
REPLAY_ATTRIBUTE = "esreplay"
SOURCES_NAMED = 5  # in the message asking which source was meant


class NotReplayable(Exception):
    """The event exists but cannot be replayed faithfully; the message says why."""


class AmbiguousSource(ValueError):
    """The id was reported by several sources and none was named."""


def _has_payload(envelope: Envelope) -> bool:
    return envelope.data is not None or envelope.data_text is not None


def envelope_of(project_id: int, event_id: str, source: str | None = None) -> Envelope:
    """The stored envelope a replay of this event sends.

    An event reported at several stages has an envelope per report, and
    usually only the first (the publish) carries the payload: the earliest
    one with a payload is sent, else the earliest. Raises NotFound,
    AmbiguousSource (several sources, none named) or NotReplayable.
    """
    try:
        clean_text("event id", event_id)
        if source:
            clean_text("source", source)
    except BadParameter:
        raise NotFound(f"no event {event_id!r} in this project") from None
    envelopes = Envelope.objects.filter(project_id=project_id, event_id=event_id)
    if source:
        envelopes = envelopes.filter(source=source)
    else:
        sources = sources_of(project_id, event_id, SOURCES_NAMED + 1)
        if len(sources) > 1:
            named = ", ".join(repr(s) for s in sources[:SOURCES_NAMED])
            more = " and others" if len(sources) > SOURCES_NAMED else ""
            raise AmbiguousSource(
                f"event id {event_id!r} was reported by several sources ({named}{more}); "
                "say which with source"
            )
    candidates = list(envelopes.order_by("time")[:50])
    if not candidates:
        stages = Stage.objects.filter(project_id=project_id, event_id=event_id)
        if source:
            # Span-derived stages carry no source; they are this event's too.
            stages = stages.filter(Q(event_source__isnull=True) | Q(event_source=source))
        if stages.exists():
            raise NotReplayable(
                f"event {event_id!r} has no stored payload: only events reported as "
                "CloudEvents have a stored payload (this one is known from spans only)"
            )
        where = f" from source {source!r}" if source else ""
        raise NotFound(f"no event {event_id!r}{where} in this project")
    envelope = next((e for e in candidates if _has_payload(e)), candidates[0])
    if envelope.truncated:
        raise NotReplayable(
            f"event {event_id!r}'s payload was cut at {_kept_bytes(envelope)} bytes of "
            f"{envelope.data_size} when it was stored (EVENTSCOPE_PAYLOAD_MAX_BYTES), "
            "so a replay would not be faithful"
        )
    return envelope


def sources_of(project_id: int, event_id: str, limit: int = 20) -> list[str]:
    """The CloudEvents sources that reported an event with this id (at most `limit`)."""
    return sorted(
        Envelope.objects.filter(project_id=project_id, event_id=event_id)
        .values_list("source", flat=True)
        .distinct()[:limit]
    )


def _kept_bytes(envelope: Envelope) -> int:
    text = envelope.data_text or ""
    if envelope.data_base64:
        return len(base64.b64decode(text))
    return len(text.encode())


def _time(moment: dt.datetime) -> str:
    """RFC 3339 UTC, without the trailing zeros of the fraction (storage keeps µs)."""
    text = iso(moment)
    if "." in text:
        whole, fraction = text[:-1].split(".")
        fraction = fraction.rstrip("0")
        text = f"{whole}.{fraction}Z" if fraction else f"{whole}Z"
    return text


def cloudevent(envelope: Envelope, replay_id: str) -> dict:
    """The stored envelope as a CloudEvents JSON-format event, marked as replay `replay_id`."""
    event = {
        "specversion": "1.0",
        "id": envelope.event_id,
        "source": envelope.source,
        "type": envelope.type,
        "time": _time(envelope.time),
    }
    for name in ("subject", "datacontenttype", "dataschema"):
        value = getattr(envelope, name)
        if value is not None:
            event[name] = value
    for name, value in (envelope.extensions or {}).items():
        if name not in NOT_REPLAYED and name not in CORE:
            event[name] = value
    event[REPLAY_ATTRIBUTE] = replay_id
    if envelope.data is not None:
        event["data"] = envelope.data
    elif envelope.data_text is not None:
        if envelope.data_base64:
            event["data_base64"] = envelope.data_text
        elif is_json_type(envelope.datacontenttype):
            # Bytes that claimed to be JSON and were not: as a JSON string
            # they would change meaning, so they travel as the bytes they were.
            event["data_base64"] = base64.b64encode(envelope.data_text.encode()).decode()
        else:
            event["data"] = envelope.data_text
    return event


class CloudEventTransport(Transport):
    """One structured-mode CloudEvent, signed by the Standard Webhooks scheme
    when the webhook has a secret."""

    content_type = CONTENT_TYPE

    def render(self, notification):
        raise NotImplementedError("replays send stored events, not notifications")

    def headers(self, message_id, body, now):
        headers = super().headers(message_id, body, now)
        if self.webhook.secret:
            headers.update(signature_headers(self.webhook.secret, message_id, body, now))
        return headers


def replayable_webhooks(project):
    """The project's webhooks a replay can go to: those that take JSON as it
    comes (Slack and Alertmanager receivers only understand their own bodies)."""
    return Webhook.objects.filter(project=project, format=Format.JSON)


def _record(project, envelope: Envelope, webhook: Webhook, user, requested_by, now) -> Replay:
    return Replay(
        project=project,
        event_id=envelope.event_id,
        source=envelope.source,
        event_time=envelope.time,
        webhook=webhook,
        webhook_name=webhook.name,
        requested_by_user=user,
        requested_by=(requested_by or (user.get_username() if user else ""))[:150],
        requested_at=now,
    )


def attempt(record: Replay, envelope: Envelope, webhook: Webhook) -> bool:
    """Send the replay once, setting its status, answer and error; True when
    a failure is worth retrying (a timeout, a connection error, a 5xx, 408, 429)."""
    now = timezone.now()
    body = json.dumps(cloudevent(envelope, record.id), separators=(",", ":"), ensure_ascii=False)
    try:
        if webhook.secret:
            secret_key(webhook.secret)
    except ValueError:
        # A secret saved before secrets were checked: nothing can be signed.
        record.status = ReplayStatus.FAILED
        record.error = "the webhook's secret is not a valid whsec_ key; nothing was sent"
        return False
    try:
        response = CloudEventTransport(webhook).notify(record.id, body, now)
    except TransportError as exc:
        record.status = ReplayStatus.FAILED
        record.http_status = exc.status_code
        record.error = exc.message
        record.duration_ms = exc.duration_ms
        return not exc.permanent
    except Exception as exc:
        # As the alert sender does: recorded, not a 500 that loses the attempt.
        log.exception("replay %s to webhook %s: unexpected error", record.id, webhook.pk)
        record.status = ReplayStatus.FAILED
        record.error = f"unexpected error while sending: {type(exc).__name__}"
        return False
    record.status = ReplayStatus.DELIVERED
    record.http_status = response.status_code
    record.duration_ms = response.elapsed_ms
    record.error = ""
    return False


def replay(project, envelope: Envelope, webhook: Webhook, user=None, requested_by="") -> Replay:
    """Send `envelope` to `webhook` once and record how it went.

    A refused address, a timeout, a connection error or a non-2xx answer is
    a `failed` replay with the reason, not an exception.
    """
    record = _record(project, envelope, webhook, user, requested_by, timezone.now())
    attempt(record, envelope, webhook)
    record.save(force_insert=True)
    return record


def queue(project, envelope: Envelope, webhook: Webhook, user=None, requested_by="") -> Replay:
    """Record a replay for the worker to send, retrying until delivered or out of attempts."""
    now = timezone.now()
    record = _record(project, envelope, webhook, user, requested_by, now)
    record.status, record.retry, record.attempts, record.next_attempt_at = (
        ReplayStatus.QUEUED,
        True,
        0,
        now,
    )
    record.save(force_insert=True)
    return record


def audit(request, replayed: Replay) -> None:
    """The audit log's entry for a replay someone asked for (page or API)."""
    audit_record(
        "event.replayed",
        request=request,
        project=replayed.project,
        target=f"event {replayed.event_id} from {replayed.source}",
        details={
            "replay": replayed.id,
            "webhook": {"id": replayed.webhook_id, "name": replayed.webhook_name},
            "status": replayed.status,
            "http_status": replayed.http_status,
            "error": replayed.error or None,
        },
    )


def replay_json(record: Replay) -> dict:
    return {
        "id": record.id,
        "event_id": record.event_id,
        "source": record.source,
        "event_time": iso(record.event_time),
        "webhook": {"id": record.webhook_id, "name": record.webhook_name},
        "requested_by": record.requested_by,
        "requested_at": iso(record.requested_at),
        "status": record.status,
        "http_status": record.http_status,
        "error": record.error or None,
        "duration_ms": round(record.duration_ms, 1),
        "retry": record.retry,
        "attempts": record.attempts,
        "next_attempt_at": iso(record.next_attempt_at) if record.next_attempt_at else None,
    }
