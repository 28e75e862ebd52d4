from django.apps import AppConfig


class FlowConfig(AppConfig):
    name = "dashboard.flow"
    label = "flow"
    verbose_name = "Flow graph"
