"""Routes of failed events: the page and GET /api/failures."""

from django.urls import path

from dashboard.failures import api, views

urlpatterns = [
    path("failures/", views.failures, name="failures"),
    path("api/failures", api.failures, name="api-failures"),
]
