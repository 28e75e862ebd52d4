"""End-to-end joins: a consume stage's latency from its publish, in the same group,
already stored, or arriving late (then the stored consumers are updated)."""

import datetime as dt

from collector import rollups
from collector.batch import CONSUMER, ORIGIN_CLOUDEVENT, PRODUCER
from collector.writer.items import bytea_array, count_e2e, int4_array, text_array
from collector.writer.rows import _bounds, _ns

# How far apart a publish and its consume stage may be looked for.
E2E_WINDOW = dt.timedelta(days=1)
_E2E_WINDOW_NS = int(E2E_WINDOW.total_seconds()) * 10**9
# The consume stages of some traces that wait for their publish: those that
# continue a producer's context and have no latency yet. The predicate is the
# one of the index collector_stage_unsettled (migration 0009), which holds
# those stages alone, so a trace whose consumers are all joined costs one
# index probe and no heap. The projects and the traces are two arrays: one
# scan of each day's index with every trace id as a key cost a third less
# than a probe per (project, trace) pair joined from unnest; a trace id met
# in another of the group's projects only adds a candidate the caller drops.
WAITING_CONSUMERS = (
    "SELECT c.project_id, c.dedupe_key, c.time, c.linked_trace_ids, "
    "c.linked_span_ids, c.event_source, c.event_id, c.origin "
    "FROM collector_stage c WHERE c.project_id = ANY(%b::int[]) "
    "AND c.trace_id = ANY(%b::bytea[]) "
    "AND c.role = 'consumer' AND c.e2e_ms IS NULL AND c.linked_trace_ids IS NOT NULL "
    "AND c.time BETWEEN %s AND %s"
)


