"""URL map. Each feature keeps its routes (pages and JSON API) in its own urls.py."""

from django.templatetags.static import static
from django.urls import include, path
from django.views.generic import RedirectView

from dashboard import openapi

urlpatterns = [
    path("", include("dashboard.accounts.urls")),
    path("", include("dashboard.flow.urls")),
    # Before journeys: its api/events/<path:event_id> would take the
    # /replay and /replays suffixes as part of the id.
    path("", include("dashboard.replays.urls")),
    path("", include("dashboard.journeys.urls")),
    path("", include("dashboard.failures.urls")),
    path("", include("dashboard.delivery.urls")),
    path("", include("dashboard.lag.urls")),
    path("", include("dashboard.alerts.urls")),
    path("", include("dashboard.audit.urls")),
    path("", include("dashboard.deadletters.urls")),
    path("api/openapi.json", openapi.openapi, name="api-openapi"),
    path("api/", openapi.docs, name="api-docs"),
    # Browsers that ignore <link rel="icon"> still ask for /favicon.ico.
    path("favicon.ico", RedirectView.as_view(url=static("img/favicon.svg"), permanent=True)),
]

handler403 = "dashboard.errors.forbidden"
handler404 = "dashboard.errors.not_found"
handler500 = "dashboard.errors.server_error"
