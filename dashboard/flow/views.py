"""The flow graph page (/): services and channels with their traffic, live."""

from channels.db import database_sync_to_async
from django.shortcuts import render
from django.urls import reverse
from django.utils.http import urlencode

from dashboard.access import page_view
from dashboard.flow.queries import DEFAULT_EDGES, MAX_EDGES, flow_graph
from dashboard.links import flow_links, window_query, with_query
from dashboard.live import LiveConsumer
from dashboard.query_params import BadParameter, parse_limit, parse_window, window_choice


def _limit(params) -> int:
    return parse_limit(params, default=DEFAULT_EDGES, maximum=MAX_EDGES)


@page_view()
def flow(request):
    choice, error = window_choice(request, "1h")
    try:
        limit = _limit(request.GET)
    except BadParameter as exc:
        error, limit = str(exc), DEFAULT_EDGES
    graph = flow_graph(request.project.id, choice["since"], choice["until"], limit)
    query = (
        {"window": choice["window"]}
        if choice["window"] != "custom"
        else {"since": choice["custom_since"], "until": choice["custom_until"]}
    )
    keep = {**query, "project": request.project.slug}
    graph = flow_links(graph, keep)
    live_query = {**keep, "limit": limit} if limit != DEFAULT_EDGES else keep
    return render(
        request,
        "flow/page.html",
        {
            "graph": graph,
            "choice": choice,
            "error": error,
            "search_url": with_query(reverse("search"), keep),
            "live_query": urlencode(live_query),
            "series_query": urlencode(keep),
            "limit": limit,
            "area": "flow",
        },
        status=400 if error else 200,
    )


class FlowConsumer(LiveConsumer):
    """/ws/flow/: pushes the whole graph as JSON when the rollups change.

    The graph is bounded (the busiest edges, as the page and the API), so a
    full snapshot is simpler than deltas and heals any missed message. Consume
    edges carry their group's lag, so new broker figures refresh it too. Nodes
    and edges carry their links (dashboard.links.flow_links), as on the page.
    """

    areas = ("flow", "lag")

    async def push(self):
        graph = await database_sync_to_async(self._graph)()
        await self.send_json({"type": "flow", **graph})

    def _graph(self):
        try:
            since, until = parse_window(self.params, default="1h")
            limit = _limit(self.params)
        except BadParameter as exc:
            return {"error": str(exc), "nodes": [], "edges": [], "truncated": False}
        keep = {**window_query(self.params, "1h"), "project": self.project.slug}
        return flow_links(flow_graph(self.project.id, since, until, limit), keep)
