"""GET /api/findings: duplicate, missing, late, out-of-order and poison events
per channel and consumer group (CONTRACT §7)."""

from django.views.decorators.http import require_GET

from dashboard.access import api_view
from dashboard.delivery import queries
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
def findings(request):
    since, until = parse_window(request.GET, default="24h")
    filters = queries.Filters.from_params(request.GET)
    limit = parse_limit(request.GET, default=50, maximum=500)
    cursor = decode_cursor(request.GET)
    # type() and not isinstance(): JSON `true` decodes to a bool, which is an int.
    if cursor is not None and not (type(cursor) is int and cursor >= 0):
        raise BadParameter("cursor is not one this API returned")
    items, following = queries.grouped(
        request.project.id, since, until, filters, limit, cursor or 0
    )
    return ok(
        {
            "since": since,
            "until": until,
            "items": items,
            "next_cursor": encode_cursor(following) if following is not None else None,
        }
    )
