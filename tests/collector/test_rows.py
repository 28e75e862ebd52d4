"""SpanRow and StageRow made by the compiled maker (collector/normalize/_rows.pyx)
are the rows the dataclasses make; without the build, or for changed
classes, the dataclasses are used."""

import dataclasses
import gc
import subprocess
import sys

import pytest

from collector.batch import SpanRow, StageRow
from collector.normalize import rows

SPAN = (
    7, bytes(range(16)), bytes(range(8)), None, 1_700_000_000_123_456_789, 2**63 - 1,
    "checkout", "orders publish", 4, 2, "broker refused", {"a": [1, {"b": None}]},
    {"service.name": "checkout"}, [{"name": "exception"}], [], None,
)  # fmt: skip
STAGE = (
    7, 1_700_000_000_123_456_789, "failed", "consumer", "billing", "kafka", "orders",
    "billing-group", bytes(16), bytes(8), b"\x01" * 8, [(bytes(16), b"\x02" * 8)], "m-1",
    None, None, "boom", 12.5, 0, "ValueError",
)  # fmt: skip


def test_the_maker_is_built():
    assert rows.span_row is not SpanRow, "collector/normalize/_rows.pyx is not built: make install"
    assert rows.stage_row is not StageRow


def test_made_rows_are_the_dataclasses_rows():
    span, stage = rows.span_row(*SPAN), rows.stage_row(*STAGE)
    assert type(span) is SpanRow and type(stage) is StageRow
    assert span == SpanRow(*SPAN) and stage == StageRow(*STAGE)
    assert repr(span) == repr(SpanRow(*SPAN))
    assert stage.dedupe_key() == StageRow(*STAGE).dedupe_key()
    assert dataclasses.replace(stage, stage="processed").stage == "processed"
    # Each field is the very object given, and the row holds its own reference.
    assert span.attributes is SPAN[11] and stage.linked is STAGE[11]
    assert _references(rows.span_row, SPAN) == _references(SpanRow, SPAN) == (100, 0)
    assert _references(rows.stage_row, STAGE) == _references(StageRow, STAGE) == (100, 0)


def _references(make, fields) -> tuple[int, int]:
    """References a row's dict or list field gains while 100 rows hold it, and
    keeps once they are gone."""
    value = fields[11]
    before = sys.getrefcount(value)
    made = [make(*fields) for _ in range(100)]
    held = sys.getrefcount(value) - before
    del made
    return held, sys.getrefcount(value) - before


def test_the_maker_takes_every_field_and_nothing_else():
    # Callers pass every field; one short or one over is a mistake, refused
    # (the classes would fill a defaulted field in, or refuse one too many).
    for make, fields in ((rows.span_row, SPAN), (rows.stage_row, STAGE)):
        for wrong in (fields[:-1], (*fields, None)):
            with pytest.raises(TypeError):
                make(*wrong)


def test_made_rows_are_freed_by_reference_counting_alone():
    # Rows hold only values, never an object leading back to them, so the
    # maker leaves them out of the cyclic collector's walks; dropping the last
    # reference frees a row and what it holds at once, with the collector off.
    span = rows.span_row(*SPAN[:11], {}, *SPAN[12:])
    stage = rows.stage_row(*STAGE)
    assert not gc.is_tracked(span) and not gc.is_tracked(stage)
    collected = []
    span.resource = Finalised(collected)
    stage.linked = (Finalised(collected),)
    gc.disable()
    try:
        del span, stage
        assert collected == [True, True]
    finally:
        gc.enable()


class Finalised:
    def __init__(self, into):
        self.into = into

    def __del__(self):
        self.into.append(True)


def _in_a_fresh_interpreter(code: str) -> str:
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    return done.stdout.strip()


def test_without_the_build_the_dataclasses_are_used():
    out = _in_a_fresh_interpreter(
        "import sys; sys.modules['collector.normalize._rows'] = None\n"
        "from collector.batch import SpanRow, StageRow\n"
        "from collector.normalize import rows\n"
        "print(rows.span_row is SpanRow, rows.stage_row is StageRow)"
    )
    assert out == "True True"


def test_a_maker_built_for_other_fields_is_not_used():
    # A field added to the class without a rebuild: the slots would not match.
    out = _in_a_fresh_interpreter(
        "import dataclasses\n"
        "from collector import batch\n"
        "@dataclasses.dataclass(slots=True)\n"
        "class SpanRow(batch.SpanRow.__mro__[0].__base__):\n"
        "    project_id: int\n"
        "    new_field: int\n"
        "batch.SpanRow = SpanRow\n"
        "from collector.normalize import rows\n"
        "print(rows.span_row is SpanRow)"
    )
    assert out == "True"
