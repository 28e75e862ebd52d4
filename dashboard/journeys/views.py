"""Search (ids, prefixes, subjects, payload fields; recent traces when the box
is empty), and the journey pages: /traces/<trace_id> and /events/<event_id>
(or /events/?id=…, for ids that cannot travel in a path; see dashboard.links).

An event's page also lists its replays, and editors replay it from there:
the form POSTs to the page's own URL (with htmx, only the replays panel is
swapped; without, the page reloads with a message)."""

import json

from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.http import Http404
from django.shortcuts import redirect, render
from django.urls import reverse

from dashboard.access import can, page_view
from dashboard.accounts.models import Role
from dashboard.deadletters.models import Redrive
from dashboard.deadletters.views import redrive_url
from dashboard.delivery import queries as delivery
from dashboard.journeys import api
from dashboard.journeys import queries as journeys
from dashboard.links import event_url, with_query
from dashboard.query_params import BadParameter, text_param, window_choice
from dashboard.replays import send as replays
from dashboard.replays.models import Replay

REPLAYS_SHOWN = 50


def _search_page(request, query, source, message, status, **more):
    return render(
        request,
        "traces/search.html",
        {"q": query, "source": source, "message": message, "area": "search", **more},
        status=status,
    )


def _recent(request):
    """The search page with an empty box: recent traces, filtered and paged."""
    choice, error = window_choice(request, "1h")
    filters = {k: request.GET.get(k, "")[:1000] for k in ("service", "channel", "system", "status")}
    page = {"items": [], "next_cursor": None}
    if error is None:
        try:
            page = api.recent_page(request)
        except BadParameter as exc:
            error = str(exc)
    keep = {k: v for k, v in request.GET.items() if k not in ("cursor", "q", "source")}
    context = {
        "recent": page["items"],
        "filters": filters,
        "choice": choice,
        "older_url": with_query(reverse("search"), {**keep, "cursor": page["next_cursor"]})
        if page["next_cursor"]
        else None,
        "newest_url": with_query(reverse("search"), keep) if request.GET.get("cursor") else None,
    }
    status = 400 if error else 200
    if request.htmx:
        return render(
            request, "traces/search.html#recent", {**context, "message": error}, status=status
        )
    return _search_page(request, "", "", error, status, recent_shown=True, **context)


@page_view()
def search(request):
    try:
        query = text_param(request.GET, "q", max_length=1000)
        source = text_param(request.GET, "source", max_length=1000)
    except BadParameter as exc:
        return _search_page(request, "", "", str(exc), 400)
    if not query:
        return _recent(request)
    if source:
        return redirect(event_url(query, source))
    try:
        page = api.search_page(request, query)
    except BadParameter as exc:
        return _search_page(request, query, source, str(exc), 400)
    hits = page["items"]
    if len(hits) == 1 and not request.GET.get("cursor"):
        return redirect(hits[0]["url"])
    if not hits:
        message = f"Nothing matches {query!r} in this project."
        return _search_page(request, query, source, message, 404)
    keep = {k: v for k, v in request.GET.items() if k != "cursor"}
    older = page["next_cursor"]
    return _search_page(
        request,
        query,
        source,
        None,
        200,
        hits=hits,
        kind=page["kind"],
        older_url=with_query(reverse("search"), {**keep, "cursor": older}) if older else None,
        newest_url=with_query(reverse("search"), keep) if request.GET.get("cursor") else None,
    )


def _journey_page(request, journey, title, replay_panel=None):
    for envelope in journey["envelopes"]:
        if envelope["data"] is not None:
            envelope["pretty"] = json.dumps(envelope["data"], indent=2, ensure_ascii=False)
        else:
            envelope["pretty"] = envelope["data_text"] or "(no data)"
    journey.setdefault("errors", [s for s in journey["stages"] if s["error"]])
    rows = journeys.waterfall(journey)
    # Redrives of the event's (or the traces') dead letters back to the broker.
    redrives = Redrive.objects.touching(
        request.project, event_id=journey.get("event_id"), trace_ids=journey.get("traces", ())
    )[:REPLAYS_SHOWN]
    traces = list(
        journey.get("traces") or ([journey["trace_id"]] if journey.get("trace_id") else [])
    )
    events = sorted({s["event_id"] for s in journey["stages"] if s.get("event_id")})
    findings = delivery.for_traces(request.project.id, traces) + delivery.for_events(
        request.project.id, events
    )
    journey["delivery"] = [
        {**f, "label": f["kind"].replace("_", " ")}
        for f in {tuple(f.values()): f for f in findings}.values()
    ]
    return render(
        request,
        "traces/journey.html",
        {
            "journey": journey,
            "title": title,
            "area": "search",
            "rows": {"rows": rows, "duration_ms": journey["duration_ms"]},
            "replay": replay_panel,
            "redrives": [
                {"r": r, "url": redrive_url(r.pk, request.project.slug)} for r in redrives
            ],
        },
    )


