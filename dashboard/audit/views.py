"""/audit/: the audit log page, for admins, with filters and older pages.

The same view answers htmx requests from its filter form and pager with
only the table (`audit/page.html#events`); every link and form also works
without JavaScript.
"""

from django.http import QueryDict
from django.shortcuts import render

from dashboard.access import page_view
from dashboard.accounts.models import Role
from dashboard.audit.api import filtered, page
from dashboard.audit.models import ACTIONS, AuditEvent
from dashboard.query_params import BadParameter

PER_PAGE = 50


def _query(params, **changes) -> str:
    query = QueryDict(mutable=True)
    for name in ("project", "action", "actor", "since", "until"):
        if params.get(name):
            query[name] = params[name]
    for name, value in changes.items():
        query[name] = value
    return query.urlencode()


@page_view(Role.ADMIN)
def audit_page(request):
    events, following, error, status = [], None, None, 200
    try:
        queryset = filtered(
            AuditEvent.objects.visible_to(request.user, request.project), request.GET
        )
        events, following = page(queryset, request.GET, default_limit=PER_PAGE)
    except BadParameter as exc:
        error, status = str(exc), 400
    context = {
        "area": "audit",
        "events": events,
        "actions": sorted(ACTIONS),
        "filters": {k: request.GET.get(k, "") for k in ("action", "actor", "since", "until")},
        "older_query": _query(request.GET, cursor=following) if following else "",
        "newest_query": _query(request.GET, project=request.project.slug),
        "paged": bool(request.GET.get("cursor")),
        "error": error,
        "installation_wide": request.user.is_superuser,
    }
    template = "audit/page.html#events" if request.htmx else "audit/page.html"
    return render(request, template, context, status=status)
