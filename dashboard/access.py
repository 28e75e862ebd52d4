"""Who may see what: authentication for pages and the JSON API, and the
project every query is scoped to.

A request is authenticated either by the browser session (Django auth) or,
for the JSON API, by `Authorization: Bearer <token>` with a read-scoped API
token. Either way it ends up with `request.project`: one project the caller
may read, chosen by `?project=<slug>` or remembered in the session. Every
telemetry query filters on `request.project.id`; an id from another project
simply finds nothing (404), so guessing ids reveals nothing.
"""

import datetime as dt
import functools

from django.contrib.auth.views import redirect_to_login
from django.db.models import Q
from django.http import Http404, JsonResponse
from django.utils import timezone
from django.views.decorators.csrf import csrf_exempt

from collector.models import ApiToken, Project, Scope
from dashboard.accounts.models import Membership, Role, projects_of
from dashboard.query_params import BadParameter, clean_text

SESSION_PROJECT = "project_id"
# A token's "last used" is for people deciding whether it can be revoked;
# minute precision is plenty, and it spares a write on every API request.
LAST_USED_EVERY = dt.timedelta(minutes=1)


def json_error(status: int, message: str, **extra) -> JsonResponse:
    """The API's one error shape: {"error": message, ...}."""
    return JsonResponse({"error": message, **extra}, status=status)


def bearer_token(request) -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    return None


def _choose_project(request, projects):
    """The project named by ?project=slug, else the session's, else the first."""
    slug = request.GET.get("project")
    if slug:
        try:
            clean_text("project", slug)
        except BadParameter:
            raise Http404("no such project") from None
        project = projects.filter(slug=slug).first()
        if project is None:
            raise Http404(f"no project {slug!r} that you can see")
        return project
    remembered = request.session.get(SESSION_PROJECT) if hasattr(request, "session") else None
    if remembered:
        project = projects.filter(pk=remembered).first()
        if project is not None:
            return project
    return projects.order_by("name").first()


def _remember(request, project):
    if hasattr(request, "session") and request.user.is_authenticated:
        if request.session.get(SESSION_PROJECT) != project.pk:
            request.session[SESSION_PROJECT] = project.pk


def note_token_use(token: ApiToken) -> None:
    """Record that a read token was used, at most once per LAST_USED_EVERY.

    A conditional UPDATE: concurrent requests of one token write once, and
    the usual request (used within the minute) writes nothing.
    """
    now = timezone.now()
    ApiToken.objects.filter(
        Q(last_used_at__isnull=True) | Q(last_used_at__lt=now - LAST_USED_EVERY), pk=token.pk
    ).update(last_used_at=now)


def api_view(role: str = Role.VIEWER):
    """Decorator for JSON API views: session or read-token auth, project scope, role.

    Sets `request.project` and `request.api_token` (None for session auth).
    Answers 401 without credentials, 403 without the role, 404 for a project
    the caller cannot see. Tokens are read-only: a view needing more than the
    viewer role only accepts session users (with CSRF protection).
    """

    def decorator(view):
        @functools.wraps(view)
        def wrapped(request, *args, **kwargs):
            token = bearer_token(request)
            request.api_token = None
            if token is not None:
                api_token = ApiToken.objects.authenticate(token, Scope.READ)
                if api_token is None:
                    return json_error(
                        401, "invalid or revoked API token (a read-scoped token is needed)"
                    )
                if Role.rank(role) > Role.rank(Role.VIEWER):
                    return json_error(403, "API tokens are read-only; sign in to change things")
                request.api_token = api_token
                note_token_use(api_token)
                projects = Project.objects.filter(pk=api_token.project_id)
            else:
                if not request.user.is_authenticated:
                    return json_error(
                        401, "authentication required: sign in or send a Bearer token"
                    )
                projects = projects_of(request.user)
            try:
                project = _choose_project(request, projects)
            except Http404 as exc:
                return json_error(404, str(exc))
            if project is None:
                return json_error(403, "you are not a member of any project")
            if token is None and not Membership.has_role(request.user, project.pk, role):
                return json_error(403, f"this needs the {role} role in project {project.slug!r}")
            request.project = project
            return view(request, *args, **kwargs)

        # Token requests carry no cookies, so CSRF does not apply to them;
        # session requests are checked here instead of by the middleware.
        def csrf_aware(request, *args, **kwargs):
            if bearer_token(request) is None and request.method not in ("GET", "HEAD", "OPTIONS"):
                from django.middleware.csrf import CsrfViewMiddleware

                reason = CsrfViewMiddleware(lambda r: None).process_view(request, None, (), {})
                if reason is not None:
                    return json_error(403, "CSRF check failed: send the X-CSRFToken header")
            return wrapped(request, *args, **kwargs)

        return csrf_exempt(functools.wraps(view)(csrf_aware))

    return decorator


def page_view(role: str = Role.VIEWER):
    """Decorator for HTML pages: login required, `request.project` set, role checked.

    `request.projects` lists every project the user can switch to.
    """

    def decorator(view):
        @functools.wraps(view)
        def wrapped(request, *args, **kwargs):
            if not request.user.is_authenticated:
                return redirect_to_login(request.get_full_path())
            projects = projects_of(request.user)
            project = _choose_project(request, projects)
            if project is None:
                from django.shortcuts import render

                return render(request, "no_project.html", status=403)
            if not Membership.has_role(request.user, project.pk, role):
                from django.core.exceptions import PermissionDenied

                raise PermissionDenied(f"this page needs the {role} role")
            _remember(request, project)
            request.project = project
            request.projects = projects
            request.role = _role_of(request.user, project)
            return view(request, *args, **kwargs)

        return wrapped

    return decorator


def _role_of(user, project) -> str:
    if user.is_superuser:
        return Role.ADMIN
    return (
        Membership.objects.filter(user=user, project=project).values_list("role", flat=True).first()
        or ""
    )


def can(request, role: str) -> bool:
    """For templates and views: does the current user hold `role` in request.project?"""
    return Role.rank(getattr(request, "role", "")) >= Role.rank(role)
