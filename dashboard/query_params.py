"""Parsing of the query parameters pages and the API share: free text, time
windows, limits and cursors. Errors raise BadParameter with a message for the
user (views answer it with 400; an id in a path that cannot exist is a 404)."""

import base64
import datetime as dt
import json

WINDOWS = {
    "15m": dt.timedelta(minutes=15),
    "1h": dt.timedelta(hours=1),
    "6h": dt.timedelta(hours=6),
    "24h": dt.timedelta(hours=24),
    "7d": dt.timedelta(days=7),
}
MAX_SPAN = dt.timedelta(days=92)


class BadParameter(ValueError):
    """A query parameter the caller got wrong; the message says how."""


TEXT_MAX = 500


def clean_text(name: str, value: str) -> str:
    """`value` unless it holds a NUL character.

    PostgreSQL text cannot store NUL, so a query comparing against one fails
    with a DataError (a 500). No id, name or message we store can contain
    one, so such a value is the caller's mistake, and it is refused before any
    query sees it. Every text parameter and path id goes through here.
    """
    if "\x00" in value:
        raise BadParameter(f"{name} must not contain a NUL character")
    return value


def text_param(params, name: str, max_length: int = TEXT_MAX) -> str:
    """A free-text parameter, stripped and cut at `max_length`; "" when absent."""
    return clean_text(name, (params.get(name) or "").strip())[:max_length]


def parse_time(name: str, value: str) -> dt.datetime:
    """An RFC 3339 timestamp; a value without an offset is taken as UTC."""
    text = value.strip().replace(" ", "+") if value else ""
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    try:
        moment = dt.datetime.fromisoformat(text)
    except ValueError:
        raise BadParameter(
            f"{name}={value!r} is not an RFC 3339 time (e.g. 2026-11-22T10:00:00Z)"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return moment.astimezone(dt.UTC)


def parse_window(params, default: str = "1h", now: dt.datetime | None = None):
    """(since, until) from `window=15m|1h|6h|24h|7d` or `since=…&until=…`."""
    now = now or dt.datetime.now(dt.UTC)
    since, until = params.get("since"), params.get("until")
    if since or until:
        until_t = parse_time("until", until) if until else now
        since_t = parse_time("since", since) if since else until_t - WINDOWS[default]
        if since_t >= until_t:
            raise BadParameter("since must be before until")
        if until_t - since_t > MAX_SPAN:
            raise BadParameter("a time range may cover at most 92 days")
        return since_t, until_t
    window = params.get("window") or default
    if window not in WINDOWS:
        raise BadParameter(f"window={window!r}: expected one of {', '.join(WINDOWS)}")
    return now - WINDOWS[window], now


def parse_limit(params, default: int = 50, maximum: int = 500) -> int:
    value = params.get("limit")
    if value in (None, ""):
        return default
    try:
        limit = int(value)
    except ValueError:
        raise BadParameter(f"limit={value!r} is not a whole number") from None
    if not 1 <= limit <= maximum:
        raise BadParameter(f"limit must be between 1 and {maximum}")
    return limit


def encode_cursor(values) -> str:
    """An opaque cursor holding the sort key of the last item returned."""
    raw = json.dumps(values, separators=(",", ":"), default=str).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(params):
    """The sort key from `cursor`, or None when absent."""
    value = params.get("cursor")
    if not value:
        return None
    try:
        padded = value + "=" * (-len(value) % 4)
        return json.loads(base64.urlsafe_b64decode(padded.encode()))
    except (ValueError, UnicodeDecodeError):
        raise BadParameter("cursor is not one this API returned") from None


def window_choice(request, default: str, params=None) -> tuple[dict, str | None]:
    """(since/until/window shown on the page, error message) from the query string
    (or from `params`, when the page has already settled which window it shows)."""
    params = request.GET if params is None else params
    try:
        since, until = parse_window(params, default=default)
        error = None
    except BadParameter as exc:
        error = str(exc)
        since, until = parse_window({}, default=default)
    custom = bool(params.get("since") or params.get("until")) and error is None
    window = (
        "custom"
        if custom
        else (params.get("window") if params.get("window") in WINDOWS else default)
    )
    return {
        "since": since,
        "until": until,
        "window": window,
        "windows": list(WINDOWS),
        "custom_since": params.get("since", ""),
        "custom_until": params.get("until", ""),
    }, error
