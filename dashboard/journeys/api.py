"""GET /api/traces/<trace_id> and GET /api/events/<event_id>: one journey."""

from django.views.decorators.http import require_GET

from dashboard.access import api_view, json_error
from dashboard.journeys import queries as journeys
from dashboard.jsonapi import answers_bad_parameters, ok
from dashboard.query_params import text_param


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
