"""The failed events page (/failures/): groups with trends and the newest failures, live."""

from channels.db import database_sync_to_async
from django.shortcuts import render
from django.template.loader import render_to_string
from django.utils.http import urlencode

from dashboard import failures as failure_queries
from dashboard.access import page_view
from dashboard.live import LiveConsumer
from dashboard.query_params import BadParameter, parse_window
from dashboard.views.flow import window_choice

PAGE_SIZE = 50
GROUPS_SHOWN = 30


def failures_context(project_id: int, params) -> dict:
    """Everything the live part of the page shows, for the page and for pushes."""
    since, until = parse_window(params, default="24h")
    filters = failure_queries.Filters.from_params(params, since, until)
    groups, _ = failure_queries.groups(project_id, filters, GROUPS_SHOWN)
    rows, more = failure_queries.failures(project_id, filters, PAGE_SIZE)
    peak = max((max(g["trend"]) for g in groups), default=0)
    for group in groups:
        group["bars"] = [
            {"count": c, "height": h, "y": 24 - h, "x": i * 4}
            for i, c in enumerate(group["trend"])
            for h in [round(22 * c / peak, 1) if peak else 0]
        ]
    return {
        "groups": groups,
        "rows": rows,
        "more": more is not None,
        "filters": filters,
        "filters_query": urlencode(filters.query()),
    }


@page_view()
def failures(request):
    choice, error = window_choice(request, "24h")
    params = request.GET.copy()
    if error:
        params.pop("since", None)
        params.pop("until", None)
    context = failures_context(request.project.id, params)
    live_query = {**context["filters"].query(), "project": request.project.slug}
    if choice["window"] == "custom":
        live_query.update(since=choice["custom_since"], until=choice["custom_until"])
    else:
        live_query["window"] = choice["window"]
    context.update(choice=choice, error=error, live_query=urlencode(live_query), area="failures")
    if request.htmx:
        return render(request, "failures/page.html#live", context)
    return render(request, "failures/page.html", context, status=400 if error else 200)


class FailuresConsumer(LiveConsumer):
    """/ws/failures/: re-renders the groups and the newest failures as an htmx OOB swap."""

    areas = ("failures",)

    async def push(self):
        html = await database_sync_to_async(self._render)()
        await self.send(text_data=html)

    def _render(self) -> str:
        try:
            context = failures_context(self.project.id, self.params)
        except BadParameter:
            context = failures_context(self.project.id, {})
        context["oob"] = True
        return render_to_string("failures/page.html#live", context)
