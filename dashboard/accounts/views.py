"""Project administration: API tokens (create, list, revoke) and members (add,
create an account, change role, remove). Admin role only. Every change is
recorded in the audit log.

Adding an existing account is limited to people the admin can already see:
members of another project they administer (installation admins: anyone).
Any other name, whether no account has it or an account of a project the
admin has no part in, gets the same answer, so the form tells nothing about
who else uses the installation.
"""

from django.contrib import messages
from django.contrib.auth import get_user_model
from django.db import transaction
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.http import require_POST

from collector.models import ApiToken, Scope
from dashboard.access import page_view
from dashboard.accounts.forms import NewMemberForm
from dashboard.accounts.models import Membership, Role
from dashboard.audit.trail import changes, record
from dashboard.query_params import BadParameter, text_param

# The secret of a token just created, kept in the session between the POST
# and the page it redirects to, and dropped when that page is shown.
NEW_TOKEN = "new_token"


def _tokens_page(request, status=200):
    new_secret = new_token = None
    shown = request.session.pop(NEW_TOKEN, None)
    if shown and shown.get("project") == request.project.pk:
        new_token = ApiToken.objects.filter(pk=shown["token"], project=request.project).first()
        new_secret = shown["secret"] if new_token else None
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


def _token_target(token) -> str:
    return f"{token.scope} token “{token.name}” ({token.prefix}…)"


@page_view(Role.ADMIN)
def tokens(request):
    if request.method != "POST":
        return _tokens_page(request)
    try:
        name = text_param(request.POST, "name", max_length=101)
    except BadParameter as exc:
        messages.error(request, str(exc))
        return _tokens_page(request, status=400)
    scope = request.POST.get("scope") or ""
    if not name or len(name) > 100:
        messages.error(request, "Give the token a name (up to 100 characters).")
        return _tokens_page(request, status=400)
    if scope not in Scope.values:
        messages.error(request, f"Scope must be one of: {', '.join(Scope.values)}.")
        return _tokens_page(request, status=400)
    token, secret = ApiToken.issue(request.project, name, scope, created_by=request.user)
    record(
        "token.created",
        request=request,
        project=request.project,
        target=_token_target(token),
        details={"token_id": token.pk, "scope": scope, "prefix": token.prefix},
    )
    # Post/redirect/get: reloading the page that shows the secret must not
    # issue a second token. Only the digest is stored with the token.
    request.session[NEW_TOKEN] = {
        "project": request.project.pk,
        "token": token.pk,
        "secret": secret,
    }
    return redirect("tokens")


@require_POST
@page_view(Role.ADMIN)
def revoke_token(request, token_id):
    token = get_object_or_404(ApiToken, pk=token_id, project=request.project)
    if token.revoked_at is None:
        token.revoke()
        record(
            "token.revoked",
            request=request,
            project=request.project,
            target=_token_target(token),
            details={"token_id": token.pk, "scope": token.scope, "prefix": token.prefix},
        )
        messages.success(request, f"Token “{token.name}” revoked.")
    return redirect("tokens")


def addable_users(user, project):
    """Accounts `user` may add to `project`: members of the other projects
    they administer (anyone, for an installation admin), not yet in it."""
    users = get_user_model().objects.filter(is_active=True)
    if not user.is_superuser:
        administered = Membership.objects.filter(user=user, role=Role.ADMIN).values("project")
        users = users.filter(memberships__project__in=administered)
    return users.exclude(memberships__project=project).distinct().order_by("username")


def _members_page(request, status=200, new_member=None):
    return render(
        request,
        "tokens/members.html",
        {
            "memberships": Membership.objects.filter(project=request.project)
            .select_related("user")
            .order_by("user__username"),
            "roles": Role.choices,
            "new_member": new_member or NewMemberForm(auto_id="new-%s"),
            # A datalist of names the admin may add (bounded: it is a hint).
            "candidates": addable_users(request.user, request.project).values_list(
                "username", flat=True
            )[:500],
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
    try:
        username = text_param(request.POST, "username", max_length=150)
    except BadParameter as exc:
        messages.error(request, str(exc))
        return _members_page(request, status=400)
    role = request.POST.get("role") or ""
    if role not in Role.values:
        messages.error(request, f"Role must be one of: {', '.join(Role.values)}.")
        return _members_page(request, status=400)
    current = Membership.objects.filter(project=request.project, user__username=username).first()
    if current is not None:
        messages.error(request, f"{username} is already a member ({current.role}).")
        return _members_page(request, status=400)
    user = addable_users(request.user, request.project).filter(username=username).first()
    if user is None:
        # One answer for "no such account" and "an account you cannot see".
        messages.error(
            request,
            f"No account “{username}” that you can add. You can add members of the other "
            "projects you administer; for anyone else, create an account below.",
        )
        return _members_page(request, status=400)
    with transaction.atomic():
        membership, created = Membership.objects.get_or_create(
            user=user, project=request.project, defaults={"role": role}
        )
        if created:
            record(
                "member.added",
                request=request,
                project=request.project,
                target=f"user {username}",
                details={"role": role, "new_account": False},
            )
    if not created:  # added by someone else a moment ago
        messages.error(request, f"{username} is already a member ({membership.role}).")
        return _members_page(request, status=400)
    messages.success(request, f"{username} added as {role}.")
    return redirect("members")


@require_POST
@page_view(Role.ADMIN)
def create_member(request):
    """A new account that belongs to this project only (never a superuser)."""
    form = NewMemberForm(request.POST, auto_id="new-%s")
    if not form.is_valid():
        if form.has_error("username", "unique"):
            # Names are unique in the installation, so a taken one must be
            # refused; the attempt is on the record (see the module docstring).
            record(
                "member.create_refused",
                request=request,
                project=request.project,
                target=f"user {form.data.get('username', '')[:150]}",
                details={"reason": "username taken"},
            )
        return _members_page(request, status=400, new_member=form)
    with transaction.atomic():
        user = form.save_in(request.project)
        record(
            "member.added",
            request=request,
            project=request.project,
            target=f"user {user.username}",
            details={"role": form.cleaned_data["role"], "new_account": True},
        )
    messages.success(
        request,
        f"Account {user.username} created as {form.cleaned_data['role']}: "
        f"give them the password you chose; they sign in at {reverse('login')}.",
    )
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
        target = f"user {membership.user.username}"
        if action == "remove":
            membership.delete()
            record(
                "member.removed",
                request=request,
                project=request.project,
                target=target,
                details={"role": membership.role},
            )
            messages.success(request, f"{membership.user.username} removed.")
        else:
            role = request.POST.get("role") or ""
            if role not in Role.values:
                messages.error(request, f"Role must be one of: {', '.join(Role.values)}.")
                return _members_page(request, status=400)
            before = membership.role
            membership.role = role
            membership.save(update_fields=["role"])
            if before != role:
                record(
                    "member.role_changed",
                    request=request,
                    project=request.project,
                    target=target,
                    details=changes({"role": before}, {"role": role}),
                )
            messages.success(request, f"{membership.user.username} is now {role}.")
    return redirect("members")
