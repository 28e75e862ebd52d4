"""The Delivery page (/delivery/): per channel and consumer group, events
delivered once, duplicate, missing, late, out of order and poison, live; and
its two editor actions: a channel's deadline and ordering attribute, and
retiring a consumer group."""

import html
import re

from channels.db import database_sync_to_async
from django.conf import settings
from django.contrib import messages
from django.http import Http404
from django.shortcuts import redirect, render
from django.template.loader import render_to_string
from django.urls import reverse
from django.utils import timezone
from django.utils.http import urlencode
from django.utils.safestring import mark_safe
from django.utils.text import Truncator
from django.views.decorators.http import require_POST

from dashboard.access import can, page_view
from dashboard.accounts.models import Role
from dashboard.delivery import queries
from dashboard.delivery.models import ChannelSetting, Expectation
from dashboard.links import event_url, trace_url, window_query, with_query
from dashboard.live import LiveConsumer
from dashboard.query_params import BadParameter, parse_window, window_choice

DEFAULT_WINDOW = "24h"
KIND_LABELS = {
    "duplicate": "duplicate",
    "missing": "missing",
    "late": "late",
    "out_of_order": "out of order",
    "poison": "poison",
}


def _bars(trend: list[int], peak: int) -> str:
    """The trend's bars as one SVG path (one element, not 30, per cell)."""
    return "".join(
        f"M{i * 4} 24v-{h}h3v{h}z"
        for i, c in enumerate(trend)
        if c and peak
        for h in [round(22 * c / peak, 1)]
    )


# The table and the findings are built here with plain string formatting
# rather than template tags or format_html: a week's page has hundreds of
# cells, and this is most of its rendering time. Every text from the data
# goes through _e (html.escape, as Django's escape does); numbers are ints.
_e = html.escape


def _cell(row: dict, kind: str, peak: int) -> str:
    """One kind's table cell: count, share of the events and trend."""
    count = row["counts"][kind]
    if not count:
        return f'<td class="num" data-kind="{kind}"><span class="muted">0</span></td>'
    trend = row["trend"][kind]
    return (
        f'<td class="num" data-kind="{kind}"><span class="badge '
        f'{"warn" if kind in ("late", "out_of_order") else "err"}">{count}</span> '
        f'<span class="muted">{round(100 * row["rates"][kind])} %</span><br><svg class="trend" '
        'width="120" height="24" viewBox="0 0 120 24" aria-label="trend over the window">'
        f'<title>{" ".join(map(str, trend))}</title><path d="{_bars(trend, peak)}"/></svg></td>'
    )


def _anchor(link: dict, chars: int) -> str:
    """A link to an event or trace, its label cut to `chars` (whole when unlinked)."""
    if link["url"]:
        return f'<a href="{_e(link["url"])}">{_e(Truncator(link["label"]).chars(chars))}</a>'
    return _e(link["label"])


def _seconds(ms) -> str:
    return "" if ms is None else str(round(float(ms) / 1000))


def _row(row: dict) -> str:
    """One (channel, group) row of the table."""
    channel, group, service = _e(row["channel"]), _e(row["group"]), row["service"]
    extra = (
        f' <span class="muted">{_e(service)}</span>' if service and service != row["group"] else ""
    )
    oldest = _anchor(row["oldest_link"], 24) if row["oldest_link"] else ""
    return (
        f'<tr data-channel="{channel}" data-group="{group}"><td>{channel} '
        f'<span class="muted">{_e(row["system"])}</span></td><td>{group}{extra}</td>'
        f'<td class="num">{int(row["handled"])}</td>'
        f'<td class="num" data-kind="delivered_once">{int(row["delivered_once"])}</td>'
        f"{''.join(_cell(row, kind, row['peak']) for kind in queries.KINDS)}<td>{oldest}</td></tr>\n"
    )


def _text(value) -> str:
    """A value as the template would show it (None as "None")."""
    return _e(str(value))


