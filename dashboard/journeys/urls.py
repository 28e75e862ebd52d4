"""Routes of search and journeys: /search/, /traces/<id>, /events/<id> and their JSON API."""

from django.urls import path

from dashboard.journeys import api, views

urlpatterns = [
    path("search/", views.search, name="search"),
    path("traces/<str:trace_id>", views.trace, name="trace"),
    path("events/", views.event, name="event-by-id"),
    path("events/<path:event_id>", views.event, name="event"),
    path("api/search", api.search, name="api-search"),
    path("api/traces", api.traces, name="api-traces"),
    path("api/traces/<str:trace_id>", api.trace, name="api-trace"),
    path("api/events/<path:event_id>", api.event, name="api-event"),
]
