"""The publishes a writer committed lately, so most consumers join their publish without a query."""

from collector.batch import ORIGIN_CLOUDEVENT, PRODUCER
from collector.writer.joins import _E2E_WINDOW_NS, _index_publish


class _RecentPublishes:
    """The publishes this writer committed lately, by (project, trace id, span
    id) and, for CloudEvents, (project, source, event id), with their time.

    A consumer whose every publish is here gets its end-to-end latency
    without a lookup: only committed publishes are added, so this answers
    what the lookup would. The oldest are forgotten past `limit`.
    """

    def __init__(self, limit: int):
        self.limit = limit
        self.contexts: dict[tuple, int] = {}
        self.events: dict[tuple, int] = {}

    def add(self, stages) -> None:
        contexts, events = {}, {}
        for s in stages:
            if s.role == PRODUCER and s.stage == "published":
                _index_publish(contexts, events, s)
        self.merge(contexts, events)

    def merge(self, contexts: dict, events: dict) -> None:
        """Add publishes already indexed as _index_publish does (a transaction's)."""
        for index, new in ((self.contexts, contexts), (self.events, events)):
            if len(new) and not len(index):
                index.update(new)
            else:
                for key, time_ns in new.items():
                    known = index.get(key)
                    if known is None or time_ns < known:
                        index[key] = time_ns
            for _ in range(len(index) - self.limit):
                del index[next(iter(index))]

    def publish_time(self, stage) -> int | None:
        """The earliest publish of the messages a consume stage handles, if all are here."""
        times = []
        for trace_id, span_id in stage.linked:
            known = self.contexts.get((stage.project_id, trace_id, span_id))
            if known is None:
                return None
            times.append(known)
        if stage.origin == ORIGIN_CLOUDEVENT and stage.event_id:
            known = self.events.get((stage.project_id, stage.event_source, stage.event_id))
            if known is None:
                return None
            times.append(known)
        if not times or abs(stage.time_ns - min(times)) > _E2E_WINDOW_NS:
            return None  # the lookup would not look that far either
        return min(times)
