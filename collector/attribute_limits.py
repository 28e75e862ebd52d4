"""Caps on attributes, in the spirit of the OpenTelemetry SDK's span limits.

Every attribute map (span, span event, span link, log record, resource,
CloudEvents extensions) keeps at most `EVENTSCOPE_MAX_ATTRIBUTES` entries,
the first ones sent, and every string in it (keys, values, the strings
inside array and map values) at most `EVENTSCOPE_MAX_ATTRIBUTE_LENGTH`
characters; arrays and maps inside a value keep at most
`EVENTSCOPE_MAX_ATTRIBUTES` elements. What lies past the count cap is never
read, so a request of a million attributes costs what 128 cost.

What was cut is recorded in the stored map itself under two reserved keys,
because the tables have no other place for it and every reader already has
the map at hand:

- DROPPED_KEY: attributes not kept, the sender's own
  `dropped_attributes_count` included (OTLP's meaning of that field);
- TRUNCATED_KEY: the keys whose value was cut short. A cut string ends
  with MARK.

Readers lift both out again (`lift`), so users see them as fields next to
the attributes, never as attributes.
"""

from django.conf import settings

from collector import stats

DROPPED_KEY = "eventscope.dropped_attributes_count"
TRUNCATED_KEY = "eventscope.truncated_attributes"
MARK = "…"


class Limits:
    """The caps that hold for one request, and what they cut in it."""

    __slots__ = ("count", "length", "dropped", "truncated")

    def __init__(self, count: int | None = None, length: int | None = None):
        self.count = settings.MAX_ATTRIBUTES if count is None else count
        self.length = settings.MAX_ATTRIBUTE_LENGTH if length is None else length
        self.dropped = 0  # attributes (or array/map elements) not kept
        self.truncated = 0  # strings, arrays and maps cut short

    def text(self, value: str) -> str:
        """`value`, or its first `length` characters ending in MARK (counted)."""
        if len(value) <= self.length:
            return value
        self.truncated += 1
        return value[: self.length - 1] + MARK

    def report(self, signal: str) -> None:
        """Add what was cut in this request to the /metrics counters."""
        if self.dropped or self.truncated:
            stats.count_cut(signal, self.dropped, self.truncated)


def mark(attributes: dict, dropped: int, truncated_keys) -> dict:
    """`attributes` with the record of what was cut (only when something was)."""
    if dropped > 0:
        attributes[DROPPED_KEY] = dropped
    if truncated_keys:
        attributes[TRUNCATED_KEY] = list(dict.fromkeys(truncated_keys))
    return attributes


def lift(attributes) -> tuple[dict, int, list]:
    """A stored map split into (attributes, dropped count, truncated keys)."""
    if not isinstance(attributes, dict):
        return {}, 0, []
    if DROPPED_KEY not in attributes and TRUNCATED_KEY not in attributes:
        return attributes, 0, []
    attributes = dict(attributes)
    dropped = attributes.pop(DROPPED_KEY, 0)
    truncated = attributes.pop(TRUNCATED_KEY, [])
    return (
        attributes,
        dropped if isinstance(dropped, int) and not isinstance(dropped, bool) else 0,
        [key for key in truncated if isinstance(key, str)] if isinstance(truncated, list) else [],
    )
