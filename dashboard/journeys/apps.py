from django.apps import AppConfig


class JourneysConfig(AppConfig):
    name = "dashboard.journeys"
    label = "journeys"
    verbose_name = "Traces and event journeys"
