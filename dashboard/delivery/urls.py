"""Routes of delivery: the page, its two actions and GET /api/findings."""

from django.urls import path

from dashboard.delivery import api, views

urlpatterns = [
    path("delivery/", views.delivery, name="delivery"),
    path("delivery/channel", views.channel_setting, name="delivery-channel"),
    path("delivery/retire", views.retire_group, name="delivery-retire"),
    path("api/findings", api.findings, name="api-findings"),
]
