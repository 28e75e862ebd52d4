"""GET /api/lag: consumer lag per (system, vhost/account, channel, group), worst first."""

from django.views.decorators.http import require_GET

from collector.brokers import lag
from dashboard.access import api_view
from dashboard.jsonapi import answers_bad_parameters, ok
from dashboard.lag.views import unreachable_brokers
from dashboard.query_params import BadParameter, decode_cursor, encode_cursor, parse_limit

FILTERS = ("system", "vhost", "account", "channel", "group")
BAD_CURSOR = "cursor is not one this API returned"


def position(item: dict) -> tuple:
    """Where an item sorts: worst status first, then by its key.

    Figures change between two pages, so the order must not depend on them:
    a cursor is this position of the last item sent, and the next page
    starts after it, whatever moved in between.
    """
    return (
        -lag.SEVERITY.get(item["status"], 0),
        item["system"],
        lag.namespace_of(item),
        item["channel"],
        item["group"],
    )


def _after(params) -> tuple | None:
    value = decode_cursor(params)
    if value is None:
        return None
    ranks = set(lag.SEVERITY.values())
    if (
        not isinstance(value, list)
        or len(value) != 5
        or type(value[0]) is not int
        or -value[0] not in ranks
        or not all(isinstance(part, str) for part in value[1:])
    ):
        raise BadParameter(BAD_CURSOR)
    return tuple(value)


@require_GET
@api_view()
@answers_bad_parameters
def lag_list(request):
    """Items as `collector.brokers.lag.current()` gives them, filtered and paginated.

    Filters: system, vhost, account, channel, group (exact), status
    (comma-separated). `brokers` lists configured brokers that are not answering.
    """
    limit = parse_limit(request.GET, default=100, maximum=500)
    after = _after(request.GET)
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
    items.sort(key=position)
    if after is not None:
        items = [i for i in items if position(i) > after]
    page = items[:limit]
    following = list(position(page[-1])) if len(items) > limit else None
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
