"""POST /api/events/<event_id>/replay and GET /api/events/<event_id>/replays.

Replaying needs the editor role and a signed-in session (read tokens are
read-only: 403); listing needs the viewer role. The event and the webhook
must both be in the caller's project (else 404).
"""

import json

from django.db.models import Q
from django.views.decorators.csrf import csrf_exempt

from dashboard.access import api_view, json_error
from dashboard.accounts.models import Role
from dashboard.alerts.models import Format, Webhook
from dashboard.journeys import api as api_traces
from dashboard.journeys.queries import NotFound, iso
from dashboard.jsonapi import answers_bad_parameters, ok
from dashboard.query_params import (
    BadParameter,
    clean_text,
    decode_cursor,
    encode_cursor,
    parse_limit,
    parse_time,
    text_param,
)
from dashboard.replays import send as replays
from dashboard.replays.models import Replay

REQUEST_FIELDS = ("webhook", "source", "retry")


def _replay_request(request) -> tuple[int, str | None, bool]:
    """(webhook id, source, retry) from the JSON body; BadParameter when it is wrong."""
    try:
        body = json.loads(request.body or b"{}")
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadParameter(f"the body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise BadParameter('the body must be a JSON object: {"webhook": <id>}')
    unknown = sorted(set(body) - set(REQUEST_FIELDS))
    if unknown:
        raise BadParameter(f"{unknown[0]} is not a field of a replay request")
    webhook = body.get("webhook")
    if isinstance(webhook, bool) or not isinstance(webhook, int):
        raise BadParameter("webhook is required: the id of one of this project's webhooks")
    source = body.get("source")
    if source is not None and not isinstance(source, str):
        raise BadParameter("source must be a string (the event's CloudEvents source)")
    query_source = text_param(request.GET, "source", max_length=10_000)
    if source and query_source and source != query_source:
        raise BadParameter("source in the body and in the query string differ")
    retry = body.get("retry", False)
    if not isinstance(retry, bool):
        raise BadParameter("retry must be true or false")
    return webhook, (source or query_source or None), retry


@api_view(Role.EDITOR)
@answers_bad_parameters
def _replay(request, event_id):
    webhook_id, source, retry = _replay_request(request)
    try:
        envelope = replays.envelope_of(request.project.id, event_id, source)
    except NotFound as exc:
        return json_error(404, str(exc))
    except replays.AmbiguousSource as exc:
        return json_error(400, str(exc))
    except replays.NotReplayable as exc:
        return json_error(409, str(exc))
    webhook = Webhook.objects.filter(project=request.project, pk=webhook_id).first()
    if webhook is None:
        return json_error(404, f"no webhook {webhook_id} in this project")
    if webhook.format != Format.JSON:
        return json_error(
            400,
            f"webhook {webhook.name!r} takes {webhook.format} notifications only; "
            "replays go to json webhooks",
        )
    if retry:
        # Sent by the worker, retried with backoff: answered before it is sent.
        record = replays.queue(request.project, envelope, webhook, request.user)
        replays.audit(request, record)
        return ok(replays.replay_json(record), status=202)
    record = replays.replay(request.project, envelope, webhook, request.user)
    replays.audit(request, record)
    return ok(replays.replay_json(record), status=201)


@csrf_exempt
def replay(request, event_id):
    if request.method == "POST":
        return _replay(request, event_id)
    if request.method == "GET":
        # Replaying is POST only, so a GET here reads the event whose id
        # ends in "/replay", as this path did before replays existed.
        return api_traces.event(request, f"{event_id}/replay")
    response = json_error(405, f"method {request.method} not allowed (use POST)")
    response["Allow"] = "POST"
    return response


def _cursor(params):
    """(requested_at, id) of the last item of the previous page, or None."""
    cursor = decode_cursor(params)
    if cursor is None:
        return None
    if not (
        isinstance(cursor, list)
        and len(cursor) == 2
        and all(isinstance(part, str) for part in cursor)
    ):
        raise BadParameter("cursor is not one this API returned")
    return parse_time("cursor", cursor[0]), cursor[1]


@api_view(Role.VIEWER)
@answers_bad_parameters
def _list(request, event_id):
    source = text_param(request.GET, "source", max_length=10_000) or None
    limit = parse_limit(request.GET)
    cursor = _cursor(request.GET)
    try:
        clean_text("event id", event_id)
    except BadParameter:
        return json_error(404, f"no event {event_id!r} in this project")
    records = Replay.objects.of_event(request.project, event_id, source)
    if cursor is not None:
        at, ident = cursor
        records = records.filter(Q(requested_at__lt=at) | Q(requested_at=at, id__lt=ident))
    items = list(records[: limit + 1])
    if not items and cursor is None:
        # Nothing replayed: say 404 only if the event is unknown here too.
        try:
            replays.envelope_of(request.project.id, event_id, source)
        except NotFound as exc:
            return json_error(404, str(exc))
        except (replays.AmbiguousSource, replays.NotReplayable):
            pass
    following = None
    if len(items) > limit:
        last = items[limit - 1]
        following = encode_cursor([iso(last.requested_at), last.id])
    return ok({"items": [replays.replay_json(r) for r in items[:limit]], "next_cursor": following})


@csrf_exempt
def replay_list(request, event_id):
    if request.method in ("GET", "HEAD"):
        return _list(request, event_id)
    response = json_error(405, f"method {request.method} not allowed (use GET)")
    response["Allow"] = "GET"
    return response
