"""OTLP requests to Eventscope rows: spans, the messaging stages they imply, logs.

The parts: plain values, attributes and resources (`values`), spans (`spans`),
how a span becomes a stage, with the rules in its docstring (`stages`), logs (`logs`),
and protobuf trace requests straight from their bytes to the same rows (`wire`, with
the compiled reader `_wire.pyx`).
"""

from collector.normalize.logs import MAX_SEVERITY, normalize_logs
from collector.normalize.spans import MAX_SPAN_KIND, normalize_traces
from collector.normalize.stages import SPAN_FLAGS_PARENT_IS_REMOTE
from collector.normalize.values import (
    MAX_INT64,
    MAX_REASONS,
    UNKNOWN_SERVICE,
    Normalized,
    any_value,
    attributes,
    bounded_value,
    clean_text,
)

__all__ = [
    "MAX_INT64", "MAX_REASONS", "MAX_SEVERITY", "MAX_SPAN_KIND", "SPAN_FLAGS_PARENT_IS_REMOTE",
    "UNKNOWN_SERVICE", "Normalized", "any_value", "attributes", "bounded_value", "clean_text",
    "normalize_logs", "normalize_traces",
]  # fmt: skip
