"""Error answers: the styled pages for people, the API's JSON shape under /api/.

An API client that mistypes a path, or asks for something that is not there,
gets `{"error": …}` like every other API error, not an HTML page it cannot
read.
"""

from django.urls import Resolver404
from django.views import defaults

from dashboard.access import json_error

API_PREFIX = "/api/"


def _is_api(request) -> bool:
    # /api/ itself is the API's documentation page, for people.
    return request.path.startswith(API_PREFIX) and request.path != API_PREFIX


def not_found(request, exception):
    if not _is_api(request):
        return defaults.page_not_found(request, exception)
    # A view's own Http404 says what is missing; the URL resolver's lists
    # every pattern it tried, which is no answer for a client.
    reason = "" if isinstance(exception, Resolver404) else str(exception or "")
    return json_error(
        404, reason or f"no API endpoint at {request.path}; the endpoints are listed at /api/"
    )


def forbidden(request, exception):
    if not _is_api(request):
        return defaults.permission_denied(request, exception)
    return json_error(403, str(exception) or "this needs a role or scope you do not have")


def server_error(request):
    if not _is_api(request):
        return defaults.server_error(request)
    return json_error(500, "internal error: the server log has the details")
