"""Traces and event journeys: every span, stage, payload and log of one event's way
through the system, for one project.

A journey crosses traces: a batch consumer starts its own trace and points
back at its producers with span links, so the stages whose
`linked_trace_ids` contain this trace (GIN index) belong to it, and so do
the spans of those consumers. Each read is one indexed query per table on
(project_id, trace_id) or (project_id, event_id).

An event's journey holds that event's stages only: the stages reporting its
id, and the stages without an id joined to one of them span to span (a
consumer linked to its publish, the publish its consumer links to, a batch
receive that links it among others). A batch receive's trace holds the
other messages of the batch too; they are not this event's, and a receive
that took several messages shows as one, with its batch size.

The parts: stored rows as the API shows them (`rows`), a trace's journey and the
waterfall (`traces`), an event's journey (`events`), and its narrowing where a
batch shares the traces (`narrowing`); the search box (`search`) and the recent
traces (`recent`).
"""

from dashboard.journeys.queries.events import event
from dashboard.journeys.queries.narrowing import MESSAGE_ID_ATTRIBUTES
from dashboard.journeys.queries.rows import (
    MAX_LINKED_TRACES,
    MAX_LOGS,
    MAX_SPANS,
    MAX_STAGES,
    SPAN_KINDS,
    STAGE_COLUMNS,
    STATUS,
    NotFound,
    batch_size,
    iso,
    parse_trace_id,
)
from dashboard.journeys.queries.traces import limits_summary, trace, waterfall

__all__ = [
    "MAX_LINKED_TRACES", "MAX_LOGS", "MAX_SPANS", "MAX_STAGES", "MESSAGE_ID_ATTRIBUTES",
    "SPAN_KINDS", "STAGE_COLUMNS", "STATUS", "NotFound", "batch_size", "event", "iso",
    "limits_summary", "parse_trace_id", "trace", "waterfall",
]  # fmt: skip
