"""The consumer lag pages: every group by severity (/lag/) and one group's
partitions and history (/lag/<system>/<channel>/<group>/), both live."""

import datetime as dt
import json
from urllib.parse import unquote

from channels.db import database_sync_to_async
from django.conf import settings
from django.http import Http404
from django.shortcuts import render
from django.template.loader import render_to_string
from django.urls import reverse
from django.utils.http import urlencode

from collector.brokers import lag
from dashboard.access import page_view
from dashboard.lag import queries
from dashboard.lag.history import group_series, sparklines
from dashboard.lag.slowest import slowest_stages
from dashboard.links import DEFAULT_NAMESPACES, NO_GROUP, failures_url, lag_url, with_query
from dashboard.live import LiveConsumer
from dashboard.query_params import (
    BadParameter,
    clean_text,
    parse_window,
    text_param,
    window_choice,
)

BADGES = {
    lag.OK: "ok",
    lag.WARNING: "warn",
    lag.REWIND: "err",
    lag.ERROR: "err",
    lag.STALLED: "err",
    lag.STOPPED: "err",
}


def _name(segment: str) -> str:
    return "" if segment == NO_GROUP else unquote(segment)


def namespace_param(system: str) -> str | None:
    """The query parameter naming a group's namespace (vhost, account), if the system has one."""
    return lag.NAMESPACE_FIELDS.get(system)


def duration(seconds) -> str:
    """A time lag for people: 850 ms, 42 s, 7 min, 3 h 05 min, 2 d 4 h."""
    if seconds is None:
        return "—"
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    if seconds < 172800:
        return f"{int(seconds // 3600)} h {int(seconds % 3600 // 60):02d} min"
    return f"{int(seconds // 86400)} d {int(seconds % 86400 // 3600)} h"


def milliseconds(value) -> str:
    """A processing time for people: 12.5 ms, 1200 ms, then as `duration` from 10 s."""
    if value is None:
        return "—"
    if value < 100:
        return f"{value:.1f} ms"
    if value < 10_000:
        return f"{value:.0f} ms"
    return duration(value / 1000)


def _stale_after() -> dt.timedelta:
    # Three missed polls (at least ten minutes, as OTLP pipelines scrape every
    # minute or so) and a group's figures are old news.
    return dt.timedelta(seconds=max(600, 3 * settings.BROKER_POLL_SECONDS))


def _decorate(item: dict, now: dt.datetime | None = None) -> dict:
    item = dict(item)
    now = now or dt.datetime.now(dt.UTC)
    updated = dt.datetime.fromisoformat(item["updated_at"].replace("Z", "+00:00"))
    item["stale"] = now - updated > _stale_after()
    # Figures carried on after the broker stopped listing the group.
    reported = item.get("reported_at")
    reported = dt.datetime.fromisoformat(reported.replace("Z", "+00:00")) if reported else None
    item["unlisted_since"] = None
    if reported is not None and reported < updated:
        item["unlisted_since"] = reported.strftime("%Y-%m-%d %H:%M:%S UTC")
    item["badge"] = BADGES.get(item["status"], "")
    item["namespace"] = lag.namespace_of(item)
    item["namespace_label"] = namespace_param(item["system"]) if item["namespace"] else ""
    item["url"] = lag_url(item["system"], item["channel"], item["group"], item["namespace"])
    item["lag_seconds_text"] = duration(item["lag_seconds"])
    for partition in item["partitions"]:
        partition["badge"] = BADGES.get(partition["status"], "")
        partition["lag_seconds_text"] = duration(partition["lag_seconds"])
    return item


GROUPS_PER_PAGE = 100


def _page_number(params) -> int:
    value = params.get("page") or "1"
    if not (value.isascii() and value.isdigit() and 1 <= int(value) <= 10_000):
        raise BadParameter(f"page={value!r} is not a page number")
    return int(value)


