"""The consumer lag pages: every group by severity (/lag/) and one group's
partitions and history (/lag/<system>/<channel>/<group>/), both live."""

import datetime as dt
import json
from urllib.parse import quote, unquote

from channels.db import database_sync_to_async
from django.conf import settings
from django.db import connection
from django.http import Http404
from django.shortcuts import render
from django.template.loader import render_to_string
from django.utils.http import urlencode

from collector.brokers import lag
from dashboard.access import page_view
from dashboard.lag.history import group_series, sparklines
from dashboard.lag.slowest import slowest_stages
from dashboard.live import LiveConsumer
from dashboard.query_params import BadParameter, clean_text, parse_window, window_choice

# A group's URL needs a segment even when the broker has no group name
# (a RabbitMQ queue is consumed, not subscribed by a named group).
NO_GROUP = "-"
# The namespace a group's URL leaves out (RabbitMQ's default vhost).
DEFAULT_NAMESPACES = {"rabbitmq": "/"}
BADGES = {
    lag.OK: "ok",
    lag.WARNING: "warn",
    lag.REWIND: "err",
    lag.ERROR: "err",
    lag.STALLED: "err",
    lag.STOPPED: "err",
}


def _segment(name: str) -> str:
    """A channel or group name as one path segment, whatever characters it holds.

    Servers decode %2F before routing, so "/" and "%" are escaped twice:
    "team/app" becomes "team%252Fapp", arrives as "team%2Fapp" and is
    unquoted once more by `_name`. "." and ".." would be folded away by
    browsers and "-" stands for "no group", so those are escaped twice too.
    """
    if name == "":
        return NO_GROUP
    text = name.replace("%", "%25").replace("/", "%2F")
    if text in (".", "..", NO_GROUP):
        text = "".join(f"%{ord(c):02X}" for c in text)
    return quote(text, safe="")


def _name(segment: str) -> str:
    return "" if segment == NO_GROUP else unquote(segment)


def namespace_param(system: str) -> str | None:
    """The query parameter naming a group's namespace (vhost, account), if the system has one."""
    return lag.NAMESPACE_FIELDS.get(system)


def group_url(system: str, channel: str, group: str, namespace: str = "") -> str:
    url = f"/lag/{quote(system, safe='')}/{_segment(channel)}/{_segment(group)}/"
    field = namespace_param(system)
    if field and namespace != DEFAULT_NAMESPACES.get(system, ""):
        url += "?" + urlencode({field: namespace})
    return url


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
    item["updated_text"] = updated.strftime("%Y-%m-%d %H:%M:%S UTC")
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
    item["url"] = group_url(item["system"], item["channel"], item["group"], item["namespace"])
    item["lag_seconds_text"] = duration(item["lag_seconds"])
    for partition in item["partitions"]:
        partition["badge"] = BADGES.get(partition["status"], "")
        partition["lag_seconds_text"] = duration(partition["lag_seconds"])
    return item


def unreachable_brokers(project_id: int) -> list[dict]:
    with connection.cursor() as cursor:
        cursor.execute(
            """
            SELECT source, system, error, error_since, last_ok_at FROM brokers_brokerstate
            WHERE project_id = %s AND error <> '' ORDER BY source
            """,
            [project_id],
        )
        return [
            {"source": s, "system": k, "error": e, "since": since, "last_ok_at": ok}
            for s, k, e, since, ok in cursor.fetchall()
        ]


def overview_context(project_id: int) -> dict:
    """Everything the live part of /lag/ shows, for the page and for pushes."""
    items = [_decorate(i) for i in lag.current(project_id)]
    spark = sparklines(project_id)
    for item in items:
        key = (item["system"], item["namespace"], item["channel"], item["group"])
        item["spark"] = json.dumps(spark.get(key))
    counts = {s: 0 for s in lag.STATUSES}
    for item in items:
        counts[item["status"]] = counts.get(item["status"], 0) + 1
    return {
        "items": items,
        "brokers": unreachable_brokers(project_id),
        "counts": [(s, n, BADGES[s]) for s, n in counts.items() if n],
    }


@page_view()
def overview(request):
    context = overview_context(request.project.id)
    context.update(area="lag", live_query=urlencode({"project": request.project.slug}))
    if request.htmx:
        return render(request, "lag/page.html#live", context)
    return render(request, "lag/page.html", context)


def _namespace(system: str, params) -> str:
    field = namespace_param(system)
    value = params.get(field) if field else None
    return DEFAULT_NAMESPACES.get(system, "") if value is None else value


def _split(project_id: int, system: str, namespace: str, rest: str) -> tuple[str, str]:
    """(channel, group) from the path after /lag/<system>/.

    Links from these pages escape "/" inside names (see `_segment`), so two
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
        stage["time_text"] = stage["time"].astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S")
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
        "failures_url": "/failures/?" + urlencode(failures_query),
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
    if request.htmx:
        return render(request, "lag/group.html#live", context)
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
        context = overview_context(self.project.id)
        context["oob"] = True
        return render_to_string("lag/page.html#live", context)
