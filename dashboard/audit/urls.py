"""Routes of the audit log: its page and its JSON API."""

from django.urls import path

from dashboard.audit import api, views

urlpatterns = [
    path("audit/", views.audit_page, name="audit"),
    path("api/audit", api.audit, name="api-audit"),
]
