"""Template filters every page uses (loaded as builtins, see settings.TEMPLATES).

One time format for people, everywhere: UTC, to the second,
`2026-12-02 14:03:07 UTC`; where how long ago matters more, `12 s ago` with
the exact time on hover. Both render a `<time datetime="…">` element, so
scripts and tests read the exact instant. Charts (static/js) draw the same
24-hour UTC format.

    {{ alert.started_at|when }}      <time …>2026-12-02 14:03:07 UTC</time>
    {{ group.updated_at|ago }}       <time … title="2026-12-02 14:03:07 UTC">12 s ago</time>
    {{ system|system_badge }}        <span class="system system-kafka">kafka</span>
"""

import datetime as dt

from django import template
from django.utils.html import format_html

register = template.Library()

FORMAT = "%Y-%m-%d %H:%M:%S UTC"


def instant(value) -> dt.datetime | None:
    """A datetime or an RFC 3339 string (as the JSON API gives them) in UTC; None if neither."""
    if isinstance(value, str):
        try:
            value = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return None
    if not isinstance(value, dt.datetime):
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    return value.astimezone(dt.UTC)


def exact(value) -> str:
    moment = instant(value)
    return moment.strftime(FORMAT) if moment else ""


def relative(moment: dt.datetime, now: dt.datetime | None = None) -> str:
    """`now`, `12 s ago`, `4 min ago`, `3 h ago`, `2 d ago`; `in 5 s` for a time ahead."""
    seconds = ((now or dt.datetime.now(dt.UTC)) - moment).total_seconds()
    ahead = seconds < 0
    seconds = abs(seconds)
    if seconds < 1:
        return "now"
    for size, unit in ((86400, "d"), (3600, "h"), (60, "min"), (1, "s")):
        if seconds >= size:
            text = f"{int(seconds // size)} {unit}"
            break
    return f"in {text}" if ahead else f"{text} ago"


def _iso(moment: dt.datetime) -> str:
    return moment.isoformat(timespec="seconds").replace("+00:00", "Z")


@register.filter
def when(value):
    """The exact time, UTC to the second; empty for no time."""
    moment = instant(value)
    if moment is None:
        return value or ""
    return format_html('<time datetime="{}">{}</time>', _iso(moment), moment.strftime(FORMAT))


@register.filter
def ago(value):
    """How long ago, the exact time on hover (static/js/times.js keeps it current)."""
    moment = instant(value)
    if moment is None:
        return value or ""
    return format_html(
        '<time datetime="{}" title="{}" data-relative>{}</time>',
        _iso(moment),
        moment.strftime(FORMAT),
        relative(moment),
    )


@register.filter
def system_badge(system):
    """The messaging system a channel lives on, as a small badge next to its name."""
    if not system:
        return ""
    return format_html('<span class="system" data-system="{}">{}</span>', system, system)
