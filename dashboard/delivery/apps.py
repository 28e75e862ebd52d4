from django.apps import AppConfig


class DeliveryConfig(AppConfig):
    name = "dashboard.delivery"
    label = "delivery"
    verbose_name = "Delivery guarantees"
