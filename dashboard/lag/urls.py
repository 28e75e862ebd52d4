"""Routes of the consumer lag area: the pages and GET /api/lag."""

from django.urls import path

from dashboard.lag import api, views

urlpatterns = [
    path("lag/", views.overview, name="lag"),
    path("lag/<str:system>/<path:rest>", views.group_detail, name="lag-group"),
    path("api/lag", api.lag_list, name="api-lag"),
]
