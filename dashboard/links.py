"""Links between pages, built so that telemetry strings can never change where
a link goes, and so that the window and project the user is looking at
travel with every link.

Event ids come from whoever sends telemetry. `reverse()` leaves `.` and `/`
alone, so an id like `../../tokens/` would make `/events/../../tokens/`,
which a browser resolves to `/tokens/`; an id of `.` or `..` would be a dot
segment that no browser or proxy sends as it is. An id made only of
unreserved characters (and not all dots) is safe in the path and gets the
readable `/events/<id>`; any other goes in the query string
(`/events/?id=…`), where nothing normalises it.

Every path comes from `reverse()`: a route changes in its feature's urls.py
and every link follows. The flow page's script gets its links from here too
(`flow_links`), so the browser never rebuilds a URL itself.
"""

import re

from django.urls import NoReverseMatch, reverse
from django.utils.http import urlencode

from collector.brokers import lag
from dashboard.query_params import WINDOWS

_PATH_SAFE = re.compile(r"[A-Za-z0-9._~-]+")


def with_query(path: str, query: dict) -> str:
    """`path` with the non-empty values of `query` as its query string."""
    kept = {k: v for k, v in query.items() if v not in (None, "")}
    if not kept:
        return path
    return f"{path}{'&' if '?' in path else '?'}{urlencode(kept)}"


def event_url(event_id: str, source: str | None = None, project: str | None = None) -> str:
    """The journey page of an event, safe for any id."""
    query = {"source": source, "project": project}
    if _PATH_SAFE.fullmatch(event_id) and event_id not in (".", ".."):
        return with_query(reverse("event", args=[event_id]), query)
    return with_query(reverse("event-by-id"), {"id": event_id, **query})


def trace_url(trace_id: str, project: str | None = None) -> str:
    """The journey page of a trace (hex ids only, so always path-safe)."""
    return with_query(reverse("trace", args=[trace_id]), {"project": project})


def window_query(params, default: str) -> dict:
    """The part of a query string that names the window: since/until, or a preset.

    A preset named explicitly wins over a since/until left in the same form,
    so choosing "1h" in the window menu after a custom range does what it says.
    """
    window = params.get("window") or ""
    if window in WINDOWS:
        return {"window": window}
    since, until = params.get("since") or "", params.get("until") or ""
    if since or until:
        return {k: v for k, v in (("since", since), ("until", until)) if v}
    return {"window": default}


# A group's URL needs a segment even when the broker has no group name
# (a RabbitMQ queue is consumed, not subscribed by a named group).
NO_GROUP = "-"
# The namespace a group's URL leaves out (RabbitMQ's default vhost).
DEFAULT_NAMESPACES = {"rabbitmq": "/"}


def lag_segment(name: str) -> str:
    """A channel or group name as one path segment, whatever characters it holds.

    Servers decode %2F before routing, so "/" and "%" are escaped twice:
    here "team/app" becomes "team%2Fapp", `reverse()` escapes the "%" again
    ("team%252Fapp"), the server decodes it to "team%2Fapp" and the lag page
    unquotes it once more. "." and ".." would be folded away by browsers and
    "-" stands for "no group", so those are escaped twice too.
    """
    if name == "":
        return NO_GROUP
    text = name.replace("%", "%25").replace("/", "%2F")
    if text in (".", "..", NO_GROUP):
        text = "".join(f"%{ord(c):02X}" for c in text)
    return text


def lag_url(system: str, channel: str, group: str, namespace: str | None = None) -> str | None:
    """The lag page of a consumer group, or None when its names cannot make a path.

    A namespace (RabbitMQ vhost, NATS account) other than the default
    travels in the query string, under the name the system gives it; None
    (a flow edge does not know it) means the default.
    """
    # `lag_segment` escapes any channel or group name, dots included; a system
    # (a short word such as "kafka") named "." or ".." cannot make a segment.
    if not system or not channel or system in (".", ".."):
        return None
    try:
        url = reverse("lag-group", args=[system, f"{lag_segment(channel)}/{lag_segment(group)}/"])
    except NoReverseMatch:  # a system name holding "/"
        return None
    field = lag.NAMESPACE_FIELDS.get(system)
    if field and namespace is not None and namespace != DEFAULT_NAMESPACES.get(system, ""):
        url += "?" + urlencode({field: namespace})
    return url


def failures_url(keep: dict, **filters) -> str:
    """The failures page narrowed by `filters`, in `keep`'s window and project."""
    return with_query(reverse("failures"), {**keep, **filters})


# ---- the flow graph's links ------------------------------------------------------


def _link(label: str, url: str) -> dict:
    return {"label": label, "url": url}


def edge_links(edge: dict, nodes: dict, keep: dict) -> list[dict]:
    """The pages that narrow down to one edge, in `keep`'s window and project:
    its failures, and for a consume edge its group's lag."""
    failures = {}
    for node_id in (edge["source"], edge["target"]):
        node = nodes.get(node_id)
        if node is None:
            continue
        if node["kind"] == "channel":
            failures.update(channel=node["name"], system=node["system"])
        elif edge["kind"] != "call" or node_id == edge["target"]:
            failures["service"] = node["name"]
    if edge["group"]:
        failures["group"] = edge["group"]
    links = [_link("failures", failures_url(keep, **failures))]
    channel = nodes.get(edge["source"])
    if edge["kind"] == "consume" and channel is not None:
        url = lag_url(channel["system"], channel["name"], edge["group"])
        if url:
            links.append(_link("lag", with_query(url, keep)))
    return links


def node_links(node: dict, edges: list[dict], keep: dict) -> list[dict]:
    """A node's failures, its recent traces and, for a channel, the lag of each
    group consuming it."""
    if node["kind"] == "service":
        narrow = {"service": node["name"]}
    else:
        narrow = {"channel": node["name"], "system": node["system"]}
    links = [
        _link("failures", failures_url(keep, **narrow)),
        _link("recent traces", with_query(reverse("search"), {**keep, **narrow})),
    ]
    if node["kind"] != "service":
        for edge in edges:
            if edge["kind"] != "consume" or edge["source"] != node["id"]:
                continue
            url = lag_url(node["system"], node["name"], edge["group"])
            if url:
                label = f"lag of {edge['group'] or 'its consumers'}"
                links.append(_link(label, with_query(url, keep)))
    return links


def flow_links(graph: dict, keep: dict) -> dict:
    """The graph with `links` on every node and edge (a copy; the API's graph has none)."""
    nodes = {node["id"]: node for node in graph["nodes"]}
    return {
        **graph,
        "nodes": [{**n, "links": node_links(n, graph["edges"], keep)} for n in graph["nodes"]],
        "edges": [{**e, "links": edge_links(e, nodes, keep)} for e in graph["edges"]],
    }
