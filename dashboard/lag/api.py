"""GET /api/lag: consumer lag per (system, channel, group), worst first."""

from django.views.decorators.http import require_GET

from collector.brokers import lag
from dashboard.access import api_view
from dashboard.api import answers_bad_parameters, ok
from dashboard.lag.views import unreachable_brokers
from dashboard.query_params import BadParameter, decode_cursor, encode_cursor, parse_limit

FILTERS = ("system", "channel", "group")


@require_GET
@api_view()
@answers_bad_parameters
def lag_list(request):
    """Items as `collector.brokers.lag.current()` gives them, filtered and paginated.

    Filters: system, channel, group (exact), status (comma-separated).
    `brokers` lists configured brokers that are not answering.
    """
    limit = parse_limit(request.GET, default=100, maximum=500)
    start = decode_cursor(request.GET) or 0
    if not isinstance(start, int) or start < 0:
        raise BadParameter("cursor is not one this API returned")
    statuses = [s for s in (request.GET.get("status") or "").split(",") if s]
    unknown = [s for s in statuses if s not in lag.STATUSES]
    if unknown:
        raise BadParameter(
            f"status={unknown[0]!r}: expected one or more of {', '.join(lag.STATUSES)}"
        )
    items = lag.current(request.project.id)
    for name in FILTERS:
        value = request.GET.get(name)
        if value is not None:
            items = [i for i in items if i[name] == value]
    if statuses:
        items = [i for i in items if i["status"] in statuses]
    page = items[start : start + limit]
    following = start + limit if start + limit < len(items) else None
    brokers = [
        {**b, "since": b["since"].isoformat().replace("+00:00", "Z") if b["since"] else None}
        for b in unreachable_brokers(request.project.id)
    ]
    for broker in brokers:
        broker.pop("last_ok_at", None)
    return ok(
        {
            "items": page,
            "next_cursor": encode_cursor(following) if following is not None else None,
            "brokers": brokers,
        }
    )
