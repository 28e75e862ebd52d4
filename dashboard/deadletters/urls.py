"""Routes of the dead letters: pages, and the API of CONTRACT §7."""

from django.urls import path

from dashboard.deadletters import api, views

urlpatterns = [
    path("dead-letters/", views.dead_letters, name="dead-letters"),
    path("dead-letters/for-failures/", views.for_failures, name="dead-letters-for-failures"),
    path("dead-letters/<str:system>/<path:name>", views.queue, name="dead-letter-queue"),
    path("redrives/start", views.start_redrive, name="redrive-start"),
    path("redrives/<int:redrive_id>/", views.redrive_page, name="redrive"),
    path("redrives/<int:redrive_id>/cancel", views.cancel_redrive, name="redrive-cancel"),
    path("api/dead-letters", api.dead_letters, name="api-dead-letters"),
    path(
        "api/dead-letters/<str:system>/<path:name>/messages",
        api.messages,
        name="api-dead-letter-messages",
    ),
    path("api/redrives", api.redrives, name="api-redrives"),
    path("api/redrives/<int:redrive_id>", api.redrive, name="api-redrive"),
    path("api/redrives/<int:redrive_id>/cancel", api.cancel, name="api-redrive-cancel"),
]
