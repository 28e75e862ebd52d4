"""Search by id, and the journey pages: /traces/<trace_id> and /events/<event_id>
(or /events/?id=…, for ids that cannot travel in a path; see dashboard.links)."""

import json

from django.shortcuts import redirect, render
from django.urls import reverse

from dashboard import journeys
from dashboard.access import page_view
from dashboard.links import event_url
from dashboard.query_params import BadParameter, text_param


def _search_page(request, query, source, message, status):
    return render(
        request,
        "traces/search.html",
        {"q": query, "source": source, "message": message, "area": "search"},
        status=status,
    )


@page_view()
def search(request):
    try:
        query = text_param(request.GET, "q", max_length=1000)
        source = text_param(request.GET, "source", max_length=1000)
    except BadParameter as exc:
        return _search_page(request, "", "", str(exc), 400)
    message = None
    if query:
        found = journeys.find(request.project.id, query, source or None)
        if found is not None:
            kind, ident = found
            if kind == "trace":
                return redirect(reverse("trace", args=[ident]))
            return redirect(event_url(ident, source or None))
        message = f"Nothing with id {query!r} in this project."
    return _search_page(request, query, source, message, 404 if message else 200)


def _journey_page(request, journey, title):
    for envelope in journey["envelopes"]:
        if envelope["data"] is not None:
            envelope["pretty"] = json.dumps(envelope["data"], indent=2, ensure_ascii=False)
        else:
            envelope["pretty"] = envelope["data_text"] or "(no data)"
    journey.setdefault("errors", [s for s in journey["stages"] if s["error"]])
    rows = journeys.waterfall(journey)
    return render(
        request,
        "traces/journey.html",
        {
            "journey": journey,
            "title": title,
            "area": "search",
            "rows": {"rows": rows, "duration_ms": journey["duration_ms"]},
        },
    )


@page_view()
def trace(request, trace_id):
    try:
        journey = journeys.trace(request.project.id, journeys.parse_trace_id(trace_id))
    except ValueError as exc:
        return _search_page(request, trace_id, "", str(exc), 400)
    except journeys.NotFound as exc:
        return _search_page(request, trace_id, "", str(exc), 404)
    return _journey_page(request, journey, f"Trace {journey['trace_id']}")


@page_view()
def event(request, event_id=None):
    """/events/<id>, or /events/?id=<id> for any id (the links this app builds)."""
    try:
        if event_id is None:
            event_id = text_param(request.GET, "id", max_length=10_000)
            if not event_id:
                return redirect("search")
        source = text_param(request.GET, "source", max_length=10_000) or None
    except BadParameter as exc:
        return _search_page(request, "", "", str(exc), 400)
    try:
        journey = journeys.event(request.project.id, event_id, source)
    except journeys.NotFound as exc:
        return _search_page(request, event_id, source or "", str(exc), 404)
    return _journey_page(request, journey, f"Event {event_id}")
