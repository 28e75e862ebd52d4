"""Protobuf trace requests straight to rows, through the compiled reader when it is built.

`traces_from_protobuf(body, project_id)` is `normalize_traces(decode_request(
"traces", body, PROTOBUF), project_id)`: the same result, or the same
DecodeError. The compiled reader (`_wire.pyx`, built by `make install`)
reads the wire format itself and hands any request it is not sure of to
upb, which then decides; each such hand-over counts in
`eventscope_wire_fallbacks` on /metrics. Without the extension every
request takes the upb path, and the collector says so once at start.
"""

import logging

from collector import stats
from collector.decode import PROTOBUF, decode_request
from collector.normalize.spans import normalize_traces
from collector.normalize.values import Normalized

log = logging.getLogger(__name__)

try:
    from collector.normalize import _wire
except ImportError as exc:  # not built: `make install` (or setup.py build_ext --inplace)
    _wire = None
    _missing = str(exc)
else:
    _missing = ""


def compiled() -> bool:
    """True when protobuf trace requests are read by the compiled reader."""
    return _wire is not None


def warn_if_missing() -> None:
    """Log, once at start, that the compiled reader is not built."""
    if _wire is None:
        log.warning(
            "the compiled OTLP trace reader is not built (%s): protobuf trace requests "
            "take the slower upb path; run `make install` to build it",
            _missing,
        )


def traces_from_protobuf(body: bytes, project_id: int) -> Normalized:
    """An ExportTraceServiceRequest's protobuf bytes, normalised (raises DecodeError)."""
    if _wire is not None:
        result = _wire.normalize(body, project_id)
        if result is not None:
            return result
        stats.count_wire_fallback()
    return normalize_traces(decode_request("traces", body, PROTOBUF), project_id)