class _EndToEnd:
    """The end-to-end joins of a _Transaction (its `cur`, `rows`, `rollups`, `lane`)."""

    def _count_e2e(self, stages: list, e2e: dict[int, float]) -> None:
        count_e2e(self.rollups, stages, e2e)

    async def _e2e_for_consumers(self) -> tuple[dict[int, float], list, list, list]:
        """e2e_ms per consume stage (by id) whose publish is in this group or
        committed, the consume stages whose publish is not known yet, the items
        of every consume stage that can have a latency, and the producer stages."""
        by_context: dict[tuple, int] = {}
        by_event: dict[tuple, int] = {}
        consumers, producers = [], []
        for item in self.rows.stages:
            s = item.row
            role = s.role
            if role == PRODUCER:
                producers.append(s)
                if s.stage == "published":
                    _index_publish(by_context, by_event, s)
            elif role == CONSUMER and (s.linked or (s.origin == ORIGIN_CLOUDEVENT and s.event_id)):
                consumers.append(item)
        self.published = (by_context, by_event)
        if not consumers:
            return {}, [], consumers, producers

        # Consumers whose publish is in this group, or was committed by this
        # writer lately, are settled without a query.
        out, missing = {}, []
        recent = self.lane.writer.recent
        for item in consumers:
            s = item.row
            published = _publish_time(s, by_context, by_event)
            if published is None:
                published = recent.publish_time(s)
            if published is not None:
                out[id(s)] = max(0.0, (s.time_ns - published) / 1e6)
            else:
                missing.append(s)
        if missing:
            out.update(await self._stored_publishes(missing))
        return out, [s for s in missing if id(s) not in out], consumers, producers

    async def _stored_publishes(self, consumers: list) -> dict[int, float]:
        """e2e_ms per consume stage (by id) whose publish is committed."""
        by_context: dict[tuple, int] = {}
        by_event: dict[tuple, int] = {}
        contexts, events = set(), set()
        for s in consumers:
            for trace_id, span_id in s.linked:
                contexts.add((s.project_id, trace_id, span_id))
            if s.origin == ORIGIN_CLOUDEVENT and s.event_id:
                events.add((s.project_id, s.event_source, s.event_id))
        lo, hi = _bounds([s.time_ns for s in consumers], _E2E_WINDOW_NS)
        if contexts:
            # The publishes of the consumers' traces, in one scan of each day's
            # index of stages by trace with every trace id as a key (as
            # WAITING_CONSUMERS): a third cheaper than a probe per context
            # from unnest. Publishes of other spans of those traces are
            # dropped here.
            await self.cur.execute(
                "SELECT s.project_id, s.trace_id, s.span_id, s.time FROM collector_stage s "
                "WHERE s.project_id = ANY(%b::int[]) AND s.trace_id = ANY(%b::bytea[]) "
                "AND s.trace_id IS NOT NULL AND s.stage = 'published' AND s.role = 'producer' "
                "AND s.time BETWEEN %s AND %s",
                (
                    int4_array(sorted({k[0] for k in contexts})),
                    bytea_array(sorted({k[1] for k in contexts})),
                    lo,
                    hi,
                ),
            )
            for project_id, trace_id, span_id, when in await self.cur.fetchall():
                key = (project_id, bytes(trace_id), span_id and bytes(span_id))
                if key in contexts:
                    _keep_earliest(by_context, key, _ns(when))
        if events:
            keys = sorted(events, key=lambda k: (k[0], k[1] or "", k[2]))
            await self.cur.execute(
                "SELECT k.p, k.src, k.i, x.time "
                "FROM unnest(%b::int[], %b::text[], %b::text[]) AS k(p, src, i) "
                "CROSS JOIN LATERAL (SELECT min(s.time) AS time FROM collector_stage s "
                "WHERE s.project_id = k.p AND s.event_id = k.i AND s.event_source = k.src "
                "AND s.stage = 'published' AND s.role = 'producer' "
                "AND s.time BETWEEN %s AND %s) AS x WHERE x.time IS NOT NULL",
                (
                    int4_array([k[0] for k in keys]),
                    text_array([k[1] for k in keys]),
                    text_array([k[2] for k in keys]),
                    lo,
                    hi,
                ),
            )
            for project_id, source, event_id, when in await self.cur.fetchall():
                _keep_earliest(by_event, (project_id, source, event_id), _ns(when))
        out = {}
        for s in consumers:
            published = _publish_time(s, by_context, by_event)
            if published is not None:
                out[id(s)] = max(0.0, (s.time_ns - published) / 1e6)
        return out

    async def _late_producers(self, publishes, index: tuple[dict, dict] | None = None) -> None:
        """Give stored consume stages their e2e latency when their publish arrives late.

        Candidates are the consume stages of the publishes' traces (a consumer
        that continues the message's context, as the OpenTelemetry messaging
        instrumentations do) and, for CloudEvents, of the same source and id.
        A batch receive that only links to a producer in another trace gets
        its latency only when the producer was stored first: probing the GIN
        index of links with thousands of keys costs seconds per transaction.
        Consumers are looked for within E2E_WINDOW of the publishes, as
        publishes are from the consumer side: the probe then reads two or three
        day partitions instead of every one kept (nine with a week's
        retention). `e2e_ms IS NULL` in the UPDATE makes each consume stage
        count once. `index` is the publishes indexed as _index_publish does,
        when the caller has it (the group's, when all its stages are new).
        """
        publishes = [p for p in publishes if p.stage == "published"]
        if index is not None:
            contexts, events = index
        else:
            contexts, events = {}, {}
            for p in publishes:
                _index_publish(contexts, events, p)
        if not contexts and not events:
            return
        lo, hi = _bounds([p.time_ns for p in publishes], _E2E_WINDOW_NS)
        candidates = []
        if contexts:
            projects = sorted({key[0] for key in contexts})
            traces = sorted({key[1] for key in contexts})
            await self.cur.execute(
                WAITING_CONSUMERS, (int4_array(projects), bytea_array(traces), lo, hi)
            )
            candidates += await self.cur.fetchall()
        if events:
            await self.cur.execute(
                "SELECT project_id, dedupe_key, time, linked_trace_ids, linked_span_ids, "
                "event_source, event_id, origin FROM collector_stage "
                "WHERE project_id = ANY(%b::int[]) AND event_id = ANY(%b::text[]) "
                "AND role = 'consumer' AND e2e_ms IS NULL AND time BETWEEN %s AND %s",
                (
                    int4_array(sorted({key[0] for key in events})),
                    text_array(sorted({key[2] for key in events})),
                    lo,
                    hi,
                ),
            )
            candidates += await self.cur.fetchall()
        updates = {}
        for project_id, key, when, traces, spans, source, event_id, origin in candidates:
            times = [
                contexts.get((project_id, bytes(t), bytes(s)))
                for t, s in zip(traces or (), spans or (), strict=False)
            ]
            if origin == ORIGIN_CLOUDEVENT:
                times.append(events.get((project_id, source, event_id)))
            times = [t for t in times if t is not None]
            if times:
                consumed_ns = _ns(when)
                updates[(project_id, bytes(key), when)] = max(0.0, (consumed_ns - min(times)) / 1e6)
        if not updates:
            return
        for (
            project_id,
            when,
            stage,
            service,
            system,
            channel,
            group,
            e2e_ms,
        ) in await self._set_e2e(updates):
            if stage not in rollups.OUTCOMES:
                continue
            edge = rollups.stage_edge(project_id, CONSUMER, service, system, channel, group)
            if edge is not None:
                self.rollups.add_e2e(edge, _ns(when), e2e_ms)

    async def _set_e2e(self, updates: dict[tuple, float]) -> list[tuple]:
        """Set e2e_ms on the stages keyed (project, dedupe key, time) that have
        none yet; returns the rows it set."""
        keys = sorted(updates, key=lambda k: (k[0], k[1], k[2]))
        await self.cur.execute(
            "UPDATE collector_stage c SET e2e_ms = k.e2e "
            "FROM unnest(%b::int[], %b::bytea[], %b::timestamptz[], %b::float8[]) "
            "AS k(p, d, t, e2e) "
            "WHERE c.project_id = k.p AND c.dedupe_key = k.d AND c.time = k.t "
            "AND c.e2e_ms IS NULL "
            "RETURNING c.project_id, c.time, c.stage, c.service, c.system, c.channel, "
            "c.consumer_group, c.e2e_ms",
            (
                int4_array([k[0] for k in keys]),
                bytea_array([k[1] for k in keys]),
                [k[2] for k in keys],
                [updates[k] for k in keys],
            ),
        )
        return await self.cur.fetchall()


