"""The normalised rows that receivers hand to the writer.

Receivers decode a request (OTLP spans, CloudEvents envelopes), normalise it
into these plain dataclasses, and `await writer.submit(batch)`. The writer
answers only after the rows are committed, or raises one of the errors below
so the receiver can answer 429/503 without having stored half a request.

Ids are raw bytes (16-byte trace ids, 8-byte span ids); times are integer
nanoseconds since the Unix epoch (UTC), as in OTLP.
"""

import hashlib
from dataclasses import dataclass, field

# ---- vocabulary ----------------------------------------------------------------

STAGES = ("published", "received", "processed", "failed", "retried", "deadlettered")
PRODUCER, CONSUMER = "producer", "consumer"
ORIGIN_SPAN, ORIGIN_CLOUDEVENT = 1, 2

# OTLP SpanKind and StatusCode values
KIND_INTERNAL, KIND_SERVER, KIND_CLIENT, KIND_PRODUCER, KIND_CONSUMER = 1, 2, 3, 4, 5
STATUS_UNSET, STATUS_OK, STATUS_ERROR = 0, 1, 2


class IngestUnavailable(Exception):
    """The data was not stored; the client should retry after `retry_after` seconds."""

    status = 503

    def __init__(self, message, retry_after=5):
        super().__init__(message)
        self.retry_after = retry_after


class Saturated(IngestUnavailable):
    """The writer's queue is full (answer 429)."""

    status = 429


class StorageUnavailable(IngestUnavailable):
    """The database cannot be reached or refused the write (answer 503)."""

    status = 503


# ---- bounds ---------------------------------------------------------------------
# Names and ids end up in index keys (flow rollups, event lookups), which
# PostgreSQL refuses past about 2.7 kB: one huge name must not make a whole
# request unstorable. Names are cut; CloudEvents ids and sources longer than
# this are refused (they identify the event), span message ids are cut.
MAX_NAME_CHARS = 256
MAX_ID_CHARS = 512


def clip(value: str, limit: int = MAX_NAME_CHARS) -> str:
    """`value` cut to `limit` characters, the cut marked with '…'."""
    return value if len(value) <= limit else value[: limit - 1] + "…"


# ---- rows -------------------------------------------------------------------------


@dataclass(slots=True)
class SpanRow:
    project_id: int
    trace_id: bytes
    span_id: bytes
    parent_span_id: bytes | None
    start_time_ns: int
    duration_ns: int
    service: str
    name: str
    kind: int
    status_code: int
    status_message: str | None
    attributes: dict
    resource: dict
    events: list = field(default_factory=list)
    # [{"trace_id": hex, "span_id": hex, "attributes": {...}}]
    links: list = field(default_factory=list)
    scope: str | None = None


@dataclass(slots=True)
class StageRow:
    project_id: int
    time_ns: int
    stage: str  # one of STAGES
    role: str  # PRODUCER or CONSUMER
    service: str
    system: str = ""
    channel: str = ""
    consumer_group: str = ""
    trace_id: bytes | None = None
    span_id: bytes | None = None
    parent_span_id: bytes | None = None
    # creation contexts this stage is linked to (span links / parent of a consumer)
    linked: list[tuple[bytes, bytes]] = field(default_factory=list)
    event_id: str | None = None  # CloudEvents id or messaging.message.id
    event_source: str | None = None  # CloudEvents source
    event_type: str | None = None
    error: str | None = None
    duration_ms: float | None = None
    origin: int = ORIGIN_SPAN
    # error.type, else the exception event's type: not stored (it stays on the
    # span), only counted into the failure rollups (collector/fingerprint.py)
    error_type: str = ""

    def dedupe_key(self) -> bytes:
        """Identity of this stage across retried deliveries.

        A span-derived stage is its span (one span gives one stage); an
        envelope stage is source+id+stage+service, as CloudEvents says
        source+id identifies the event.
        """
        if self.origin == ORIGIN_SPAN and self.trace_id and self.span_id:
            parts = (b"s", self.trace_id, self.span_id, self.stage.encode())
        else:
            parts = (
                b"e",
                (self.event_source or "").encode(),
                (self.event_id or "").encode(),
                self.stage.encode(),
                self.service.encode(),
            )
        return hashlib.blake2b(b"\x00".join(parts), digest_size=16).digest()


@dataclass(slots=True)
class EnvelopeRow:
    project_id: int
    time_ns: int
    source: str
    event_id: str
    type: str
    subject: str | None = None
    datacontenttype: str | None = None
    dataschema: str | None = None
    extensions: dict = field(default_factory=dict)
    data: object = None  # JSON value (after redaction), when the payload is JSON
    data_text: str | None = None  # otherwise the text, or base64 when data_base64
    data_base64: bool = False
    data_size: int = 0  # original payload size in bytes
    truncated: bool = False
    trace_id: bytes | None = None
    # CloudEvents without a `time` attribute get the receive time; retries then
    # differ in time, so the writer dedupes such rows by key within a window.
    time_from_event: bool = True


@dataclass(slots=True)
class LogRow:
    project_id: int
    time_ns: int
    service: str
    severity_number: int = 0
    severity_text: str | None = None
    body: str | None = None
    trace_id: bytes | None = None
    span_id: bytes | None = None
    attributes: dict = field(default_factory=dict)
    # A record with neither time nor observed time gets the receive time; a
    # retry then differs in time, so such records are identified without it
    # and the writer dedupes them by key within a window.
    time_from_record: bool = True

    def dedupe_key(self) -> bytes:
        """Log records have no id; time, service, context and body identify a retry."""
        parts = (
            str(self.time_ns).encode() if self.time_from_record else b"received",
            self.service.encode(),
            self.trace_id or b"",
            self.span_id or b"",
            (self.body or "").encode(),
        )
        return hashlib.blake2b(b"\x00".join(parts), digest_size=16).digest()


@dataclass(slots=True)
class Batch:
    """One request's worth of normalised rows, for one project."""

    project_id: int
    signal: str  # traces | events | metrics | logs
    spans: list[SpanRow] = field(default_factory=list)
    stages: list[StageRow] = field(default_factory=list)
    envelopes: list[EnvelopeRow] = field(default_factory=list)
    logs: list[LogRow] = field(default_factory=list)

    @property
    def size(self) -> int:
        """Queue weight: the number of items this batch holds."""
        return len(self.spans) + len(self.stages) + len(self.envelopes) + len(self.logs)
