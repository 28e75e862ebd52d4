"""W3C Trace Context (`traceparent`, `tracestate`) parsing, as the Level 2 spec says.

An invalid header is ignored, never an error: the event is still stored,
just without its trace.
"""

import re

_HEX = re.compile(r"[0-9a-f]+")
_TRACESTATE_KEY = re.compile(
    r"^(?:[a-z][_0-9a-z\-*/]{0,255}|[a-z0-9][_0-9a-z\-*/]{0,240}@[a-z][_0-9a-z\-*/]{0,13})$"
)
_TRACESTATE_VALUE = re.compile(
    r"^[\x20-\x2b\x2d-\x3c\x3e-\x7e]{0,255}[\x21-\x2b\x2d-\x3c\x3e-\x7e]$"
)
MAX_TRACESTATE_MEMBERS = 32


def _hex(text: str, length: int) -> bool:
    return len(text) == length and _HEX.fullmatch(text) is not None


def parse_traceparent(value: str | None) -> tuple[bytes, bytes, int] | None:
    """(trace_id, parent_id, flags) of a valid traceparent, else None.

    Version 00 must be exactly 55 characters; a higher version is read at
    the same offsets and its extra fields ignored; `ff`, uppercase hex and
    all-zero ids are invalid.
    """
    if not value:
        return None
    value = value.strip(" \t")
    if len(value) < 55 or value[2] != "-" or not _hex(value[:2], 2) or value[:2] == "ff":
        return None
    if value[:2] == "00" and len(value) != 55:
        return None
    if len(value) > 55 and value[55] != "-":
        return None
    trace_hex, parent_hex, flags_hex = value[3:35], value[36:52], value[53:55]
    if value[35] != "-" or value[52] != "-":
        return None
    if not (_hex(trace_hex, 32) and _hex(parent_hex, 16) and _hex(flags_hex, 2)):
        return None
    trace_id, parent_id = bytes.fromhex(trace_hex), bytes.fromhex(parent_hex)
    if not any(trace_id) or not any(parent_id):
        return None
    return trace_id, parent_id, int(flags_hex, 16)


def valid_tracestate(value: str | None) -> bool:
    """True when `tracestate` is well formed (at most 32 `key=value` members, unique keys)."""
    if value is None:
        return False
    members = [m.strip(" \t") for m in value.split(",")]
    members = [m for m in members if m]
    if not members or len(members) > MAX_TRACESTATE_MEMBERS:
        return False
    keys = set()
    for member in members:
        key, sep, val = member.partition("=")
        if not sep or not _TRACESTATE_KEY.match(key) or not _TRACESTATE_VALUE.match(val):
            return False
        if key in keys:
            return False
        keys.add(key)
    return True
