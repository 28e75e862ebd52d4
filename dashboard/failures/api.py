"""GET /api/failures: failed and dead-lettered events, newest first or grouped."""

from django.views.decorators.http import require_GET

from dashboard.access import api_view
from dashboard.failures import queries as failure_queries
from dashboard.jsonapi import answers_bad_parameters, ok
from dashboard.query_params import (
    BadParameter,
    decode_cursor,
    encode_cursor,
    parse_limit,
    parse_window,
)


@require_GET
@api_view()
@answers_bad_parameters
def failures(request):
    since, until = parse_window(request.GET, default="24h")
    filters = failure_queries.Filters.from_params(request.GET, since, until)
    limit = parse_limit(request.GET, default=50, maximum=500)
    cursor = decode_cursor(request.GET)
    group_by = request.GET.get("group_by") or ""
    if group_by not in ("", "error"):
        raise BadParameter(f"group_by={group_by!r}: the only grouping is 'error'")
    base = {"since": since, "until": until}
    if group_by == "error":
        # type() and not isinstance(): JSON `true` decodes to a bool, which is an int.
        if cursor is not None and not (type(cursor) is int and cursor >= 0):
            raise BadParameter("cursor is not one this API returned")
        items, following = failure_queries.groups(request.project.id, filters, limit, cursor or 0)
    else:
        cursor = failure_queries.list_cursor(request.GET)
        try:
            items, following = failure_queries.failures(request.project.id, filters, limit, cursor)
        except ValueError:
            raise BadParameter("cursor is not one this API returned") from None
    return ok(
        {
            **base,
            "items": items,
            "next_cursor": encode_cursor(following) if following is not None else None,
        }
    )
