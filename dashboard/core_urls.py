"""Routes of the core dashboard: sign-in, flow, journeys, failures, tokens and the JSON API."""

from django.contrib.auth import views as auth_views
from django.urls import path

from dashboard.api import failures as api_failures
from dashboard.api import flow as api_flow
from dashboard.api import openapi as api_openapi
from dashboard.api import replays as api_replays
from dashboard.api import traces as api_traces
from dashboard.views import failures, flow, tokens, traces

urlpatterns = [
    path("login/", auth_views.LoginView.as_view(redirect_authenticated_user=True), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("", flow.flow, name="flow"),
    path("search/", traces.search, name="search"),
    path("traces/<str:trace_id>", traces.trace, name="trace"),
    path("events/", traces.event, name="event-by-id"),
    path("events/<path:event_id>", traces.event, name="event"),
    path("failures/", failures.failures, name="failures"),
    path("tokens/", tokens.tokens, name="tokens"),
    path("tokens/<int:token_id>/revoke", tokens.revoke_token, name="revoke-token"),
    path("members/", tokens.members, name="members"),
    path("members/new", tokens.create_member, name="create-member"),
    path("members/<int:membership_id>", tokens.change_member, name="change-member"),
    path("api/flow", api_flow.flow, name="api-flow"),
    path("api/traces/<str:trace_id>", api_traces.trace, name="api-trace"),
    # Before the event itself: <path:event_id> would take these suffixes as part of the id.
    path("api/events/<path:event_id>/replay", api_replays.replay, name="api-event-replay"),
    path("api/events/<path:event_id>/replays", api_replays.replay_list, name="api-event-replays"),
    path("api/events/<path:event_id>", api_traces.event, name="api-event"),
    path("api/failures", api_failures.failures, name="api-failures"),
    path("api/openapi.json", api_openapi.openapi, name="api-openapi"),
]