def _keep_earliest(index: dict, key: tuple, time_ns: int) -> None:
    known = index.get(key)
    if known is None or time_ns < known:
        index[key] = time_ns


def _index_publish(by_context: dict, by_event: dict, stage) -> None:
    """Index a publish stage by its context and, for CloudEvents, by source
    and id, keeping the earliest time of each."""
    trace_id, span_id = stage.trace_id, stage.span_id
    if trace_id and span_id:
        # _keep_earliest inline: this runs for every publish.
        key = (stage.project_id, trace_id, span_id)
        known = by_context.get(key)
        if known is None or stage.time_ns < known:
            by_context[key] = stage.time_ns
    if stage.origin == ORIGIN_CLOUDEVENT and stage.event_id:
        key = (stage.project_id, stage.event_source, stage.event_id)
        _keep_earliest(by_event, key, stage.time_ns)


def _publish_time(stage, by_context, by_event) -> int | None:
    """The earliest known publish time of the message(s) a consume stage handles."""
    best = None
    project_id = stage.project_id
    for trace_id, span_id in stage.linked:
        known = by_context.get((project_id, trace_id, span_id))
        if known is not None and (best is None or known < best):
            best = known
    if stage.origin == ORIGIN_CLOUDEVENT and stage.event_id:
        known = by_event.get((project_id, stage.event_source, stage.event_id))
        if known is not None and (best is None or known < best):
            best = known
    return best
