"""OTLP log requests to log rows."""

import json
import time

from collector import redact
from collector.attribute_limits import Limits
from collector.batch import (
    Batch,
    LogRow,
)
from collector.decode import optional_id_problem
from collector.normalize.values import (
    MAX_INT64,
    Normalized,
    _pb_text,
    _service,
    attributes,
    bounded_value,
)

MAX_SEVERITY = 24  # SEVERITY_NUMBER_FATAL4


def _body_text(value, secrets: redact.Matcher, limits: Limits) -> str | None:
    if value.WhichOneof("value") == "string_value":
        # A log message is not an attribute: it is kept whole.
        return _pb_text(value.string_value)
    # A structured body (a map of fields) is bounded and redacted like attributes.
    body = bounded_value(value, limits)
    if body is None:
        return None
    if isinstance(body, str):
        return body
    return json.dumps(secrets.walk(body), ensure_ascii=False)


def normalize_logs(request, project_id: int) -> Normalized:
    """ExportLogsServiceRequest -> Batch(signal="logs") of LogRow.

    A record without a timestamp takes its observed time, else the receive
    time; a record whose trace context is malformed is rejected.
    """
    result = Normalized(Batch(project_id=project_id, signal="logs"))
    received_ns = time.time_ns()
    secrets = redact.matcher()
    limits = Limits()
    for resource_logs in request.resource_logs:
        resource_message = resource_logs.resource
        resource = attributes(
            resource_message.attributes, secrets, limits, resource_message.dropped_attributes_count
        )
        service = _service(resource)
        for scope_logs in resource_logs.scope_logs:
            for record in scope_logs.log_records:
                problem = optional_id_problem(record.trace_id, record.span_id)
                if problem is None and not 0 <= record.severity_number <= MAX_SEVERITY:
                    problem = f"severity number {record.severity_number} is out of range"
                if (
                    problem is None
                    and max(record.time_unix_nano, record.observed_time_unix_nano) > MAX_INT64
                ):
                    problem = "time is out of range"
                if problem:
                    result.reject(f"log record: {problem}")
                    continue
                body = _body_text(record.body, secrets, limits)
                result.batch.logs.append(
                    LogRow(
                        project_id=project_id,
                        time_ns=record.time_unix_nano
                        or record.observed_time_unix_nano
                        or received_ns,
                        service=service,
                        severity_number=record.severity_number,
                        severity_text=_pb_text(record.severity_text) or None,
                        body=body,
                        trace_id=record.trace_id or None,
                        span_id=record.span_id or None,
                        attributes=attributes(
                            record.attributes, secrets, limits, record.dropped_attributes_count
                        ),
                        time_from_record=bool(
                            record.time_unix_nano or record.observed_time_unix_nano
                        ),
                    )
                )
    limits.report("logs")
    return result
