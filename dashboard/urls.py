"""URL map. Each area keeps its routes in its own module."""

from django.urls import include, path

urlpatterns = [
    path("", include("dashboard.core_urls")),
    path("", include("dashboard.lag.urls")),
    path("", include("dashboard.alerts.urls")),
    path("", include("dashboard.audit.urls")),
]
