"""GET /api/openapi.json: an OpenAPI 3.1 description of every JSON API endpoint,
and /api/, the page that renders it (the vendored Swagger UI, read-only:
"Try it out" only sends GETs, with the visitor's session).

Each feature describes its own endpoints and schemas in its openapi.py
(PATHS and SCHEMAS); this puts them together. A new endpoint goes into its
feature's openapi.py, and into FEATURES here if the feature is new.
"""

from django.shortcuts import render
from django.views.decorators.http import require_GET

from dashboard.access import page_view
from dashboard.alerts import openapi as alerts
from dashboard.audit import openapi as audit
from dashboard.deadletters import openapi as deadletters
from dashboard.delivery import openapi as delivery
from dashboard.failures import openapi as failures
from dashboard.flow import openapi as flow
from dashboard.journeys import openapi as journeys
from dashboard.jsonapi import ERROR, ok
from dashboard.lag import openapi as lag
from dashboard.replays import openapi as replays

FEATURES = (flow, journeys, replays, failures, lag, alerts, audit, deadletters, delivery)


def _merged(part: str) -> dict:
    merged = {}
    for feature in FEATURES:
        for name, value in getattr(feature, part).items():
            if name in merged:
                raise ValueError(f"{feature.__name__} describes {name} again")
            merged[name] = value
    return merged


def document() -> dict:
    """The OpenAPI document (built per call: it is small and never hot)."""
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Eventscope API",
            "version": "1",
            "description": "Times are RFC 3339 in UTC. Lists are bounded and paginated with limit and cursor.",
        },
        "components": {
            "schemas": {"Error": ERROR, **_merged("SCHEMAS")},
            "securitySchemes": {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "read-scoped API token",
                },
                "session": {"type": "apiKey", "in": "cookie", "name": "sessionid"},
            },
        },
        "security": [{"bearer": []}, {"session": []}],
        "paths": _merged("PATHS"),
    }


@require_GET
def openapi(request):
    return ok(document())


@page_view()
def docs(request):
    return render(request, "api_docs.html", {"area": "api"})