def overview_context(project, params) -> dict:
    """Everything the live part of /lag/ shows, for the page and for pushes:
    the groups that `status=` and `q=` (part of a channel or group name) choose,
    a page at a time in the order of `lag.current` (worst first), and how many
    groups of each status there are in all.

    Figures move, so a group can move to another page between two looks; the
    API's cursor (GET /api/lag) is the way to read every group exactly once.
    """
    chosen = queries.statuses(params)
    text = text_param(params, "q", max_length=200)
    number = _page_number(params)
    everything = lag.current(project.id)
    counts = {s: 0 for s in lag.STATUSES}
    for item in everything:
        counts[item["status"]] = counts.get(item["status"], 0) + 1
    needle = text.casefold()
    matching = [
        i
        for i in everything
        if (not chosen or i["status"] in chosen)
        and (needle in i["channel"].casefold() or needle in i["group"].casefold())
    ]
    start = (number - 1) * GROUPS_PER_PAGE
    items = [_decorate(i) for i in matching[start : start + GROUPS_PER_PAGE]]
    spark = sparklines(project.id)
    for item in items:
        key = (item["system"], item["namespace"], item["channel"], item["group"])
        item["spark"] = json.dumps(spark.get(key))
    filters = {"status": ",".join(chosen), "q": text, "project": project.slug}
    here = reverse("lag")
    return {
        "items": items,
        "brokers": queries.unreachable_brokers(project.id),
        "counts": [
            (s, n, BADGES[s], with_query(here, {**filters, "status": s}))
            for s, n in counts.items()
            if n
        ],
        "filters": filters,
        "statuses": lag.STATUSES,
        "total": len(matching),
        "first": start + 1,
        "last": start + len(items),
        "page_summary": f"Groups {start + 1}–{start + len(items)} of {len(matching)}",
        "previous_url": number > 1 and with_query(here, {**filters, "page": number - 1}),
        "next_url": len(matching) > start + GROUPS_PER_PAGE
        and with_query(here, {**filters, "page": number + 1}),
        "live_query": urlencode(
            {k: v for k, v in {**filters, "page": number}.items() if v and v != 1}
        ),
    }


@page_view()
def overview(request):
    """The groups, filtered and a page at a time; with htmx (the filter form
    and the pager), only the results."""
    error = None
    try:
        context = overview_context(request.project, request.GET)
    except BadParameter as exc:
        error = str(exc)
        context = overview_context(request.project, {})
    context.update(area="lag", error=error)
    if request.htmx:
        # htmx swaps only 2xx answers; the message is in the partial.
        return render(request, "lag/page.html#results", context)
    return render(request, "lag/page.html", context, status=400 if error else 200)


def _namespace(system: str, params) -> str:
    field = namespace_param(system)
    value = params.get(field) if field else None
    return DEFAULT_NAMESPACES.get(system, "") if value is None else value


def _split(project_id: int, system: str, namespace: str, rest: str) -> tuple[str, str]:
    """(channel, group) from the path after /lag/<system>/.

    Links from these pages escape "/" inside names (see `links.lag_segment`), so two
    segments are the usual case; a path with more (typed by hand, or from a
    proxy that decoded it) is matched against the groups this project has.
    """
    segments = rest.rstrip("/").split("/")
    if len(segments) < 2 or not all(segments):
        raise Http404("a lag page is /lag/<system>/<channel>/<group>/")
    if len(segments) == 2:
        return _name(segments[0]), _name(segments[1])
    known = {
        (i["channel"], i["group"])
        for i in lag.current(project_id)
        if i["system"] == system and lag.namespace_of(i) == namespace
    }
    for cut in range(1, len(segments)):
        channel, group = _name("/".join(segments[:cut])), _name("/".join(segments[cut:]))
        if (channel, group) in known:
            return channel, group
    raise Http404(f"no consumer group of {system} matches {rest!r}")


