"""Redaction of secrets before anything is stored.

A value is replaced when its key contains one of settings.REDACT_KEYS
(case-insensitive substring: `db.password`, `X-Api-Key`, `cardNumber` all
match). It applies to span and log attributes, CloudEvents extension
attributes and JSON payloads, at every depth, before storage: what is never
written cannot leak from a backup or the UI.
"""

from django.conf import settings

REDACTED = "[REDACTED]"


def _needles(keys=None) -> tuple[str, ...]:
    source = settings.REDACT_KEYS if keys is None else keys
    return tuple(k.lower().replace("-", "_") for k in source if k)


def is_secret_key(key: str, keys=None) -> bool:
    """True when a value stored under `key` must be redacted."""
    lowered = str(key).lower().replace("-", "_")
    return any(needle in lowered for needle in _needles(keys))


def redact(value, keys=None):
    """A copy of a JSON-like value with secret-keyed values replaced, recursively.

    Dicts are matched on their keys; lists are walked; scalars are returned as is.
    """
    needles = _needles(keys)
    if not needles:
        return value
    return _walk(value, needles)


def _walk(value, needles):
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            lowered = str(key).lower().replace("-", "_")
            if any(needle in lowered for needle in needles):
                out[key] = REDACTED
            else:
                out[key] = _walk(item, needles)
        return out
    if isinstance(value, list):
        return [_walk(item, needles) for item in value]
    return value
