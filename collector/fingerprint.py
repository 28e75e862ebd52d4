"""Error messages to templates and fingerprints: how failures are grouped.

"carrier rejected the address of ord-000195" and "... of ord-000196" are the
same failure; grouping by the exact text makes a group of one per event. The
message is parameterised instead: the variable parts become placeholders,

    <email> <ip> <time> <uuid> <hex> <id> <num> <quoted>

URLs keep their scheme, host and path words while ids in the path and the
values of the query become placeholders. The fingerprint is a short hash of
the template and the error type (`error.type`, else the `exception.type` of
the span's first exception event), so a timeout and a refused connection
with the same text stay apart.

Why an ordered regex list and not a learned miner: the template must be the
same in every collector process, every lane and every run (the writer keys
its rollups by it, the migration recomputes old rows with it, the dashboard
filters by it). An ordered list of patterns joined into one alternation, as
Sentry parameterises messages, is a pure function of the text. Drain mines
templates online with a prefix tree whose clusters depend on what each
process has seen and in which order, so two collectors (or one collector
after a restart) would give the same message different templates.

The function is applied until nothing changes (a replacement can expose a
match next to it, e.g. a quote after a number), which makes it idempotent: a
template parameterises to itself, so a template can be given wherever a
message is expected. Pure: no Django, no I/O.
"""

import hashlib
import re

# Characters that continue a word: an id or number inside a longer word is
# part of that word (`order42`, `v2` stay as they are).
_W = r"A-Za-z0-9_"
_BEFORE = rf"(?<![{_W}])"
_AFTER = rf"(?![{_W}])"

_MONTH = r"(?:Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec)"
_DAY = r"(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun)"
_CLOCK = r"\d{2}:\d{2}:\d{2}(?:[.,]\d+)?"
_ZONE = r"(?:\s?(?:Z|UTC|GMT|[+-]\d{2}:?\d{2}))?"
_H = r"[0-9A-Fa-f]"

# Earlier patterns win where two start at the same place. Each group's name is
# its placeholder; `url` is handled by _url(). Repetitions that may start at
# many places of one text are bounded, so a long message costs linear time.
PATTERNS = (
    (
        "email",
        rf"{_BEFORE}[A-Za-z0-9._%+-]{{1,64}}@[A-Za-z0-9-]{{1,63}}(?:\.[A-Za-z0-9-]{{1,63}}){{1,8}}",
    ),
    ("url", r"\b[A-Za-z][A-Za-z0-9+.-]{0,15}://[^\s'\"<>]*[^\s'\"<>.,;:)\]]"),
    (
        "time",
        # ISO 8601 / RFC 3339 dates and times, RFC 1123 dates, clock times.
        rf"{_BEFORE}(?:\d{{4}}-\d{{2}}-\d{{2}}(?:[T ]{_CLOCK}{_ZONE}|[T ]\d{{2}}:\d{{2}}{_ZONE})?"
        rf"|(?:{_DAY},?\s+)?\d{{1,2}}\s+{_MONTH}\s+\d{{4}}(?:\s+{_CLOCK}{_ZONE})?"
        rf"|{_DAY}\s+{_MONTH}\s+\d{{1,2}}\s+{_CLOCK}(?:\s+\d{{4}})?"
        rf"|\d{{4}}/\d{{2}}/\d{{2}}|{_CLOCK}{_ZONE}){_AFTER}",
    ),
    ("uuid", rf"{_BEFORE}{_H}{{8}}-{_H}{{4}}-{_H}{{4}}-{_H}{{4}}-{_H}{{12}}{_AFTER}"),
    (
        "ip",
        rf"{_BEFORE}(?:(?:25[0-5]|2[0-4]\d|1?\d?\d)\.){{3}}(?:25[0-5]|2[0-4]\d|1?\d?\d)"
        rf"(?![{_W}]|\.\d)"
        # IPv6: eight groups, or a `::` form holding at least one digit.
        rf"|{_BEFORE}(?:{_H}{{1,4}}:){{7}}{_H}{{1,4}}{_AFTER}"
        rf"|(?<![{_W}:])(?=[0-9A-Fa-f:]*\d)(?:{_H}{{1,4}}(?::{_H}{{1,4}}){{0,6}})?::"
        rf"(?:{_H}{{1,4}}(?::{_H}{{1,4}}){{0,6}})?"
        rf"(?![{_W}:])",
    ),
    (
        "hex",
        rf"{_BEFORE}(?:0[xX]{_H}+|(?=[0-9a-f]*[a-f])(?=[0-9a-f]*\d)[0-9a-f]{{8,}}"
        rf"|(?=[0-9A-F]*[A-F])(?=[0-9A-F]*\d)[0-9A-F]{{8,}}){_AFTER}",
    ),
    (
        "id",
        # A word prefix and parts joined by - or _ of which one has a digit
        # (ord-000195, order_42, INV-2024-0042, cus_9s8f7d), or a long token
        # of letters and two or more runs of digits (ULIDs, nanoids).
        r"(?<![A-Za-z0-9_-])[A-Za-z]+(?:[-_][A-Za-z0-9]+)*[-_][A-Za-z]*\d[A-Za-z0-9]*"
        r"(?:[-_][A-Za-z0-9]+)*(?![A-Za-z0-9_-])"
        rf"|{_BEFORE}(?=[A-Za-z0-9]*[A-Za-z])(?=[A-Za-z0-9]*\d+[A-Za-z]+\d)[A-Za-z0-9]{{10,}}{_AFTER}",
    ),
    # Numbers: integers, decimals, versions and lists (1,2,3); a unit may follow (30s).
    ("num", rf"{_BEFORE}\d+(?:[.,]\d+)*"),
    # Quoted values: a quote that is not an apostrophe inside a word.
    (
        "quoted",
        r"(?<![A-Za-z0-9])'(?:[^'\\\n]|\\.){0,256}'(?![A-Za-z0-9])|\"(?:[^\"\\\n]|\\.){0,256}\"",
    ),
)