def _window_query(params) -> dict:
    """The window part of a page's query, to carry over to the links it shows."""
    return {k: params[k] for k in ("window", "since", "until") if params.get(k)}


def group_context(
    project_id: int, system: str, channel: str, group: str, params, namespace: str = ""
) -> dict:
    """One group's present state and its history over the chosen window."""
    item = next(
        (
            i
            for i in lag.current(project_id)
            if (i["system"], lag.namespace_of(i), i["channel"], i["group"])
            == (system, namespace, channel, group)
        ),
        None,
    )
    since, until = parse_window(params, default="1h")
    partition = params.get("partition") or None
    series = group_series(
        project_id, system, channel, group, since, until, partition, namespace=namespace
    )
    failures_query = {
        "channel": channel,
        "since": since.isoformat().replace("+00:00", "Z"),
        "until": until.isoformat().replace("+00:00", "Z"),
    }
    if group:
        failures_query["group"] = group
    slowest = slowest_stages(project_id, system, channel, group, since, until)
    for stage in slowest:
        stage["duration_text"] = milliseconds(stage["duration_ms"])
        stage["e2e_text"] = milliseconds(stage["e2e_ms"])
    field = namespace_param(system)
    # Links inside the page keep its window and namespace.
    page_query = _window_query(params)
    if field and namespace != DEFAULT_NAMESPACES.get(system, ""):
        page_query[field] = namespace
    return {
        "item": _decorate(item) if item else None,
        "system": system,
        "namespace": namespace,
        "namespace_label": field if namespace else "",
        "channel": channel,
        "group": group,
        "partition": partition,
        "series": json.dumps(series),
        "failures_url": failures_url({}, **failures_query),
        "slowest": slowest,
        "page_query": urlencode(page_query),
        "since": since,
        "until": until,
    }


@page_view()
def group_detail(request, system: str, rest: str):
    namespace = _namespace(system, request.GET)
    try:
        for name, value in (("system", system), ("group path", rest), ("namespace", namespace)):
            clean_text(name, value)
    except BadParameter:
        raise Http404("no consumer group has a NUL character in its name") from None
    channel, group = _split(request.project.id, system, namespace, rest)
    choice, error = window_choice(request, "1h")
    params = request.GET.copy()
    if error:
        for name in ("since", "until", "window"):
            params.pop(name, None)
    context = group_context(request.project.id, system, channel, group, params, namespace)
    if context["item"] is None and not json.loads(context["series"])["t"]:
        raise Http404(f"no consumer lag known for {system} {channel} {group}")
    live_query = {"project": request.project.slug, "system": system, "channel": channel}
    live_query["group"] = group
    if namespace_param(system):
        live_query[namespace_param(system)] = namespace
    if context["partition"]:
        live_query["partition"] = context["partition"]
    if choice["window"] == "custom":
        live_query.update(since=choice["custom_since"], until=choice["custom_until"])
    else:
        live_query["window"] = choice["window"]
    context.update(
        area="lag", choice=choice, error=error, live_query=urlencode(live_query), url=request.path
    )
    return render(request, "lag/group.html", context, status=400 if error else 200)


class LagConsumer(LiveConsumer):
    """/ws/lag/: re-renders the overview, or one group's page when the query names it."""

    areas = ("lag",)

    async def push(self):
        html = await database_sync_to_async(self._render)()
        await self.send(text_data=html)

    def _render(self) -> str:
        params = self.params
        if "channel" in params and "system" in params:
            system = params["system"]
            key = (system, params["channel"], params.get("group", ""))
            namespace = _namespace(system, params)
            try:
                context = group_context(self.project.id, *key, params, namespace)
            except BadParameter:
                context = group_context(self.project.id, *key, {}, namespace)
            context["oob"] = True
            return render_to_string("lag/group.html#live", context)
        try:
            context = overview_context(self.project, params)
        except BadParameter:
            context = overview_context(self.project, {})
        context["oob"] = True
        return render_to_string("lag/page.html#live", context)
