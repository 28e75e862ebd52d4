"""Delivery findings on flow-graph edges: `delivery` on each consume edge."""

from dashboard.delivery.models import Finding

KINDS = ("duplicate", "missing", "late", "out_of_order", "poison")


def add_to_edges(project_id, since, until, edges: list[dict]) -> None:
    """Give every consume edge `delivery` = {kind: distinct events} of the
    window (zeros included), other edges None."""
    counts: dict = {}
    rows = (
        Finding.objects.filter(project_id=project_id, event_time__gte=since, event_time__lt=until)
        .values_list("system", "channel", "group", "kind")
        .order_by()
    )
    from django.db.models import Count

    for system, channel, group, kind, n in rows.annotate(n=Count("id")):
        counts.setdefault((system, channel, group), dict.fromkeys(KINDS, 0))[kind] = n
    for edge in edges:
        if edge["kind"] != "consume":
            edge["delivery"] = None
            continue
        _, _, rest = edge["source"].partition(":")
        system, _, channel = rest.partition(":")
        group = edge["group"] or edge["target"].partition(":")[2]
        edge["delivery"] = counts.get((system, channel, group), dict.fromkeys(KINDS, 0))
