from django.apps import AppConfig


class LagConfig(AppConfig):
    name = "dashboard.lag"
    label = "lag"
    verbose_name = "Consumer lag"
