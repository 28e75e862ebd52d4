"""The plain values of a request: the Normalized result, text, AnyValue, attributes, resources."""

import base64
import math
from dataclasses import dataclass, field

from collector import redact
from collector.attribute_limits import Limits, mark
from collector.batch import (
    Batch,
    clip,
)

UNKNOWN_SERVICE = "unknown_service"
MAX_INT64 = 2**63 - 1
MAX_REASONS = 5


@dataclass
class Normalized:
    """A batch plus what was refused from the request, for partial_success."""

    batch: Batch
    rejected: int = 0
    reasons: list[str] = field(default_factory=list)

    def reject(self, reason: str) -> None:
        self.rejected += 1
        if len(self.reasons) < MAX_REASONS and reason not in self.reasons:
            self.reasons.append(reason)

    def absorb(self, written) -> int:
        """Count the items the writer refused (collector.writer.WriteResult); returns how many."""
        refused = getattr(written, "refused", 0) or 0
        if refused:
            self.rejected += refused
            for reason in getattr(written, "reasons", ()) or ():
                if len(self.reasons) < MAX_REASONS and reason not in self.reasons:
                    self.reasons.append(reason)
        return refused

    @property
    def error_message(self) -> str:
        """An English summary for partial_success.error_message ('' when nothing was rejected)."""
        if not self.rejected:
            return ""
        return f"{self.rejected} item(s) rejected: " + "; ".join(self.reasons)


def clean_text(value: str) -> str:
    """A string PostgreSQL accepts in text and jsonb (no NUL, valid UTF-8)."""
    if "\x00" in value:
        value = value.replace("\x00", "\ufffd")
    try:
        value.encode()
    except UnicodeEncodeError:
        value = value.encode("utf-8", "replace").decode()
    return value


def _pb_text(value: str) -> str:
    """`clean_text` for strings read from a protobuf message: the parser refuses
    invalid UTF-8 in string fields, so only NUL (which PostgreSQL refuses) is left."""
    return value.replace("\x00", "\ufffd") if "\x00" in value else value


def any_value(value):
    """An OTLP AnyValue as a JSON-able Python value (bytes become base64 text)."""
    which = value.WhichOneof("value")
    if which == "string_value":
        return _pb_text(value.string_value)
    if which is None:
        return None
    if which == "int_value":
        return value.int_value
    if which == "bool_value":
        return value.bool_value
    if which == "double_value":
        number = value.double_value
        # jsonb has no NaN or Infinity.
        return number if math.isfinite(number) else str(number)
    if which == "bytes_value":
        return base64.b64encode(value.bytes_value).decode()
    if which == "array_value":
        return [any_value(v) for v in value.array_value.values]
    if which == "kvlist_value":
        return {_pb_text(kv.key): any_value(kv.value) for kv in value.kvlist_value.values}
    return None


def attributes(
    key_values, secrets: redact.Matcher | None = None, limits: Limits | None = None, dropped=0
) -> dict:
    """OTLP KeyValue list -> dict, with secret-keyed values redacted, within `limits`.

    `dropped` is the sender's own dropped_attributes_count; what the limits
    cut is added to it and recorded in the map (collector.attribute_limits).

    This runs for every span, resource, event and link, so the common case (a
    string value under a key seen before) costs one protobuf field read, one
    cached key verdict and one length check. Entries past the count limit
    are never read.
    """
    secrets = secrets or redact.matcher()
    limits = limits or Limits()
    verdicts = secrets.verdicts  # the cache is asked inline: a call per key costs more
    length = limits.length
    count = len(key_values)
    if count > limits.count:
        over = count - limits.count
        limits.dropped += over
        dropped += over
    # A slice (a list, made in C) rather than the repeated field itself:
    # iterating that ends on an IndexError, which costs as much as a key.
    key_values = key_values[: limits.count]
    out = {}
    cut = None
    for kv in key_values:
        key = kv.key
        secret = verdicts.get(key)
        if secret is None:
            # The verdict cache holds only short keys without NUL (redact.MAX_CACHED_KEY_CHARS,
            # which the length limit is never below), so only a miss needs these checks.
            if "\x00" in key:
                key = _pb_text(key)
            if len(key) > length:
                key = limits.text(key)
                cut = [*(cut or ()), key]
            secret = secrets.is_secret(key)
        if secret:
            out[key] = redact.REDACTED
            continue
        value = kv.value
        # A set string field is non-empty (proto3 oneof): asking for it first
        # saves a WhichOneof call on the commonest kind of value.
        text = value.string_value
        if text:
            if len(text) > length:
                text = limits.text(text)
                cut = [*(cut or ()), key]
            out[key] = _pb_text(text) if "\x00" in text else text
        else:
            before = limits.truncated
            item = bounded_value(value, limits)
            if limits.truncated != before:
                cut = [*(cut or ()), key]
            out[key] = secrets.walk(item) if isinstance(item, dict | list) else item
    if dropped or cut:
        mark(out, dropped, cut)
    return out


def bounded_value(value, limits: Limits):
    """`any_value` within the limits: strings cut to the length limit, arrays and
    maps to the count limit (elements past it are never read)."""
    which = value.WhichOneof("value")
    # Numbers first: they are the commonest values that are not strings.
    if which == "int_value":
        return value.int_value
    if which == "string_value":
        return _pb_text(limits.text(value.string_value))
    if which == "bytes_value":
        return limits.text(base64.b64encode(value.bytes_value).decode())
    if which == "array_value":
        values = value.array_value.values
        if len(values) > limits.count:
            limits.truncated += 1
            values = values[: limits.count]
        return [bounded_value(v, limits) for v in values]
    if which == "kvlist_value":
        values = value.kvlist_value.values
        if len(values) > limits.count:
            limits.truncated += 1
            values = values[: limits.count]
        return {_pb_text(limits.text(kv.key)): bounded_value(kv.value, limits) for kv in values}
    return any_value(value)


def _service(resource: dict) -> str:
    name = resource.get("service.name")
    return clip(str(name)) if name not in (None, "") else UNKNOWN_SERVICE
