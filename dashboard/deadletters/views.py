"""The dead letters' pages: the project's dead-letter queues (/dead-letters/),
one queue's messages with the redrive form, the messages behind a failure
group or one event, and a redrive's live progress (/redrives/<id>/)."""

from channels.db import database_sync_to_async
from django.contrib import messages as flash
from django.http import Http404
from django.shortcuts import redirect, render
from django.template.loader import render_to_string
from django.urls import reverse
from django.utils.http import urlencode
from django.views.decorators.http import require_POST

from dashboard.access import can, page_view
from dashboard.accounts.models import Role
from dashboard.deadletters import matching, queries, start
from dashboard.deadletters.models import Redrive
from dashboard.deadletters.systems import registry
from dashboard.links import event_url, trace_url, with_query
from dashboard.live import LiveConsumer
from dashboard.query_params import BadParameter

PEEK_SHOWN = 100
RECENT_REDRIVES = 20


def queue_url(system: str, name: str, namespace: str = "", project: str | None = None) -> str:
    query = {"project": project}
    if system == "rabbitmq" and namespace and namespace != "/":
        query["vhost"] = namespace
    return with_query(reverse("dead-letter-queue", args=[system, name]), query)


def redrive_url(redrive_id: int, project: str | None = None) -> str:
    return with_query(reverse("redrive", args=[redrive_id]), {"project": project})


def _list_context(project) -> dict:
    found, unreachable = queries.dead_letter_queues(project)
    rows = [
        {**q.json(), "url": queue_url(q.system, q.name, q.namespace, project.slug)} for q in found
    ]
    redrives = [
        {"r": r, "url": redrive_url(r.pk, project.slug)}
        for r in Redrive.objects.filter(project=project)[:RECENT_REDRIVES]
    ]
    return {"queues": rows, "unreachable": unreachable, "redrives": redrives}


@page_view()
def dead_letters(request):
    """Every dead-letter queue of the project; htmx re-reads the table every few seconds."""
    context = _list_context(request.project)
    context["area"] = "deadletters"
    if request.htmx:
        return render(request, "deadletters/list.html#queues", context)
    return render(request, "deadletters/list.html", context)


def _message_rows(project, found) -> list[dict]:
    rows = []
    for m in found:
        row = m.json()
        if m.event_id:
            row["journey_url"] = event_url(m.event_id, None, project.slug)
        elif m.traceparent and len(m.traceparent) >= 35:
            row["journey_url"] = trace_url(m.traceparent[3:35], project.slug)
        rows.append(row)
    return rows


@page_view()
def queue(request, system, name):
    vhost = request.GET.get("vhost")
    if system == "rabbitmq" and vhost is None:
        vhost = "/"
    try:
        dlq, found = queries.peek(request.project, system, name, vhost, PEEK_SHOWN)
    except queries.NoSuchQueue as exc:
        raise Http404(str(exc)) from None
    module = registry.MODULES[system]
    context = {
        "area": "deadletters",
        "queue": dlq,
        "letters": _message_rows(request.project, found),
        "peek_side_effect": getattr(module, "PEEK_SIDE_EFFECT", ""),
        "guarantee": module.EXACTLY_ONCE,
        "can_redrive": can(request, Role.EDITOR),
        "shown": PEEK_SHOWN,
    }
    return render(request, "deadletters/queue.html", context)


@page_view(Role.EDITOR)
@require_POST
def start_redrive(request):
    """The redrive form: all messages, or those ticked; then the job's page."""
    post = request.POST
    picked = post.getlist("message")
    data = {
        "system": post.get("system", ""),
        "dead_letter": post.get("dead_letter", ""),
        "vhost": post.get("vhost") or None,
        "messages": picked if post.get("which") == "picked" else "all",
        "destination": post.get("destination", ""),
        "rate_per_s": _number(post.get("rate_per_s") or "50"),
        "dry_run": "dry_run" in post,
    }
    back = post.get("back") or reverse("dead-letters")
    try:
        if data["messages"] != "all" and not picked:
            raise BadParameter("tick the messages to redrive, or choose all of them")
        redrive = start.start(request, start.clean(data))
    except (BadParameter, queries.NoSuchQueue) as exc:
        flash.error(request, str(exc))
        return redirect(back if back.startswith("/") and not back.startswith("//") else "/")
    return redirect(redrive_url(redrive.pk, request.project.slug))


