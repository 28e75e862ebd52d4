"""The failed events page (/failures/): groups with trends and the newest failures, live."""

from channels.db import database_sync_to_async
from django.shortcuts import render
from django.template.loader import render_to_string
from django.urls import reverse
from django.utils.http import urlencode

from dashboard.access import page_view
from dashboard.failures import queries as failure_queries
from dashboard.links import event_url, failures_url, trace_url, window_query, with_query
from dashboard.live import LiveConsumer
from dashboard.query_params import (
    WINDOWS,
    BadParameter,
    encode_cursor,
    parse_window,
    window_choice,
)

PAGE_SIZE = 50
GROUPS_SHOWN = 30
DEFAULT_WINDOW = "24h"
WINDOW_KEYS = ("window", "since", "until")


def failures_context(project, params) -> dict:
    """Everything the live part of the page shows, for the page and for pushes:
    the groups of the window, and one page of the newest failures (`cursor`
    names where an older page starts).

    Every link keeps the window, the project and the other filters, so
    narrowing down never silently widens the window back to 24 hours.
    """
    shown_window = window_query(params, DEFAULT_WINDOW)
    since, until = parse_window(shown_window, default=DEFAULT_WINDOW)
    filters = failure_queries.Filters.from_params(params, since, until)
    cursor = failure_queries.list_cursor(params)
    groups, _ = failure_queries.groups(project.id, filters, GROUPS_SHOWN)
    try:
        rows, more = failure_queries.failures(project.id, filters, PAGE_SIZE, cursor)
    except ValueError:
        raise BadParameter("cursor is not one this page made") from None
    keep = {**shown_window, "project": project.slug}
    current = filters.query()
    peak = max((max(g["trend"]) for g in groups), default=0)
    for group in groups:
        group["bars"] = [
            {"count": c, "height": h, "y": 24 - h, "x": i * 4}
            for i, c in enumerate(group["trend"])
            for h in [round(22 * c / peak, 1) if peak else 0]
        ]
        group["service_url"] = failures_url(keep, **{**current, "service": group["service"]})
        group["channel_url"] = failures_url(
            keep, **{**current, "channel": group["channel"], "system": group["system"]}
        )
        # Only this group: its names and its fingerprint (the list matches it per row).
        group["fingerprint_url"] = failures_url(
            keep,
            **{
                **current,
                **{k: group[k] for k in ("service", "channel", "system", "group", "fingerprint")},
            },
        )
        # The dead letters of this group's failures, ready to redrive.
        group["redrive_url"] = with_query(
            reverse("dead-letters-for-failures"),
            {
                **keep,
                **{k: group[k] for k in ("service", "channel", "system", "group", "fingerprint")},
            },
        )
        group["example_links"] = [
            {"label": e["event_id"], "url": event_url(e["event_id"], e["source"], project.slug)}
            for e in group["example_events"]
        ] or [
            {"label": f"trace {t[:12]}", "url": trace_url(t, project.slug)}
            for t in group["example_traces"]
        ]
    for row in rows:
        if row["event_id"]:
            row["url"] = event_url(row["event_id"], row["source"], project.slug)
            row["redrive_url"] = with_query(
                reverse("dead-letters-for-failures"), {"event": row["event_id"], **keep}
            )
        elif row["trace_id"]:
            row["url"] = trace_url(row["trace_id"], project.slug)
    older = None
    if more is not None:
        older = failures_url(keep, **current, cursor=encode_cursor(more))
    return {
        "groups": groups,
        "rows": rows,
        "more": more is not None,
        "older_url": older,
        # On an older page, the way back to the newest failures.
        "newest_url": cursor is not None and failures_url(keep, **current),
        "filters": filters,
        "clear_url": failures_url(keep),
    }


def _page_params(request):
    """The query with the window the page shows: a preset chosen in the form wins
    over a since/until left in it, and a wrong window falls back to the default
    (with the message)."""
    params = request.GET.copy()
    window = params.get("window")
    if window in WINDOWS:
        params.pop("since", None)
        params.pop("until", None)
    elif window == "custom":
        params.pop("window")
    choice, error = window_choice(request, DEFAULT_WINDOW, params=params)
    if error:
        for name in WINDOW_KEYS:
            params.pop(name, None)
    return params, choice, error


@page_view()
def failures(request):
    params, choice, error = _page_params(request)
    try:
        context = failures_context(request.project, params)
    except BadParameter as exc:
        # A filter that can match nothing (a NUL character): say so, show the window.
        error = str(exc)
        context = failures_context(
            request.project, {k: params[k] for k in WINDOW_KEYS if k in params}
        )
    live_query = {**context["filters"].query(), "project": request.project.slug}
    live_query.update(window_query(params, DEFAULT_WINDOW))
    if context["newest_url"]:
        live_query["cursor"] = params["cursor"]  # an older page stays that page
    context.update(choice=choice, error=error, live_query=urlencode(live_query), area="failures")
    if request.htmx:
        # The filter form and the pager ask for the results only. htmx swaps
        # only 2xx answers, so a wrong filter's message comes with a 200.
        return render(request, "failures/page.html#results", context)
    return render(request, "failures/page.html", context, status=400 if error else 200)


class FailuresConsumer(LiveConsumer):
    """/ws/failures/: re-renders the groups and the newest failures as an htmx OOB swap."""

    areas = ("failures",)

    async def push(self):
        html = await database_sync_to_async(self._render)()
        await self.send(text_data=html)

    def _render(self) -> str:
        try:
            context = failures_context(self.project, self.params)
        except BadParameter:
            context = failures_context(self.project, {})
        context["oob"] = True
        return render_to_string("failures/page.html#live", context)
