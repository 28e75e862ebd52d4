"""GET /api/traces/<trace_id> and GET /api/events/<event_id>: one journey;
GET /api/search: what the search box finds; GET /api/traces: recent traces."""

from django.views.decorators.http import require_GET

from dashboard.access import api_view, json_error
from dashboard.journeys import queries as journeys
from dashboard.journeys.queries import recent as recent_traces
from dashboard.journeys.queries import search as searching
from dashboard.jsonapi import answers_bad_parameters, ok
from dashboard.links import event_url, trace_url
from dashboard.query_params import (
    decode_cursor,
    encode_cursor,
    parse_limit,
    parse_window,
    text_param,
)


@require_GET
@api_view()
def trace(request, trace_id):
    try:
        raw = journeys.parse_trace_id(trace_id)
    except ValueError as exc:
        return json_error(400, str(exc))
    try:
        found = journeys.trace(request.project.id, raw)
    except journeys.NotFound as exc:
        return json_error(404, str(exc))
    return ok(found)


@require_GET
@api_view()
@answers_bad_parameters
def event(request, event_id):
    source = text_param(request.GET, "source", max_length=10_000) or None
    try:
        found = journeys.event(request.project.id, event_id, source)
    except journeys.NotFound as exc:
        return json_error(404, str(exc))
    return ok(found)


def search_page(request, text: str) -> dict:
    """One page of what `text` finds, as the API and the search page show it."""
    query = searching.parse(text)
    limit = parse_limit(request.GET, default=50, maximum=500)
    cursor = searching.check_cursor(decode_cursor(request.GET))
    hits, following = searching.search(request.project.id, query, limit, cursor)
    for hit in hits:
        hit["time"] = journeys.iso(hit["time"])
        hit["url"] = (
            trace_url(hit["id"]) if hit["kind"] == "trace" else event_url(hit["id"], hit["source"])
        )
    return {
        "query": text,
        "kind": query.kind,
        "items": hits,
        "next_cursor": encode_cursor(following) if following is not None else None,
    }


def recent_page(request) -> dict:
    """One page of recent traces, as the API and the search page show it."""
    since, until = parse_window(request.GET, default="1h")
    filters = recent_traces.Filters.from_params(request.GET)
    limit = parse_limit(request.GET, default=50, maximum=500)
    cursor = recent_traces.parse_cursor(decode_cursor(request.GET))
    items, following = recent_traces.recent(
        request.project.id, filters, since, until, limit, cursor
    )
    for item in items:
        item["url"] = trace_url(item["trace_id"])
    return {
        "since": journeys.iso(since),
        "until": journeys.iso(until),
        "items": items,
        "next_cursor": encode_cursor(following) if following is not None else None,
    }


@require_GET
@api_view()
@answers_bad_parameters
def search(request):
    return ok(search_page(request, text_param(request.GET, "q", max_length=1000)))


@require_GET
@api_view()
@answers_bad_parameters
def traces(request):
    return ok(recent_page(request))
