"""Reads: the project's dead-letter queues on its brokers, one queue's messages,
and redrives as the API and the pages show them."""

import logging
from dataclasses import dataclass

from dashboard.deadletters.models import Redrive
from dashboard.deadletters.systems import DeadLetterQueue, brokers_of, registry  # noqa: F401 - used by matching

log = logging.getLogger(__name__)
ITEMS_SHOWN = 1000
SYSTEMS = tuple(registry.MODULES)


@dataclass
class Unreachable:
    broker: str
    system: str
    error: str

    def json(self) -> dict:
        return {"broker": self.broker, "system": self.system, "error": self.error}


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:300]


def dead_letter_queues(project) -> tuple[list[DeadLetterQueue], list[Unreachable]]:
    """Every dead-letter queue on the project's brokers, and the brokers that did not answer."""
    found, unreachable = [], []
    for broker in brokers_of(project.slug):
        system = registry.BY_KIND[broker.kind]
        try:
            found.extend(registry.MODULES[system].discover(broker))
        except Exception as exc:
            log.warning("dead letters: %s did not answer: %s", broker.source, _describe(exc))
            unreachable.append(Unreachable(broker.source, system, _describe(exc)))
    found.sort(key=lambda q: (q.system, q.namespace, q.name))
    return found, unreachable


class NoSuchQueue(LookupError):
    pass


def find_queue(project, system: str, name: str, namespace: str | None = None):
    """(broker, DeadLetterQueue) of the project's dead-letter queue so named; NoSuchQueue if none."""
    if system not in registry.MODULES:
        raise NoSuchQueue(f"unknown system {system!r}; one of {', '.join(SYSTEMS)}")
    for broker in brokers_of(project.slug, system):
        for queue in registry.MODULES[system].discover(broker):
            if queue.name == name and (namespace is None or queue.namespace == namespace):
                return broker, queue
    where = f" (vhost {namespace!r})" if namespace else ""
    raise NoSuchQueue(f"no dead-letter queue {name!r}{where} of {system} in this project")


def peek(project, system: str, name: str, namespace: str | None, limit: int):
    broker, queue = find_queue(project, system, name, namespace)
    module = registry.MODULES[system]
    return queue, module.peek(broker, name, queue.namespace, limit)


def iso(moment):
    return moment.isoformat().replace("+00:00", "Z") if moment else None


def redrive_json(redrive: Redrive, items: bool = True) -> dict:
    data = {
        "id": redrive.pk,
        "system": redrive.system,
        "dead_letter": redrive.dead_letter,
        "broker": redrive.broker,
        "destination": redrive.destination or None,
        "messages": "all" if redrive.selection is None else redrive.selection,
        "rate_per_s": redrive.rate_per_s,
        "dry_run": redrive.dry_run,
        "state": redrive.state,
        "cancel_requested": redrive.cancel_requested,
        "total": redrive.total,
        "moved": redrive.moved,
        "failed": redrive.failed,
        "error": redrive.error or None,
        "guarantee": redrive.guarantee or None,
        "requested_by": redrive.requested_by,
        "created_at": iso(redrive.created_at),
        "started_at": iso(redrive.started_at),
        "finished_at": iso(redrive.finished_at),
    }
    if redrive.system == "rabbitmq":
        data["vhost"] = redrive.namespace
    if items:
        rows = list(redrive.items.all()[:ITEMS_SHOWN])
        data["items"] = [
            {
                "message_id": i.message_id,
                "destination": i.destination or None,
                "state": i.state,
                "error": i.error or None,
                "event_id": i.event_id or None,
                "traceparent": i.traceparent or None,
                "redrive_count": i.redrive_count,
                "moved_at": iso(i.moved_at),
            }
            for i in rows
        ]
        data["items_shown"] = len(rows)
    return data
