from django.apps import AppConfig


class BrokersConfig(AppConfig):
    name = "collector.brokers"
    label = "brokers"
    verbose_name = "Broker metrics and consumer lag"
