"""The search box: what a pasted text finds, each hit linking to its journey.

What is searchable, and the index each reads (none of them on spans beyond
the primary key, so ingest pays nothing for search):

- a trace id, whole or its first 8+ hex digits: a range of the spans'
  primary key prefix (project_id, trace_id), and of the stages' trace index;
- an event id (CloudEvents `id`) or a messaging message id
  (`messaging.message.id`), whole or its first 8+ characters: a range of the
  (project_id, event_id) indexes of stages and envelopes;
- `subject=<value>`: the CloudEvents `subject` of stored envelopes, exactly
  (the business key CloudEvents producers set, e.g. an order's id);
- `data.<field>=<value>` (or `payload.<field>=<value>`; dots go deeper):
  stored CloudEvents payloads containing that value (jsonb containment on
  the GIN index over envelopes' data). A value is matched as a JSON number,
  boolean or null when it reads as one and as a string too; a quoted value
  is a string only; `{…}` or `[…]` is matched as that JSON.

Span attributes (an `order.id` on a span) are not searched: indexing them
would put a write on every stored span.
"""

import dataclasses
import datetime as dt
import json
import re

from dashboard.journeys.queries.rows import _rows, iso
from dashboard.query_params import BadParameter

MIN_PREFIX = 8  # characters of an id before a prefix is searched
MAX_HITS = 1000  # per kind of id match: a prefix of 8+ characters is far fewer
MAX_PATH = 10  # levels of a payload field
_KEY = re.compile(r"[A-Za-z_][\w.-]*")
_HEX = re.compile(r"[0-9a-fA-F]+")
_NUMBER = re.compile(r"-?(0|[1-9]\d*)(\.\d+)?([eE][+-]?\d+)?")
PAYLOAD_PREFIXES = ("data", "payload")
SYNTAX = (
    "search for a trace id, an event or message id (whole, or its first 8+ characters), "
    "subject=<value>, or data.<field>=<value>"
)


@dataclasses.dataclass(frozen=True)
class Query:
    """A parsed search box entry: `kind` is "id", "subject" or "payload"."""

    kind: str
    text: str
    documents: tuple = ()  # payload: JSON documents, any of which is contained


def parse(text: str) -> Query:
    """The entry as a Query; BadParameter saying what is wrong otherwise."""
    text = (text or "").strip()
    if not text:
        raise BadParameter(f"the search is empty: {SYNTAX}")
    key, sep, value = text.partition("=")
    key, value = key.strip(), value.strip()
    if not sep or not _KEY.fullmatch(key):
        return Query("id", text)  # an id may hold "=" (base64): only key=value is special
    if key == "subject":
        if not value:
            raise BadParameter("subject= needs a value, e.g. subject=ord-000177")
        return Query("subject", value)
    head, _, path = key.partition(".")
    if head not in PAYLOAD_PREFIXES:
        raise BadParameter(f"{key!r} is not something search knows: {SYNTAX}")
    fields = path.split(".") if path else []
    if not fields or any(not f for f in fields):
        raise BadParameter(f"{key!r}: name a field of the payload, e.g. data.order_id=ord-000177")
    if len(fields) > MAX_PATH:
        raise BadParameter(f"{key!r}: a payload field may be at most {MAX_PATH} levels deep")
    if not value:
        raise BadParameter(f"{key}= needs a value, e.g. {key}=ord-000177")
    documents = []
    for candidate in _values(key, value):
        for name in reversed(fields):
            candidate = {name: candidate}
        documents.append(json.dumps(candidate, ensure_ascii=False))
    return Query("payload", text, tuple(documents))


def _values(key: str, value: str) -> list:
    """What a payload value may be stored as."""
    if value[0] in '{["':
        try:
            return [json.loads(value)]
        except ValueError:
            raise BadParameter(f"{key}={value}: the value is not valid JSON") from None
    if _NUMBER.fullmatch(value):
        return [json.loads(value), value]
    if value in ("true", "false", "null"):
        return [json.loads(value), value]
    return [value]


def _next_text(prefix: str) -> str | None:
    """The smallest text above every text that starts with `prefix`."""
    last = ord(prefix[-1])
    return prefix[:-1] + chr(last + 1) if last < 0x10FFFF else None


