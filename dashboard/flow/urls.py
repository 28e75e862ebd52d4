"""Routes of the flow graph: the page (/) and GET /api/flow."""

from django.urls import path

from dashboard.flow import api, views

urlpatterns = [
    path("", views.flow, name="flow"),
    path("api/flow", api.flow, name="api-flow"),
]
