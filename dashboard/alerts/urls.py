"""Routes of alert rules, webhooks and alerts: pages and JSON API."""

from django.urls import path

from dashboard.alerts import api, views

urlpatterns = [
    path("alerts/", views.alerts_page, name="alerts"),
    path("alerts/rules/new", views.rule_form, name="alert-rule-new"),
    path("alerts/rules/<int:rule_id>/edit", views.rule_form, name="alert-rule-edit"),
    path("alerts/rules/<int:rule_id>/mute", views.mute_rule, name="alert-rule-mute"),
    path("alerts/rules/<int:rule_id>/delete", views.remove_rule, name="alert-rule-delete"),
    path("webhooks/", views.webhooks_page, name="webhooks"),
    path("webhooks/<int:webhook_id>/", views.webhook_page, name="webhook"),
    path("webhooks/<int:webhook_id>/test", views.test_webhook, name="webhook-test"),
    path("webhooks/<int:webhook_id>/delete", views.remove_webhook, name="webhook-delete"),
    path("api/alert-rules", api.alert_rules, name="api-alert-rules"),
    path("api/alert-rules/<int:rule_id>", api.alert_rule, name="api-alert-rule"),
    path("api/webhooks", api.webhooks, name="api-webhooks"),
    path("api/webhooks/<int:webhook_id>", api.webhook, name="api-webhook"),
    path("api/webhooks/<int:webhook_id>/test", api.webhook_test, name="api-webhook-test"),
    path("api/alerts", api.alerts, name="api-alerts"),
]