def _bytes_range(hex_prefix: str) -> tuple[bytes, bytes | None]:
    """[low, high) of the byte strings whose hex starts with `hex_prefix`."""
    n = len(hex_prefix)
    low = bytes.fromhex(hex_prefix + "0" * (n % 2))
    following = int(hex_prefix, 16) + 1
    if following >= 16**n:
        return low, None
    return low, bytes.fromhex(f"{following:0{n}x}" + "0" * (n % 2))


def _trace_hits(project_id: int, text: str) -> list[dict]:
    """Traces whose id is `text` or starts with it (hex, 8 to 32 digits)."""
    hex_text = text.lower()
    if not (MIN_PREFIX <= len(hex_text) <= 32 and _HEX.fullmatch(hex_text)):
        return []
    low, high = _bytes_range(hex_text)
    exact = len(hex_text) == 32
    rows = _rows(
        """
        SELECT trace_id, min(time) AS time,
               (array_agg(service ORDER BY root DESC, time))[1] AS service
        FROM (
            SELECT trace_id, start_time AS time, service, parent_span_id IS NULL AS root
            FROM collector_span
            WHERE project_id = %(p)s AND trace_id >= %(low)s
              AND (%(high)s::bytea IS NULL OR trace_id < %(high)s)
            UNION ALL
            SELECT trace_id, time, service, false
            FROM collector_stage
            WHERE project_id = %(p)s AND trace_id IS NOT NULL AND trace_id >= %(low)s
              AND (%(high)s::bytea IS NULL OR trace_id < %(high)s)
        ) AS hits
        GROUP BY trace_id ORDER BY min(time) DESC LIMIT %(n)s
        """,
        {"p": project_id, "low": low, "high": high, "n": MAX_HITS},
    )
    return [
        {
            "kind": "trace",
            "id": bytes(r["trace_id"]).hex(),
            "source": None,
            "matched": "trace_id",
            "prefix": not exact,
            "time": r["time"],
            "service": r["service"],
            "trace_id": bytes(r["trace_id"]).hex(),
        }
        for r in rows
    ]


def _event_hits(project_id: int, text: str) -> list[dict]:
    """Events (CloudEvents ids and message ids) whose id is `text`, or starts
    with it when it is 8 characters or more."""
    prefix = len(text) >= MIN_PREFIX
    high = _next_text(text) if prefix else None
    rows = _rows(
        """
        SELECT source, event_id, min(time) AS time, bool_or(from_span) AS from_span,
               (array_agg(service ORDER BY time) FILTER (WHERE service IS NOT NULL))[1]
                   AS service,
               (array_agg(trace_id ORDER BY time) FILTER (WHERE trace_id IS NOT NULL))[1]
                   AS trace_id
        FROM (
            SELECT coalesce(event_source, '') AS source, event_id, time, origin = 1 AS from_span,
                   service, trace_id
            FROM collector_stage
            WHERE project_id = %(p)s AND event_id IS NOT NULL AND event_id >= %(low)s
              AND event_id <= %(top)s AND (%(high)s::text IS NULL OR event_id < %(high)s)
            UNION ALL
            SELECT source, event_id, time, false, NULL, trace_id
            FROM collector_envelope
            WHERE project_id = %(p)s AND event_id >= %(low)s
              AND event_id <= %(top)s AND (%(high)s::text IS NULL OR event_id < %(high)s)
        ) AS hits
        WHERE CASE WHEN %(prefix)s THEN starts_with(event_id, %(low)s) ELSE event_id = %(low)s END
        GROUP BY source, event_id ORDER BY min(time) DESC LIMIT %(n)s
        """,
        {
            "p": project_id,
            "low": text,
            # Without a prefix search, the range is the one id.
            "top": text if not prefix else (high or text + "\U0010ffff"),
            "high": high,
            "prefix": prefix,
            "n": MAX_HITS,
        },
    )
    return [
        {
            "kind": "event",
            "id": r["event_id"],
            "source": r["source"] or None,
            "matched": "message_id" if r["from_span"] and not r["source"] else "event_id",
            "prefix": r["event_id"] != text,
            "time": r["time"],
            "service": r["service"],
            "trace_id": bytes(r["trace_id"]).hex() if r["trace_id"] is not None else None,
        }
        for r in rows
    ]


