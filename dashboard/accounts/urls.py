"""Routes of signing in and of project administration: API tokens and members."""

from django.contrib.auth import views as auth_views
from django.urls import path

from dashboard.accounts import views

urlpatterns = [
    path("login/", auth_views.LoginView.as_view(redirect_authenticated_user=True), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("tokens/", views.tokens, name="tokens"),
    path("tokens/<int:token_id>/revoke", views.revoke_token, name="revoke-token"),
    path("members/", views.members, name="members"),
    path("members/new", views.create_member, name="create-member"),
    path("members/<int:membership_id>", views.change_member, name="change-member"),
]
