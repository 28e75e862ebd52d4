"""Websocket routes (/ws/...). Each area adds its consumers here."""

websocket_urlpatterns = []
