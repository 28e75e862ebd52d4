"""Which dead letters belong to which failures: a failure group's (or one
event's) failures matched to the messages waiting in the project's
dead-letter queues, by event id (message id, CloudEvents id) or by the trace
their traceparent continues."""

from django.conf import settings
from django.db import connection

from dashboard.deadletters import queries
from dashboard.deadletters.systems import registry
from dashboard.failures import queries as failure_queries
from dashboard.links import window_query
from dashboard.query_params import BadParameter, parse_window, text_param

FAILURES_READ = 2000
DEFAULT_WINDOW = "24h"


def _trace_of(traceparent: str | None) -> str | None:
    return traceparent[3:35] if traceparent and len(traceparent) >= 55 else None


def failures_of(project, params) -> tuple[set[str], set[str], str]:
    """(event ids, trace ids, what they are) of the failures `params` name: one
    `event`, or a failure group's filters as the failures page links them."""
    event = text_param(params, "event")
    if event:
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT DISTINCT trace_id FROM collector_stage "
                "WHERE project_id = %s AND event_id = %s AND trace_id IS NOT NULL",
                [project.id, event],
            )
            traces = {bytes(r[0]).hex() for r in cursor.fetchall()}
        return {event}, traces, f"event {event}"
    since, until = parse_window(window_query(params, DEFAULT_WINDOW), default=DEFAULT_WINDOW)
    filters = failure_queries.Filters.from_params(params, since, until)
    if not any((filters.service, filters.channel, filters.fingerprint, filters.error)):
        raise BadParameter("name a failure group (service, channel, fingerprint) or an event")
    rows, _ = failure_queries.failures(project.id, filters, FAILURES_READ)
    events = {r["event_id"] for r in rows if r["event_id"]}
    traces = {r["trace_id"] for r in rows if r["trace_id"]}
    parts = [f"{k} {v}" for k, v in filters.query().items() if v and k != "fingerprint"]
    return events, traces, f"{len(rows)} failures of " + (", ".join(parts) or "the group")


def dead_letters_of_failures(project, params) -> tuple[dict, str]:
    """{(system, queue, namespace): [Message]} waiting for those failures, and what was matched."""
    events, traces, described = failures_of(project, params)
    found: dict[tuple[str, str, str], list] = {}
    if not events and not traces:
        return found, described
    dlqs, _ = queries.dead_letter_queues(project)
    brokers = {b.source: b for b in queries.brokers_of(project.slug)}
    for dlq in dlqs:
        if not dlq.depth:
            continue
        broker = brokers[dlq.broker]
        module = registry.MODULES[dlq.system]
        for message in module.peek(broker, dlq.name, dlq.namespace, settings.REDRIVE_MAX_MESSAGES):
            if message.event_id in events or _trace_of(message.traceparent) in traces:
                found.setdefault((dlq.system, dlq.name, dlq.namespace), []).append(message)
    return found, described
