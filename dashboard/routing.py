"""Websocket routes (/ws/...). Each area adds its consumers here."""

from django.urls import path

from dashboard.alerts.views import AlertsConsumer
from dashboard.lag.views import LagConsumer
from dashboard.views.failures import FailuresConsumer
from dashboard.views.flow import FlowConsumer

websocket_urlpatterns = [
    path("ws/alerts/", AlertsConsumer.as_asgi()),
    path("ws/flow/", FlowConsumer.as_asgi()),
    path("ws/failures/", FailuresConsumer.as_asgi()),
    path("ws/lag/", LagConsumer.as_asgi()),
]