_NAMES = tuple(name for name, _ in PATTERNS)
_ALL = re.compile("|".join(f"(?P<{name}>{pattern})" for name, pattern in PATTERNS))
# Inside a URL: everything but the URL pattern itself.
_IN_URL = re.compile("|".join(f"(?P<{n}>{p})" for n, p in PATTERNS if n != "url"))
_QUERY_VALUE = re.compile(r"=[^&#]+")
_MAX_ROUNDS = 20
MAX_MESSAGE = 2000
MAX_TEMPLATE = 1000


def _replace(match: re.Match) -> str:
    name = match.lastgroup
    if name == "url":
        return _url(match.group())
    return f"<{name}>"


def _url(url: str) -> str:
    base, mark, query = url.partition("?")
    base = _IN_URL.sub(_replace, base)
    if mark:
        query = _QUERY_VALUE.sub("=<quoted>", query)
    return base + mark + query


def template(message: str | None) -> str:
    """The message with its variable parts as placeholders ('' for no message).

    Only the first MAX_MESSAGE characters count and a template is at most
    MAX_TEMPLATE long (cut at a space where there is one): status messages
    have no length limit, and the writer parameterises each new one.
    """
    text = (message or "")[:MAX_MESSAGE]
    while True:
        text = _fixpoint(text)
        if len(text) <= MAX_TEMPLATE:
            return text
        # Parameterised again after the cut: a cut token may read differently.
        cut = text.rfind(" ", MAX_TEMPLATE // 2, MAX_TEMPLATE + 1)
        text = text[: cut if cut > 0 else MAX_TEMPLATE]


def _fixpoint(text: str) -> str:
    # Each round that changes the text replaces at least one character that
    # is not part of a placeholder, so this ends; the cap is a backstop.
    for _ in range(_MAX_ROUNDS):
        new = _ALL.sub(_replace, text)
        if new == text:
            break
        text = new
    return text


def error_type(attribute=None, exception_types=()) -> str:
    """The error type of a failed span: its `error.type` attribute, else the
    `exception.type` of its first exception event that has one ('' when none).

    Takes the values as stored (strings or numbers), so the writer and readers
    of stored spans agree.
    """
    for value in (attribute, *exception_types):
        if isinstance(value, bool) or value is None:
            continue
        if isinstance(value, str | int | float) and str(value) != "":
            return str(value)
    return ""


def fingerprint(error_type_: str, template_: str) -> str:
    """16 hex characters naming a group: the error type and the template."""
    text = f"{len(error_type_)}:{error_type_}{len(template_)}:{template_}"
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def of(message: str | None, error_type_: str = "") -> tuple[str, str]:
    """(template, fingerprint) of one error message and its error type."""
    shape = template(message)
    return shape, fingerprint(error_type_, shape)
