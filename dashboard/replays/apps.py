from django.apps import AppConfig


class ReplaysConfig(AppConfig):
    name = "dashboard.replays"
    label = "replays"
    verbose_name = "Event replays"
