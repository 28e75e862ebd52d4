"""The consumer lag pages: every group by severity (/lag/) and one group's
partitions and history (/lag/<system>/<channel>/<group>/), both live."""

import datetime as dt
import json
from urllib.parse import quote

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
from dashboard.live import LiveConsumer
from dashboard.query_params import BadParameter, parse_window
from dashboard.views.flow import window_choice

# A group's URL needs a segment even when the broker has no group name
# (a RabbitMQ queue is consumed, not subscribed by a named group).
NO_GROUP = "-"
BADGES = {
    lag.OK: "ok",
    lag.WARNING: "warn",
    lag.REWIND: "err",
    lag.ERROR: "err",
    lag.STALLED: "err",
    lag.STOPPED: "err",
}


def group_url(system: str, channel: str, group: str) -> str:
    return f"/lag/{quote(system, safe='')}/{quote(channel, safe='/')}/{quote(group or NO_GROUP, safe='')}/"


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
    item["badge"] = BADGES.get(item["status"], "")
    item["url"] = group_url(item["system"], item["channel"], item["group"])
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
        item["spark"] = json.dumps(spark.get((item["system"], item["channel"], item["group"])))
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


def _split(rest: str) -> tuple[str, str]:
    channel, _, group = rest.rstrip("/").rpartition("/")
    if not channel:
        raise Http404("a lag page is /lag/<system>/<channel>/<group>/")
    return channel, "" if group == NO_GROUP else group


def group_context(project_id: int, system: str, channel: str, group: str, params) -> dict:
    """One group's present state and its history over the chosen window."""
    item = next(
        (
            i
            for i in lag.current(project_id)
            if (i["system"], i["channel"], i["group"]) == (system, channel, group)
        ),
        None,
    )
    since, until = parse_window(params, default="1h")
    partition = params.get("partition") or None
    series = group_series(project_id, system, channel, group, since, until, partition)
    failures_query = {
        "channel": channel,
        "since": since.isoformat().replace("+00:00", "Z"),
        "until": until.isoformat().replace("+00:00", "Z"),
    }
    if group:
        failures_query["group"] = group
    return {
        "item": _decorate(item) if item else None,
        "system": system,
        "channel": channel,
        "group": group,
        "partition": partition,
        "series": json.dumps(series),
        "failures_url": "/failures/?" + urlencode(failures_query),
        "since": since,
        "until": until,
    }


@page_view()
def group_detail(request, system: str, rest: str):
    channel, group = _split(rest)
    choice, error = window_choice(request, "1h")
    params = request.GET.copy()
    if error:
        for name in ("since", "until", "window"):
            params.pop(name, None)
    context = group_context(request.project.id, system, channel, group, params)
    if context["item"] is None and not json.loads(context["series"])["t"]:
        raise Http404(f"no consumer lag known for {system} {channel} {group}")
    live_query = {"project": request.project.slug, "system": system, "channel": channel}
    live_query["group"] = group
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
            try:
                context = group_context(
                    self.project.id,
                    params["system"],
                    params["channel"],
                    params.get("group", ""),
                    params,
                )
            except BadParameter:
                context = group_context(
                    self.project.id,
                    params["system"],
                    params["channel"],
                    params.get("group", ""),
                    {},
                )
            context["oob"] = True
            return render_to_string("lag/group.html#live", context)
        context = overview_context(self.project.id)
        context["oob"] = True
        return render_to_string("lag/page.html#live", context)
