"""GET /api/lag: consumer lag per (system, vhost/account, channel, group), worst first."""

from django.views.decorators.http import require_GET

from collector.brokers import lag
from dashboard.access import api_view
from dashboard.jsonapi import answers_bad_parameters, ok
from dashboard.lag import queries
from dashboard.query_params import encode_cursor, parse_limit

FILTERS = ("system", "vhost", "account", "namespace", "channel", "group")


@require_GET
@api_view()
@answers_bad_parameters
def lag_list(request):
    """Items as `collector.brokers.lag.current()` gives them, filtered and paginated.

    Filters: system, vhost, account, namespace, channel, group (exact), status
    (comma-separated). `brokers` lists configured brokers that are not answering.
    """
    limit = parse_limit(request.GET, default=100, maximum=500)
    start_after = queries.after(request.GET)
    chosen = queries.statuses(request.GET)
    items = lag.current(request.project.id)
    for name in FILTERS:
        value = request.GET.get(name)
        if value is not None:
            items = [i for i in items if i[name] == value]
    if chosen:
        items = [i for i in items if i["status"] in chosen]
    page, following = queries.page(items, start_after, limit)
    brokers = [
        {**b, "since": b["since"].isoformat().replace("+00:00", "Z") if b["since"] else None}
        for b in queries.unreachable_brokers(request.project.id)
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
