"""Redaction of secrets before anything is stored.

A value is replaced when its key contains one of settings.REDACT_KEYS.
Keys and rules are compared as lowercase words joined by `_`, whatever
separated them (`.`, `-`, spaces, camelCase): `api_key` matches `X-Api-Key`
and `APIKey`, `card_number` matches `payment.card.number`, `Card Number` and
`cardNumber`. A rule matches as a substring (`token` matches `tokens_used`),
and also as whole words run together (`cardnumber` matches `cardNumber`),
but never across the middle of a word (`ssn` leaves `business_name` alone).
It applies to span and log attributes, CloudEvents extension
attributes and JSON payloads, at every depth, before storage: what is never
written cannot leak from a backup or the UI.
"""

import re

from django.conf import settings

REDACTED = "[REDACTED]"
# Attribute keys repeat across spans (a few hundred names in a real system),
# so each key's verdict is remembered; the bound keeps hostile key churn cheap.
_KEY_CACHE_SIZE = 10_000
# Only short, clean keys are remembered: the attribute loop of ingest skips
# its length and NUL checks for a key it finds here (a key past the attribute
# length limit, at least this long, is cut before it is looked up).
MAX_CACHED_KEY_CHARS = 256


class Matcher:
    """Decides which keys are secret, for one list of rules."""

    def __init__(self, keys):
        self.source = keys
        needles = sorted({n for n in map(_words, keys) if n})
        self._pattern = re.compile("|".join(map(_needle_pattern, needles))) if needles else None
        # key -> is it secret; read directly by the attribute loop of ingest
        self.verdicts: dict[str, bool] = {}

    @property
    def active(self) -> bool:
        return self._pattern is not None

    def is_secret(self, key) -> bool:
        verdict = self.verdicts.get(key)
        if verdict is None:
            if self._pattern is None:
                return False
            verdict = self._pattern.search(_words(str(key))) is not None
            if isinstance(key, str) and len(key) <= MAX_CACHED_KEY_CHARS and "\x00" not in key:
                if len(self.verdicts) >= _KEY_CACHE_SIZE:
                    self.verdicts.clear()
                self.verdicts[key] = verdict
        return verdict

    def walk(self, value):
        """A copy of `value` with secret-keyed values replaced, at every depth."""
        if isinstance(value, dict):
            return {
                key: REDACTED if self.is_secret(key) else self.walk(item)
                for key, item in value.items()
            }
        if isinstance(value, list):
            return [self.walk(item) for item in value]
        return value


def _words(key: str) -> str:
    """`X-Api-Key`, `APIKey`, `api.key` -> `x_api_key`, `api_key`, `api_key`."""
    key = _CAMEL.sub("_", key)
    return _SEPARATORS.sub("_", key.lower()).strip("_")


def _needle_pattern(needle: str) -> str:
    """A rule as a substring of the key's words, or run together from whole words."""
    letters = needle.replace("_", "")
    joined = "_?".join(map(re.escape, letters))
    return f"{re.escape(needle)}|(?:^|_){joined}(?=_|$)"


_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])")
_SEPARATORS = re.compile(r"[\W_]+")
_settings_matcher: Matcher | None = None


def matcher(keys=None) -> Matcher:
    """The Matcher for `keys`, or for settings.REDACT_KEYS (rebuilt when the setting changes)."""
    global _settings_matcher
    if keys is not None:
        return Matcher(keys)
    source = settings.REDACT_KEYS
    current = _settings_matcher
    if current is None or current.source is not source:
        current = _settings_matcher = Matcher(source)
    return current


def is_secret_key(key: str, keys=None) -> bool:
    """True when a value stored under `key` must be redacted."""
    return matcher(keys).is_secret(key)


def redact(value, keys=None):
    """A copy of a JSON-like value with secret-keyed values replaced, recursively.

    Dicts are matched on their keys; lists are walked; scalars are returned as is.
    """
    current = matcher(keys)
    if not current.active:
        return value
    return current.walk(value)
