"""Routes of event replays (JSON API; the form is on the event's journey page)."""

from django.urls import path

from dashboard.replays import api

urlpatterns = [
    path("api/events/<path:event_id>/replay", api.replay, name="api-event-replay"),
    path("api/events/<path:event_id>/replays", api.replay_list, name="api-event-replays"),
]