def _number(text: str):
    try:
        return float(text)
    except ValueError:
        return text


def redrive_context(project, redrive: Redrive) -> dict:
    data = queries.redrive_json(redrive)
    for item in data["items"]:
        if item["event_id"]:
            item["journey_url"] = event_url(item["event_id"], None, project.slug)
        elif item["traceparent"]:
            item["journey_url"] = trace_url(item["traceparent"][3:35], project.slug)
    done = data["moved"] + data["failed"]
    return {
        "redrive": redrive,
        "data": data,
        "percent": round(100 * done / data["total"])
        if data["total"]
        else (100 if redrive.finished else 0),
        "queue_url": queue_url(
            redrive.system, redrive.dead_letter, redrive.namespace, project.slug
        ),
        "would_move": sum(1 for i in data["items"] if i["state"] == "would_move"),
    }


@page_view()
def redrive_page(request, redrive_id):
    redrive = Redrive.objects.filter(project=request.project, pk=redrive_id).first()
    if redrive is None:
        raise Http404(f"no redrive {redrive_id} in this project")
    context = redrive_context(request.project, redrive)
    context.update(
        area="deadletters",
        can_cancel=can(request, Role.EDITOR) and not redrive.finished,
        live_query=urlencode({"project": request.project.slug, "redrive": redrive.pk}),
    )
    return render(request, "deadletters/redrive.html", context)


@page_view(Role.EDITOR)
@require_POST
def cancel_redrive(request, redrive_id):
    redrive = Redrive.objects.filter(project=request.project, pk=redrive_id).first()
    if redrive is None:
        raise Http404(f"no redrive {redrive_id} in this project")
    try:
        start.cancel(request, redrive)
    except start.AlreadyFinished as exc:
        flash.info(request, str(exc))
    return redirect(redrive_url(redrive.pk, request.project.slug))


@page_view()
def for_failures(request):
    """The dead letters behind a failure group (or one event), ready to redrive."""
    try:
        found, described = matching.dead_letters_of_failures(request.project, request.GET)
    except BadParameter as exc:
        raise Http404(str(exc)) from None
    groups = []
    for (system, name, namespace), msgs in found.items():
        module = registry.MODULES[system]
        groups.append(
            {
                "system": system,
                "name": name,
                "namespace": namespace,
                "messages": _message_rows(request.project, msgs),
                "url": queue_url(system, name, namespace, request.project.slug),
                "guarantee": module.EXACTLY_ONCE,
                "peek_side_effect": getattr(module, "PEEK_SIDE_EFFECT", ""),
            }
        )
    context = {
        "area": "deadletters",
        "groups": groups,
        "described": described,
        "count": sum(len(g["messages"]) for g in groups),
        "can_redrive": can(request, Role.EDITOR),
        "back": request.get_full_path(),
    }
    return render(request, "deadletters/failures.html", context)


class RedrivesConsumer(LiveConsumer):
    """/ws/redrives/?redrive=<id>: a redrive's progress, pushed as the worker moves messages."""

    areas = ("redrives",)

    async def push(self):
        html = await database_sync_to_async(self._render)()
        if html:
            await self.send(text_data=html)

    def _render(self) -> str:
        value = self.params.get("redrive", "")
        if not value.isdigit():
            return ""
        redrive = Redrive.objects.filter(project=self.project, pk=int(value)).first()
        if redrive is None:
            return ""
        context = redrive_context(self.project, redrive)
        context["oob"] = True
        return render_to_string("deadletters/redrive.html#live", context)
