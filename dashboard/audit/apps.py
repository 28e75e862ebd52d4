from django.apps import AppConfig


class AuditConfig(AppConfig):
    name = "dashboard.audit"
    label = "audit"
    verbose_name = "Audit log"

    def ready(self):
        # Connects the sign-in receivers (after axes', see settings).
        from dashboard.audit import signins  # noqa: F401
