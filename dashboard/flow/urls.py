"""Routes of the flow graph: the page (/), GET /api/flow and GET /api/flow/series."""

from django.urls import path

from dashboard.flow import api, views

urlpatterns = [
    path("", views.flow, name="flow"),
    path("api/flow", api.flow, name="api-flow"),
    path("api/flow/series", api.series, name="api-flow-series"),
]
