"""Search by id, and the journey pages: /traces/<trace_id> and /events/<event_id>."""

import json

from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils.http import urlencode

from dashboard import journeys
from dashboard.access import page_view


@page_view()
def search(request):
    query = (request.GET.get("q") or "").strip()
    source = (request.GET.get("source") or "").strip()
    message = None
    if query:
        found = journeys.find(request.project.id, query, source or None)
        if found is not None:
            kind, ident = found
            if kind == "trace":
                return redirect(reverse("trace", args=[ident]))
            url = reverse("event", args=[ident])
            return redirect(f"{url}?{urlencode({'source': source})}" if source else url)
        message = f"Nothing with id {query!r} in this project."
    return render(
        request,
        "traces/search.html",
        {"q": query, "source": source, "message": message, "area": "search"},
        status=404 if message else 200,
    )


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
        return render(
            request, "traces/search.html", {"q": trace_id, "message": str(exc)}, status=400
        )
    except journeys.NotFound as exc:
        return render(
            request, "traces/search.html", {"q": trace_id, "message": str(exc)}, status=404
        )
    return _journey_page(request, journey, f"Trace {journey['trace_id']}")


@page_view()
def event(request, event_id):
    source = (request.GET.get("source") or "").strip() or None
    try:
        journey = journeys.event(request.project.id, event_id, source)
    except journeys.NotFound as exc:
        return render(
            request, "traces/search.html", {"q": event_id, "message": str(exc)}, status=404
        )
    return _journey_page(request, journey, f"Event {event_id}")
