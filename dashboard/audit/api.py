"""GET /api/audit: the audit log, newest first (CONTRACT §7).

Admins only, signed in: a project admin sees the events of the project,
an installation admin (superuser) also the sign-ins. API tokens get 403:
they are read-scoped and held by programs; an audit trail that a leaked
dashboard token could read would tell an intruder who to impersonate.
Filters: `action` (one action, or a family such as `token`), `actor`,
`since`, `until`; pages with `limit` and `cursor`.
"""

from django.db.models import Q
from django.views.decorators.http import require_GET

from dashboard.access import api_view, bearer_token, json_error
from dashboard.accounts.models import Role
from dashboard.audit.models import ACTIONS, AuditEvent
from dashboard.journeys.queries import iso
from dashboard.jsonapi import answers_bad_parameters, ok
from dashboard.query_params import (
    BadParameter,
    decode_cursor,
    encode_cursor,
    parse_limit,
    parse_time,
    text_param,
)


def event_json(event: AuditEvent) -> dict:
    return {
        "time": iso(event.time),
        "actor": event.actor,
        "project": event.project_slug or None,
        "action": event.action,
        "target": event.target,
        "ip": event.ip,
        "details": event.details,
    }


def filtered(queryset, params):
    """`queryset` narrowed by the action, actor, since and until parameters."""
    action = text_param(params, "action", max_length=50)
    if action:
        families = {name.split(".")[0] for name in ACTIONS}
        if action in ACTIONS:
            queryset = queryset.filter(action=action)
        elif action in families:
            queryset = queryset.filter(Q(action__startswith=f"{action}.") | Q(action=action))
        else:
            raise BadParameter(
                f"action={action!r}: expected an action such as token.created "
                f"or a family ({', '.join(sorted(families))})"
            )
    actor = text_param(params, "actor", max_length=150)
    if actor:
        queryset = queryset.filter(actor=actor)
    since, until = params.get("since"), params.get("until")
    if since:
        queryset = queryset.filter(time__gte=parse_time("since", since))
    if until:
        queryset = queryset.filter(time__lt=parse_time("until", until))
    if since and until and parse_time("since", since) >= parse_time("until", until):
        raise BadParameter("since must be before until")
    return queryset


def page(queryset, params, default_limit=50):
    """(events, next cursor) of one page, newest first; the cursor holds the
    (time, id) of the last event shown."""
    limit = parse_limit(params, default=default_limit, maximum=500)
    cursor = decode_cursor(params)
    queryset = queryset.newest_first()
    if cursor is not None:
        if not (
            isinstance(cursor, list)
            and len(cursor) == 2
            and isinstance(cursor[0], str)
            and type(cursor[1]) is int
        ):
            raise BadParameter("cursor is not one this API returned")
        at, ident = parse_time("cursor", cursor[0]), cursor[1]
        queryset = queryset.filter(Q(time__lt=at) | Q(time=at, id__lt=ident))
    events = list(queryset[: limit + 1])
    following = None
    if len(events) > limit:
        last = events[limit - 1]
        # Microseconds kept: the next page starts exactly after this event.
        following = encode_cursor([last.time.isoformat(), last.pk])
    return events[:limit], following


@api_view(Role.ADMIN)
@answers_bad_parameters
def _audit(request):
    events = filtered(AuditEvent.objects.visible_to(request.user, request.project), request.GET)
    items, following = page(events, request.GET)
    return ok({"items": [event_json(e) for e in items], "next_cursor": following})


@require_GET
def audit(request):
    if bearer_token(request) is not None:
        return json_error(403, "the audit log is for signed-in admins; API tokens cannot read it")
    return _audit(request)
