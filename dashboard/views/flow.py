"""The flow graph page (/): services and channels with their traffic, live."""

from channels.db import database_sync_to_async
from django.shortcuts import render

from dashboard.access import page_view
from dashboard.flowgraph import flow_graph
from dashboard.live import LiveConsumer
from dashboard.query_params import WINDOWS, BadParameter, parse_window


def window_choice(request, default: str) -> tuple[dict, str | None]:
    """(since/until/window shown on the page, error message) from the query string."""
    params = request.GET
    try:
        since, until = parse_window(params, default=default)
        error = None
    except BadParameter as exc:
        error = str(exc)
        since, until = parse_window({}, default=default)
    custom = bool(params.get("since") or params.get("until")) and error is None
    window = (
        "custom"
        if custom
        else (params.get("window") if params.get("window") in WINDOWS else default)
    )
    return {
        "since": since,
        "until": until,
        "window": window,
        "windows": list(WINDOWS),
        "custom_since": params.get("since", ""),
        "custom_until": params.get("until", ""),
    }, error


@page_view()
def flow(request):
    choice, error = window_choice(request, "1h")
    graph = flow_graph(request.project.id, choice["since"], choice["until"])
    query = (
        {"window": choice["window"]}
        if choice["window"] != "custom"
        else {"since": choice["custom_since"], "until": choice["custom_until"]}
    )
    return render(
        request,
        "flow/page.html",
        {"graph": graph, "choice": choice, "error": error, "query": query, "area": "flow"},
        status=400 if error else 200,
    )


class FlowConsumer(LiveConsumer):
    """/ws/flow/: pushes the whole graph as JSON when the rollups change.

    The graph of a project is a few hundred edges at most, so a full
    snapshot is simpler than deltas and heals any missed message.
    """

    areas = ("flow",)

    async def push(self):
        graph = await database_sync_to_async(self._graph)()
        await self.send_json({"type": "flow", **graph})

    def _graph(self):
        try:
            since, until = parse_window(self.params, default="1h")
        except BadParameter as exc:
            return {"error": str(exc), "nodes": [], "edges": []}
        return flow_graph(self.project.id, since, until)