def _detail(kind: str, e: dict) -> str:
    if kind == "duplicate":
        spans = "".join(
            " · "
            + (
                f'<a href="{_e(s["url"])}">{_text(s.get("service"))} '
                f"{_e(Truncator(str(s.get('span_id'))).chars(8))}</a>"
                if s.get("url")
                else _text(s.get("service"))
            )
            for s in e["spans"]
        )
        return f'<span class="muted">processed {_text(e.get("successes"))}×{spans}</span>'
    if kind == "poison":
        dead = " · dead-lettered" if e.get("deadlettered") else ""
        return (
            f'<span class="muted">{_text(e.get("attempts"))} failed attempts over '
            f"{_seconds(e.get('retry_ms'))} s{dead}</span>"
        )
    if kind == "late":
        return f'<span class="muted">{_seconds(e.get("delay_ms"))} s after publishing</span>'
    if kind == "out_of_order":
        ahead = ", ".join(_anchor(o["link"], 24) for o in e.get("overtook", []))
        return f'<span class="muted">{_text(e.get("ordering_key"))}: ahead of {ahead}</span>'
    if kind == "missing":
        when = _text(e.get("time"))
        return f'<span class="muted">published <time datetime="{when}">{when}</time></span>'
    return ""


def _finding_row(group: dict) -> str:
    kind = group["kind"]
    examples = "".join(
        f"<li>{_anchor(e['link'], 32)} {_detail(kind, e)}</li>" for e in group["examples"]
    )
    return (
        f'<tr data-kind="{_e(kind)}"><td><span class="badge '
        f'{"warn" if kind in ("late", "out_of_order") else "err"}">{_e(group["label"])}</span></td>'
        f'<td>{_e(group["channel"])} <span class="muted">{_e(group["system"])}</span></td>'
        f'<td>{_e(group["group"])}</td><td class="num">{int(group["count"])}</td>'
        f'<td><ul class="plain">{examples}</ul></td></tr>\n'
    )


_HEX = re.compile(r"[0-9a-f]{1,64}")


class _TraceUrls:
    """Journey links to traces for one page: the route reversed once, not
    for each of a page's hundreds of links (hex ids need no quoting)."""

    MARK = "0" * 32

    def __init__(self, project: str):
        self.project = project
        self.before, _, self.after = trace_url(self.MARK, project).partition(self.MARK)

    def __call__(self, trace_id: str) -> str:
        if _HEX.fullmatch(trace_id):
            return f"{self.before}{trace_id}{self.after}"
        return trace_url(trace_id, self.project)


def _link(example: dict, project: str, traces=None) -> dict:
    if example.get("event_id"):
        url = event_url(example["event_id"], example.get("source"), project)
        return {"label": example["event_id"], "url": url}
    if example.get("trace_id"):
        return {
            "label": f"trace {example['trace_id'][:12]}",
            "url": (traces or _TraceUrls(project))(example["trace_id"]),
        }
    return {"label": "(no id)", "url": ""}


def delivery_context(project, params) -> dict:
    shown = window_query(params, DEFAULT_WINDOW)
    since, until = parse_window(shown, default=DEFAULT_WINDOW)
    filters = queries.Filters.from_params(params)
    rows, groups = queries.overview(project.id, since, until, filters, limit=30)
    peak = max((max(t) for r in rows for t in r["trend"].values()), default=0)
    slug, traces = project.slug, _TraceUrls(project.slug)
    for row in rows:
        row["peak"] = peak
        row["oldest_link"] = _link(row["oldest"], slug, traces) if row["oldest"] else None
    for group in groups:
        group["label"] = KIND_LABELS[group["kind"]]
        for example in group["examples"]:
            example["link"] = _link(example, slug, traces)
            for other in example.get("overtook", []):
                other["link"] = _link(other, slug, traces)
            for span in example["spans"]:
                if span.get("trace_id"):
                    span["url"] = traces(span["trace_id"])
        group["html"] = mark_safe(_finding_row(group))
    for row in rows:
        row["html"] = mark_safe(_row(row))
    return {
        "rows": rows,
        "groups": groups,
        "filters": filters,
        "kinds": [(k, KIND_LABELS[k]) for k in queries.KINDS],
    }


