"""Project administration: API tokens (create, list, revoke) and members (add,
change role, remove). Admin role only."""

from django.contrib import messages
from django.contrib.auth import get_user_model
from django.db import transaction
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_POST

from collector.models import ApiToken, Membership, Role, Scope
from dashboard.access import page_view


def _tokens_page(request, new_secret=None, new_token=None, status=200):
    return render(
        request,
        "tokens/page.html",
        {
            "tokens": ApiToken.objects.filter(project=request.project).select_related("created_by"),
            "scopes": Scope.choices,
            "new_secret": new_secret,
            "new_token": new_token,
            "area": "tokens",
        },
        status=status,
    )


@page_view(Role.ADMIN)
def tokens(request):
    if request.method != "POST":
        return _tokens_page(request)
    name = (request.POST.get("name") or "").strip()
    scope = request.POST.get("scope") or ""
    if not name or len(name) > 100:
        messages.error(request, "Give the token a name (up to 100 characters).")
        return _tokens_page(request, status=400)
    if scope not in Scope.values:
        messages.error(request, f"Scope must be one of: {', '.join(Scope.values)}.")
        return _tokens_page(request, status=400)
    token, secret = ApiToken.issue(request.project, name, scope, created_by=request.user)
    # The secret is shown in this response only; it is not stored anywhere.
    return _tokens_page(request, new_secret=secret, new_token=token)


@require_POST
@page_view(Role.ADMIN)
def revoke_token(request, token_id):
    token = get_object_or_404(ApiToken, pk=token_id, project=request.project)
    if token.revoked_at is None:
        token.revoke()
        messages.success(request, f"Token “{token.name}” revoked.")
    return redirect("tokens")


def _members_page(request, status=200):
    return render(
        request,
        "tokens/members.html",
        {
            "memberships": Membership.objects.filter(project=request.project)
            .select_related("user")
            .order_by("user__username"),
            "roles": Role.choices,
            "area": "members",
        },
        status=status,
    )


def _admins_left(project, without_pk) -> int:
    return (
        Membership.objects.filter(project=project, role=Role.ADMIN).exclude(pk=without_pk).count()
    )


@page_view(Role.ADMIN)
def members(request):
    if request.method != "POST":
        return _members_page(request)
    username = (request.POST.get("username") or "").strip()
    role = request.POST.get("role") or ""
    if role not in Role.values:
        messages.error(request, f"Role must be one of: {', '.join(Role.values)}.")
        return _members_page(request, status=400)
    user = get_user_model().objects.filter(username=username).first()
    if user is None:
        messages.error(request, f"There is no user “{username}”.")
        return _members_page(request, status=400)
    membership, created = Membership.objects.get_or_create(
        user=user, project=request.project, defaults={"role": role}
    )
    if not created:
        messages.error(request, f"{username} is already a member ({membership.role}).")
        return _members_page(request, status=400)
    messages.success(request, f"{username} added as {role}.")
    return redirect("members")


@require_POST
@page_view(Role.ADMIN)
def change_member(request, membership_id):
    with transaction.atomic():
        membership = get_object_or_404(
            Membership.objects.select_for_update(), pk=membership_id, project=request.project
        )
        action = request.POST.get("action")
        demoting = action == "remove" or request.POST.get("role") != Role.ADMIN
        if (
            membership.role == Role.ADMIN
            and demoting
            and not _admins_left(request.project, membership.pk)
        ):
            messages.error(request, "A project keeps at least one admin.")
            return _members_page(request, status=400)
        if action == "remove":
            membership.delete()
            messages.success(request, f"{membership.user.username} removed.")
        else:
            role = request.POST.get("role") or ""
            if role not in Role.values:
                messages.error(request, f"Role must be one of: {', '.join(Role.values)}.")
                return _members_page(request, status=400)
            membership.role = role
            membership.save(update_fields=["role"])
            messages.success(request, f"{membership.user.username} is now {role}.")
    return redirect("members")