def _sort_key(hit: dict) -> tuple:
    return (hit["time"], hit["kind"], hit["id"], hit["source"] or "")


def _after(hit: dict, cursor: list | None) -> bool:
    """Whether the hit comes after the cursor (newest first)."""
    if cursor is None:
        return True
    return _sort_key(hit) < (
        dt.datetime.fromisoformat(cursor[0].replace("Z", "+00:00")),
        *cursor[1:],
    )


def _cursor_of(hit: dict) -> list:
    return [iso(hit["time"]), hit["kind"], hit["id"], hit["source"] or ""]


def check_cursor(cursor) -> list | None:
    """A search cursor as this API returned it, else BadParameter."""
    if cursor is None:
        return None
    if not (
        isinstance(cursor, list) and len(cursor) == 4 and all(isinstance(c, str) for c in cursor)
    ):
        raise BadParameter("cursor is not one this API returned")
    try:
        dt.datetime.fromisoformat(cursor[0].replace("Z", "+00:00"))
    except ValueError:
        raise BadParameter("cursor is not one this API returned") from None
    return cursor


# Envelopes matching a payload or subject, one hit per event at its newest
# matching envelope (every stage reported as a CloudEvent stores one), newest
# first; the NOT EXISTS probes the primary key (project_id, source, event_id, time).
_ENVELOPES = """
SELECT e.time, e.source, e.event_id, e.type, e.subject, e.trace_id
FROM collector_envelope e
WHERE e.project_id = %(p)s AND {match}
  AND (%(ct)s::timestamptz IS NULL
       OR (e.time, e.source, e.event_id) < (%(ct)s, %(cs)s, %(ce)s))
  AND NOT EXISTS (
      SELECT 1 FROM collector_envelope later
      WHERE later.project_id = e.project_id AND later.source = e.source
        AND later.event_id = e.event_id AND later.time > e.time AND {later})
ORDER BY e.time DESC, e.source DESC, e.event_id DESC
LIMIT %(n)s
"""
_MATCHES = {
    "subject": ("e.subject = %(subject)s", "later.subject = %(subject)s"),
    "payload": (
        "e.data IS NOT NULL AND e.data @> ANY(%(documents)s::jsonb[])",
        "later.data IS NOT NULL AND later.data @> ANY(%(documents)s::jsonb[])",
    ),
}


def _envelope_hits(project_id: int, query: Query, limit: int, cursor: list | None) -> list[dict]:
    match, later = _MATCHES[query.kind]
    # Envelope cursors carry (time, "event", id, source): the sort key of the list.
    ct, cs, ce = (cursor[0], cursor[3], cursor[2]) if cursor else (None, None, None)
    rows = _rows(
        _ENVELOPES.format(match=match, later=later),
        {
            "p": project_id,
            "subject": query.text,
            "documents": list(query.documents),
            "ct": ct,
            "cs": cs,
            "ce": ce,
            "n": limit + 1,
        },
    )
    return [
        {
            "kind": "event",
            "id": r["event_id"],
            "source": r["source"],
            "matched": query.kind,
            "prefix": False,
            "time": r["time"],
            "service": None,
            "trace_id": bytes(r["trace_id"]).hex() if r["trace_id"] is not None else None,
            "type": r["type"],
            "subject": r["subject"],
        }
        for r in rows
    ]


def search(project_id: int, query: Query, limit: int, cursor: list | None = None):
    """(hits newest first, the cursor of the next page or None)."""
    if query.kind == "id":
        hits = _trace_hits(project_id, query.text) + _event_hits(project_id, query.text)
        hits = sorted((h for h in hits if _after(h, cursor)), key=_sort_key, reverse=True)
    else:
        if cursor is not None and cursor[1] != "event":
            raise BadParameter("cursor is not one this API returned")
        hits = _envelope_hits(project_id, query, limit, cursor)
    following = _cursor_of(hits[limit - 1]) if len(hits) > limit else None
    return hits[:limit], following