@page_view()
def delivery(request):
    params = request.GET.copy()
    choice, error = window_choice(request, DEFAULT_WINDOW, params=params)
    if error:
        for name in ("window", "since", "until"):
            params.pop(name, None)
    try:
        context = delivery_context(request.project, params)
    except BadParameter as exc:
        error = str(exc)
        context = delivery_context(request.project, {})
    live_query = {**context["filters"].query(), "project": request.project.slug}
    live_query.update(window_query(params, DEFAULT_WINDOW))
    context.update(
        choice=choice,
        error=error,
        live_query=urlencode(live_query),
        area="delivery",
        expected_hours=settings.DELIVERY_EXPECTED_HOURS,
        deadline_floor=settings.DELIVERY_DEADLINE_SECONDS,
        editor=can(request, Role.EDITOR),
        settings=ChannelSetting.objects.filter(project=request.project).order_by(
            "system", "channel"
        ),
        retired=Expectation.objects.filter(
            project=request.project, retired_at__isnull=False
        ).order_by("system", "channel", "group"),
    )
    if request.htmx:
        return render(request, "delivery/page.html#results", context)
    return render(request, "delivery/page.html", context, status=400 if error else 200)


def _back(request):
    return redirect(with_query(reverse("delivery"), {"project": request.project.slug}))


@require_POST
@page_view(Role.EDITOR)
def channel_setting(request):
    system = request.POST.get("system", "").strip()
    channel = request.POST.get("channel", "").strip()
    deadline = request.POST.get("deadline_seconds", "").strip()
    attribute = request.POST.get("ordering_attribute", "").strip()
    if not system or not channel or "\x00" in system + channel + attribute:
        messages.error(request, "Name the channel's system and channel.")
        return _back(request)
    seconds = None
    if deadline:
        try:
            seconds = float(deadline)
        except ValueError:
            seconds = -1
        if not 1 <= seconds <= 7 * 86400:
            messages.error(request, "The deadline is a number of seconds from 1 to 604800.")
            return _back(request)
    ChannelSetting.objects.update_or_create(
        project=request.project,
        system=system,
        channel=channel,
        defaults={"deadline_seconds": seconds, "ordering_attribute": attribute[:256]},
    )
    messages.success(request, f"Saved the settings of {system} {channel}.")
    return _back(request)


@require_POST
@page_view(Role.EDITOR)
def retire_group(request):
    """Retire (or bring back) a consumer group on a channel: a retired group
    is expected nowhere and its missing findings go."""
    from dashboard.delivery.models import Finding

    system = request.POST.get("system", "")
    channel = request.POST.get("channel", "")
    group = request.POST.get("group", "")
    rows = Expectation.objects.filter(
        project=request.project, system=system, channel=channel, group=group
    )
    if not rows.exists():
        raise Http404(f"no consumer group {group!r} on {system} {channel}")
    if request.POST.get("undo"):
        rows.update(retired_at=None)
        messages.success(request, f"{group} is expected on {channel} again.")
    else:
        rows.update(retired_at=timezone.now())
        Finding.objects.filter(
            project=request.project, kind="missing", system=system, channel=channel, group=group
        ).delete()
        messages.success(request, f"{group} is retired on {channel}: no more missing events.")
    return _back(request)


class DeliveryConsumer(LiveConsumer):
    """/ws/delivery/: re-renders the table and findings as an htmx OOB swap."""

    areas = ("delivery",)

    async def push(self):
        html = await database_sync_to_async(self._render)()
        await self.send(text_data=html)

    def _render(self) -> str:
        try:
            context = delivery_context(self.project, self.params)
        except BadParameter:
            context = delivery_context(self.project, {})
        context["oob"] = True
        return render_to_string("delivery/page.html#live", context)
