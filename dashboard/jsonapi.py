"""The JSON API (CONTRACT §3): flow, traces, events, failures, and the OpenAPI document.

Views are plain functions behind `dashboard.access.api_view`; a parameter
the caller got wrong is answered 400 with a message saying which.
"""

import functools

from django.http import JsonResponse

from dashboard.access import json_error
from dashboard.query_params import BadParameter


def answers_bad_parameters(view):
    """Turn BadParameter raised by the view into a 400 with its message."""

    @functools.wraps(view)
    def wrapped(request, *args, **kwargs):
        try:
            return view(request, *args, **kwargs)
        except BadParameter as exc:
            return json_error(400, str(exc))

    return wrapped


def ok(data, status: int = 200) -> JsonResponse:
    return JsonResponse(data, status=status, json_dumps_params={"separators": (",", ":")})
