"""Delivery findings on flow-graph edges: `delivery` on each consume edge."""

from dashboard.delivery.counts import edge_counts

KINDS = ("duplicate", "missing", "late", "out_of_order", "poison")


def add_to_edges(project_id, since, until, edges: list[dict]) -> None:
    """Give every consume edge `delivery` = {kind: distinct events} of the
    window (zeros included), other edges None."""
    counts = {
        key: {**dict.fromkeys(KINDS, 0), **kinds}
        for key, kinds in edge_counts(project_id, since, until).items()
    }
    for edge in edges:
        if edge["kind"] != "consume":
            edge["delivery"] = None
            continue
        _, _, rest = edge["source"].partition(":")
        system, _, channel = rest.partition(":")
        group = edge["group"] or edge["target"].partition(":")[2]
        edge["delivery"] = counts.get((system, channel, group), dict.fromkeys(KINDS, 0))
