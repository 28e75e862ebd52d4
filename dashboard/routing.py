"""Websocket routes (/ws/...). Each area adds its consumers here."""

from django.urls import path

from dashboard.alerts.views import AlertsConsumer
from dashboard.deadletters.views import RedrivesConsumer
from dashboard.delivery.views import DeliveryConsumer
from dashboard.failures.views import FailuresConsumer
from dashboard.flow.views import FlowConsumer
from dashboard.lag.views import LagConsumer

websocket_urlpatterns = [
    path("ws/alerts/", AlertsConsumer.as_asgi()),
    path("ws/flow/", FlowConsumer.as_asgi()),
    path("ws/failures/", FailuresConsumer.as_asgi()),
    path("ws/delivery/", DeliveryConsumer.as_asgi()),
    path("ws/lag/", LagConsumer.as_asgi()),
    path("ws/redrives/", RedrivesConsumer.as_asgi()),
]
