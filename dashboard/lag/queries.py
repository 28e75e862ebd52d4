"""Which consumer groups a lag page or GET /api/lag shows: filtered, in an
order that does not move while figures change, a page at a time; and which
configured brokers are not answering."""

from django.db import connection

from collector.brokers import lag
from dashboard.query_params import BadParameter, decode_cursor

BAD_CURSOR = "cursor is not one this API returned"


def statuses(params) -> list[str]:
    """The statuses asked for with `status=` (comma-separated); [] for all."""
    chosen = [s for s in (params.get("status") or "").split(",") if s]
    unknown = [s for s in chosen if s not in lag.STATUSES]
    if unknown:
        raise BadParameter(
            f"status={unknown[0]!r}: expected one or more of {', '.join(lag.STATUSES)}"
        )
    return chosen


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


def after(params) -> tuple | None:
    """The position a page starts after, from `cursor`; None for the first page."""
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


def page(items: list[dict], start_after: tuple | None, limit: int):
    """(the items of one page, the position to continue after or None), worst first."""
    items = sorted(items, key=position)
    if start_after is not None:
        items = [i for i in items if position(i) > start_after]
    shown = items[:limit]
    following = list(position(shown[-1])) if len(items) > limit else None
    return shown, following


def unreachable_brokers(project_id: int) -> list[dict]:
    with connection.cursor() as cursor:
        cursor.execute(
            """
            SELECT source, system, error, error_since, last_ok_at FROM brokers_brokerstate
            WHERE project_id = %s AND error <> '' ORDER BY source
            """,
            [project_id],
        )
        return [
            {"source": s, "system": k, "error": e, "since": since, "last_ok_at": ok}
            for s, k, e, since, ok in cursor.fetchall()
        ]
