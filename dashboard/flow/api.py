"""GET /api/flow: the flow graph of a time window."""

from django.views.decorators.http import require_GET

from dashboard.access import api_view
from dashboard.flow.queries import DEFAULT_EDGES, MAX_EDGES, flow_graph
from dashboard.flow.series import flow_series, parse_subject
from dashboard.jsonapi import answers_bad_parameters, ok
from dashboard.query_params import parse_limit, parse_window


@require_GET
@api_view()
@answers_bad_parameters
def flow(request):
    since, until = parse_window(request.GET, default="1h")
    limit = parse_limit(request.GET, default=DEFAULT_EDGES, maximum=MAX_EDGES)
    return ok(flow_graph(request.project.id, since, until, limit))


@require_GET
@api_view()
@answers_bad_parameters
def series(request):
    since, until = parse_window(request.GET, default="1h")
    subject = parse_subject(request.GET)
    return ok(flow_series(request.project.id, since, until, **subject))
