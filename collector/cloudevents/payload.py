"""An event's payload for its envelope: JSON, text or bytes, redacted and capped."""

import base64
import binascii
import json

from django.conf import settings

from collector.cloudevents.modes import _BODY, InvalidEvent
from collector.decode import DecodeError, parse_json
from collector.normalize import clean_text
from collector.redact import redact


def is_json_type(content_type: str | None) -> bool:
    """True for a JSON media type (`*/json`, `*/*+json`), or none: then `data` is JSON."""
    if content_type is None:
        return True
    essence = content_type.split(";", 1)[0].strip().lower()
    return essence.endswith("/json") or essence.endswith("+json")


def _payload(event: dict, content_type: str | None) -> dict:
    """Envelope payload fields: redacted, then capped at PAYLOAD_MAX_BYTES."""
    cap = settings.PAYLOAD_MAX_BYTES
    if "data" in event and "data_base64" in event:
        raise InvalidEvent("'data' and 'data_base64' are mutually exclusive")
    if _BODY in event:  # binary mode: the HTTP body is the payload
        raw = event[_BODY]
        if is_json_type(content_type):
            try:
                return _json_payload(parse_json(raw), len(raw), cap)
            except DecodeError:
                # A payload that merely claims to be JSON is kept as text, and
                # so is one holding NaN or a number that cannot be stored.
                pass
        return _bytes_payload(raw, cap)
    if event.get("data_base64") is not None:
        encoded = event["data_base64"]
        if not isinstance(encoded, str):
            raise InvalidEvent("'data_base64' must be a base64 string")
        try:
            raw = base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError):
            raise InvalidEvent("'data_base64' is not valid base64") from None
        if content_type is not None and is_json_type(content_type):
            try:
                return _json_payload(parse_json(raw), len(raw), cap)
            except DecodeError:
                pass
        return _base64_payload(raw, cap)
    if "data" not in event or event["data"] is None:
        return {"data_size": 0}
    data = event["data"]
    if not is_json_type(content_type) and isinstance(data, str):
        return _text_payload(data, cap)
    # surrogatepass: JSON can spell an unpaired surrogate ("\ud800"), which
    # UTF-8 cannot; it is replaced when the payload is cleaned, not counted as an error.
    size = len(json.dumps(data, ensure_ascii=False).encode("utf-8", "surrogatepass"))
    return _json_payload(data, size, cap)


def _json_payload(data, size: int, cap: int) -> dict:
    data = redact(_clean_json(data))
    text = json.dumps(data, ensure_ascii=False)
    encoded = text.encode()
    if len(encoded) <= cap:
        return {"data": data, "data_size": size}
    return {"data_text": _cut(encoded, cap), "data_size": size, "truncated": True}


def _text_payload(text: str, cap: int) -> dict:
    encoded = clean_text(text).encode()
    return {
        "data_text": _cut(encoded, cap),
        "data_size": len(text.encode("utf-8", "replace")),
        "truncated": len(encoded) > cap,
    }


def _bytes_payload(raw: bytes, cap: int) -> dict:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return _base64_payload(raw, cap)
    if "\x00" in text:
        return _base64_payload(raw, cap)
    return _text_payload(text, cap)


def _base64_payload(raw: bytes, cap: int) -> dict:
    # Cap the decoded bytes so the stored base64 decodes to a clean prefix.
    kept = raw[: cap * 3 // 4]
    return {
        "data_text": base64.b64encode(kept).decode(),
        "data_base64": True,
        "data_size": len(raw),
        "truncated": len(kept) < len(raw),
    }


def _cut(encoded: bytes, cap: int) -> str:
    return encoded[:cap].decode("utf-8", "ignore")


def _clean_json(value):
    if isinstance(value, str):
        return clean_text(value)
    if isinstance(value, dict):
        return {clean_text(str(k)): _clean_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_clean_json(v) for v in value]
    if isinstance(value, float) and value != value:
        return None
    return value
