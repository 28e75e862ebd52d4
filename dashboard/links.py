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
"""

import re

from django.utils.http import urlencode

from dashboard.query_params import WINDOWS

_PATH_SAFE = re.compile(r"[A-Za-z0-9._~-]+")


def with_query(path: str, query: dict) -> str:
    """`path` with the non-empty values of `query` as its query string."""
    kept = {k: v for k, v in query.items() if v not in (None, "")}
    return f"{path}?{urlencode(kept)}" if kept else path


def event_url(event_id: str, source: str | None = None, project: str | None = None) -> str:
    """The journey page of an event, safe for any id."""
    query = {"source": source, "project": project}
    if _PATH_SAFE.fullmatch(event_id) and event_id not in (".", ".."):
        return with_query(f"/events/{event_id}", query)
    return with_query("/events/", {"id": event_id, **query})


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


def lag_url(system: str, channel: str, group: str) -> str | None:
    """The lag page of a consumer group, or None when its names cannot make a path."""
    from dashboard.lag.views import group_url  # the lag area owns its route

    # group_url escapes any channel or group name, dots included; a system
    # (a short word such as "kafka") named "." or ".." cannot make a segment.
    if not system or not channel or system in (".", ".."):
        return None
    return group_url(system, channel, group)
