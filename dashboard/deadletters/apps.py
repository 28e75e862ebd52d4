from django.apps import AppConfig


class DeadLettersConfig(AppConfig):
    name = "dashboard.deadletters"
    label = "deadletters"
    verbose_name = "Dead letters and redrives"
