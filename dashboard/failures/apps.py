from django.apps import AppConfig


class FailuresConfig(AppConfig):
    name = "dashboard.failures"
    label = "failures"
    verbose_name = "Failed events"