@page_view()
def trace(request, trace_id):
    try:
        journey = journeys.trace(request.project.id, journeys.parse_trace_id(trace_id))
    except ValueError as exc:
        return _search_page(request, trace_id, "", str(exc), 400)
    except journeys.NotFound as exc:
        return _search_page(request, trace_id, "", str(exc), 404)
    return _journey_page(request, journey, f"Trace {journey['trace_id']}")


@page_view()
def event(request, event_id=None):
    """/events/<id>, or /events/?id=<id> for any id (the links this app builds)."""
    try:
        if event_id is None:
            event_id = text_param(request.GET, "id", max_length=10_000)
            if not event_id:
                return redirect("search")
        source = text_param(request.GET, "source", max_length=10_000) or None
    except BadParameter as exc:
        return _search_page(request, "", "", str(exc), 400)
    if request.method == "POST":
        return _replay(request, event_id, source)
    try:
        journey = journeys.event(request.project.id, event_id, source)
    except journeys.NotFound as exc:
        return _search_page(request, event_id, source or "", str(exc), 404)
    panel = _replay_panel(request, event_id, source)
    return _journey_page(request, journey, f"Event {event_id}", panel)


def _replay_panel(request, event_id, source, result=None, error=None) -> dict:
    """What the replays panel shows: past replays for everyone; for editors the
    form (with a choice of source when the id was reported by several), or
    why this event cannot be replayed."""
    sources = [] if source else replays.sources_of(request.project.id, event_id)
    panel = {
        "action": event_url(event_id, source, request.project.slug),
        "replays": list(Replay.objects.of_event(request.project, event_id, source)[:REPLAYS_SHOWN]),
        "editor": can(request, Role.EDITOR),
        "result": result,
        "error": error,
        "sources": sources if len(sources) > 1 else [],
    }
    if panel["editor"]:
        panel["webhooks"] = list(replays.replayable_webhooks(request.project))
        try:
            # Only the reason matters here; with several sources, the form asks.
            if len(sources) <= 1:
                replays.envelope_of(request.project.id, event_id, source)
        except replays.NotReplayable as exc:
            panel["unavailable"] = str(exc)
        except journeys.NotFound:
            panel["unavailable"] = "only events reported as CloudEvents have a stored payload"
    return panel


def _replay(request, event_id, source):
    """POST of the replay form: send the event to the chosen webhook."""
    if not can(request, Role.EDITOR):
        raise PermissionDenied("replaying an event needs the editor role")
    webhook_id = request.POST.get("webhook", "")
    if not (webhook_id.isascii() and webhook_id.isdigit()):
        raise Http404("choose one of this project's webhooks")
    webhook = replays.replayable_webhooks(request.project).filter(pk=int(webhook_id)).first()
    if webhook is None:
        raise Http404(f"no json webhook {webhook_id} in this project")
    try:
        chosen = text_param(request.POST, "source", max_length=10_000) or source
    except BadParameter as exc:
        raise Http404(str(exc)) from None
    result = error = None
    try:
        envelope = replays.envelope_of(request.project.id, event_id, chosen)
    except journeys.NotFound as exc:
        raise Http404(str(exc)) from None
    except (replays.AmbiguousSource, replays.NotReplayable) as exc:
        error = str(exc)
    else:
        # "Retry until delivered": the worker sends it (dashboard/replays/jobs.py).
        send = replays.queue if request.POST.get("retry") else replays.replay
        result = send(request.project, envelope, webhook, request.user)
        replays.audit(request, result)
    if request.htmx:
        panel = _replay_panel(request, event_id, source, result, error)
        return render(request, "traces/journey.html#replays", {"replay": panel})
    if error:
        messages.error(request, f"Not replayed: {error}")
    elif result.status == "queued":
        messages.success(request, f"Queued for “{webhook.name}”: sent and retried by the worker.")
    elif result.status == "delivered":
        messages.success(
            request, f"Replayed to “{webhook.name}”: delivered (HTTP {result.http_status})."
        )
    else:
        messages.error(request, f"Replay to “{webhook.name}” failed: {result.error}")
    return redirect(event_url(event_id, source, request.project.slug))
