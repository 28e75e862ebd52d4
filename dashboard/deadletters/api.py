"""The dead letters' JSON API (CONTRACT §7).

GET  /api/dead-letters                                  the project's dead-letter queues
GET  /api/dead-letters/<system>/<name>/messages         a peek that consumes nothing
POST /api/redrives                                      queue a redrive (editor, session)
GET  /api/redrives/<id>                                 its state, counts and items
POST /api/redrives/<id>/cancel                          stop it (editor, session)
"""

from django.views.decorators.csrf import csrf_exempt

from dashboard.access import api_view, json_error
from dashboard.accounts.models import Role
from dashboard.deadletters import queries, start
from dashboard.deadletters.models import Redrive
from dashboard.deadletters.systems import registry
from dashboard.jsonapi import answers_bad_parameters, ok
from dashboard.query_params import BadParameter, decode_cursor, encode_cursor, parse_limit

PEEK_LIMIT = 50
PEEK_MAX = 500


def _not_allowed(request, allowed: str):
    response = json_error(405, f"method {request.method} not allowed (use {allowed})")
    response["Allow"] = allowed
    return response


@api_view(Role.VIEWER)
@answers_bad_parameters
def dead_letters(request):
    limit = parse_limit(request.GET)
    cursor = decode_cursor(request.GET)
    if cursor is not None and (
        not isinstance(cursor, int) or isinstance(cursor, bool) or cursor < 0
    ):
        raise BadParameter("cursor is not one this API returned")
    offset = cursor or 0
    found, unreachable = queries.dead_letter_queues(request.project)
    page = found[offset : offset + limit]
    following = encode_cursor(offset + limit) if len(found) > offset + limit else None
    return ok(
        {
            "items": [q.json() for q in page],
            "next_cursor": following,
            "unreachable": [u.json() for u in unreachable],
        }
    )


@api_view(Role.VIEWER)
@answers_bad_parameters
def messages(request, system, name):
    value = request.GET.get("limit") or str(PEEK_LIMIT)
    if not (value.isascii() and value.isdigit() and 1 <= int(value) <= PEEK_MAX):
        raise BadParameter(f"limit must be a whole number from 1 to {PEEK_MAX}")
    vhost = request.GET.get("vhost")
    try:
        queue, found = queries.peek(request.project, system, name, vhost, int(value))
    except queries.NoSuchQueue as exc:
        return json_error(404, str(exc))
    module = registry.MODULES[system]
    return ok(
        {
            "items": [m.json() for m in found],
            "next_cursor": None,
            "dead_letter": queue.json(),
            "peek_side_effect": getattr(module, "PEEK_SIDE_EFFECT", None),
        }
    )


@api_view(Role.EDITOR)
@answers_bad_parameters
def _create(request):
    wanted = start.parse_request(request.body)
    try:
        redrive = start.start(request, wanted)
    except queries.NoSuchQueue as exc:
        return json_error(404, str(exc))
    return ok({"id": redrive.pk, "state": redrive.state}, status=202)


@csrf_exempt
def redrives(request):
    if request.method == "POST":
        return _create(request)
    return _not_allowed(request, "POST")


def _redrive_of(request, redrive_id):
    return Redrive.objects.filter(project=request.project, pk=redrive_id).first()


@api_view(Role.VIEWER)
def _detail(request, redrive_id):
    redrive = _redrive_of(request, redrive_id)
    if redrive is None:
        return json_error(404, f"no redrive {redrive_id} in this project")
    return ok(queries.redrive_json(redrive))


@csrf_exempt
def redrive(request, redrive_id):
    if request.method in ("GET", "HEAD"):
        return _detail(request, redrive_id)
    return _not_allowed(request, "GET")


@api_view(Role.EDITOR)
def _cancel(request, redrive_id):
    redrive = _redrive_of(request, redrive_id)
    if redrive is None:
        return json_error(404, f"no redrive {redrive_id} in this project")
    try:
        redrive = start.cancel(request, redrive)
    except start.AlreadyFinished as exc:
        return json_error(409, str(exc))
    return ok(queries.redrive_json(redrive, items=False))


@csrf_exempt
def cancel(request, redrive_id):
    if request.method == "POST":
        return _cancel(request, redrive_id)
    return _not_allowed(request, "POST")
