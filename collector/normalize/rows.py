"""SpanRow and StageRow made from every field, positionally: `span_row(...)`
is `SpanRow(...)` and `stage_row(...)` is `StageRow(...)`.

The compiled maker (collector/normalize/_rows.pyx) sets the slots directly,
without the dataclasses' Python __init__; without the build, or when the
classes changed since it was built, these are the classes themselves.
"""

from collector.batch import SpanRow, StageRow

try:
    from collector.normalize._rows import span_row, stage_row
except ImportError:  # not built, or built for other fields
    span_row, stage_row = SpanRow, StageRow

__all__ = ["span_row", "stage_row"]
