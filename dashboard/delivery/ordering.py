"""Out of order: per ordering key and consumer group, an event processed
before one published ahead of it with the same key.

Each keyed event a group handled is kept in `delivery_sequenced` (publish
time, first processing time); the out-of-order findings of the keys the pass
touched are then computed again from those rows, within ORDER_SPAN of the
touched events, so an event arriving late makes the right ones out of order.
The finding is the event that went ahead; its examples name the earlier
published events it overtook.
"""

import datetime as dt
import json
from collections import defaultdict

from dashboard.delivery import judge

ORDERED_SYSTEMS = ("kafka", "aws_sqs")
ORDER_SPAN = dt.timedelta(hours=1)  # pairs published this close are compared


def _json(value) -> dict:
    # A Django cursor hands jsonb over as text.
    if isinstance(value, str):
        value = json.loads(value)
    return value if isinstance(value, dict) else {}


def _attributes(pass_, project_id: int, stages: list, names: list[str]) -> dict:
    """{(trace id, span id): {attribute: value}} of these span stages."""
    keys = sorted({(s.trace_id, s.span_id, s.time) for s in stages if s.origin == 1})
    out = {}
    for i in range(0, len(keys), 2000):
        chunk = keys[i : i + 2000]
        pass_.cur.execute(
            "SELECT sp.trace_id, sp.span_id, (SELECT jsonb_object_agg(e.key, e.value) "
            "FROM jsonb_each(sp.attributes) e WHERE e.key = ANY(%s)) "
            "FROM unnest(%s::bytea[], %s::bytea[], %s::timestamptz[]) AS k(t, s, tm) "
            "JOIN collector_span sp ON sp.project_id = %s AND sp.trace_id = k.t "
            "AND sp.span_id = k.s AND sp.start_time = k.tm",
            [names, [k[0] for k in chunk], [k[1] for k in chunk], [k[2] for k in chunk],
             project_id],
        )  # fmt: skip
        for trace_id, span_id, attrs in pass_.cur.fetchall():
            out[(bytes(trace_id), bytes(span_id))] = _json(attrs)
    return out


def _extensions(pass_, project_id: int, stages: list) -> dict:
    ids = sorted({s.event_id for s in stages if s.origin == judge.ORIGIN_CLOUDEVENT})
    if not ids:
        return {}
    pass_.cur.execute(
        "SELECT source, event_id, extensions FROM collector_envelope "
        "WHERE project_id = %s AND event_id = ANY(%s)",
        [project_id, ids],
    )
    return {(src, i): _json(ext) for src, i, ext in pass_.cur.fetchall()}


def sequence(pass_, project_id: int, events: dict) -> None:
    candidates = []  # (event, publish, view, attribute)
    for event in events.values():
        publish = event.publish
        if publish is None:
            continue
        for view in event.groups().values():
            if view.first_handled is None:
                continue
            setting = pass_._setting(project_id, view.system, view.channel)
            attribute = setting.ordering_attribute if setting else ""
            if (
                attribute
                or view.system in ORDERED_SYSTEMS
                or publish.origin == judge.ORIGIN_CLOUDEVENT
            ):
                candidates.append((event, publish, view, attribute))
    if not candidates:
        return
    names = sorted({a for *_, a in candidates if a} | set(judge.ORDERING_ATTRIBUTES))
    stages = [c[1] for c in candidates] + [c[2].first_handled for c in candidates]
    attrs = _attributes(pass_, project_id, stages, names)
    exts = _extensions(pass_, project_id, stages)
    rows = {}
    for event, publish, view, attribute in candidates:
        first = view.first_handled
        key = ""
        for s in (publish, first):
            key = judge.ordering_key(
                attrs.get((s.trace_id, s.span_id), {}),
                exts.get((s.event_source, s.event_id), {}),
                attribute,
            )
            if key:
                break
        if not key:
            continue
        ident = (view.system, view.channel, view.group, key, event.key)
        rows[ident] = (
            publish.time, first.time, publish.event_id or first.event_id,
            first.trace_id.hex() if first.trace_id else None,
            first.span_id.hex() if first.span_id else None, view.service,
        )  # fmt: skip
    if not rows:
        return
    cur = pass_.cur
    idents = sorted(rows)
    cur.execute(
        "INSERT INTO delivery_sequenced (project_id, system, channel, consumer_group, "
        "ordering_key, event_key, published_at, processed_at, event_id, trace_id, span_id, "
        "service) SELECT %s, * FROM unnest(%s::text[], %s::text[], %s::text[], %s::text[], "
        "%s::bytea[], %s::timestamptz[], %s::timestamptz[], %s::text[], %s::text[], "
        "%s::text[], %s::text[]) ON CONFLICT ON CONSTRAINT delivery_sequenced_unique DO UPDATE "
        "SET published_at = EXCLUDED.published_at, processed_at = EXCLUDED.processed_at, "
        "event_id = EXCLUDED.event_id, trace_id = EXCLUDED.trace_id, "
        "span_id = EXCLUDED.span_id, service = EXCLUDED.service",
        [project_id, *([i[n] for i in idents] for n in range(5)),
         *([rows[i][n] for i in idents] for n in range(6))],
    )  # fmt: skip
    spans = defaultdict(list)
    for ident in idents:
        spans[ident[:4]].append(rows[ident][0])
    seq_keys = sorted(spans)
    los = [min(spans[k]) - ORDER_SPAN for k in seq_keys]
    his = [max(spans[k]) + ORDER_SPAN for k in seq_keys]
    arrays = [[k[n] for k in seq_keys] for n in range(4)]
    cur.execute(
        "DELETE FROM delivery_finding f USING unnest(%s::text[], %s::text[], %s::text[], "
        "%s::text[], %s::timestamptz[], %s::timestamptz[]) AS k(sy, ch, gr, ok, lo, hi) "
        "WHERE f.project_id = %s AND f.kind = 'out_of_order' AND f.system = k.sy "
        "AND f.channel = k.ch AND f.consumer_group = k.gr AND f.ordering_key = k.ok "
        "AND f.event_time BETWEEN k.lo AND k.hi",
        [*arrays, los, his, project_id],
    )
    cur.execute(
        "INSERT INTO delivery_finding (project_id, kind, system, channel, consumer_group, "
        "service, event_key, event_time, detected_at, event_id, event_source, trace_id, "
        "successes, failures, retry_ms, deadlettered, delay_ms, ordering_key, examples) "
        "SELECT %s, 'out_of_order', b.system, b.channel, b.consumer_group, b.service, "
        "b.event_key, b.published_at, %s, b.event_id, NULL, b.trace_id, 0, 0, NULL, false, "
        "NULL, b.ordering_key, "
        "jsonb_build_array(jsonb_build_object('event_id', b.event_id, 'trace_id', b.trace_id, "
        "'span_id', b.span_id, 'published_at', b.published_at, 'processed_at', b.processed_at)) "
        "|| (SELECT jsonb_agg(jsonb_build_object('event_id', a.event_id, 'trace_id', a.trace_id, "
        "'span_id', a.span_id, 'published_at', a.published_at, 'processed_at', a.processed_at) "
        "ORDER BY a.published_at) FROM (SELECT * FROM delivery_sequenced a "
        "WHERE a.project_id = b.project_id AND a.system = b.system AND a.channel = b.channel "
        "AND a.consumer_group = b.consumer_group AND a.ordering_key = b.ordering_key "
        "AND a.published_at < b.published_at AND a.published_at >= k.lo - %s "
        "AND a.processed_at > b.processed_at ORDER BY a.published_at LIMIT 4) a) "
        "FROM unnest(%s::text[], %s::text[], %s::text[], %s::text[], %s::timestamptz[], "
        "%s::timestamptz[]) AS k(sy, ch, gr, ok, lo, hi) "
        "JOIN delivery_sequenced b ON b.project_id = %s AND b.system = k.sy "
        "AND b.channel = k.ch AND b.consumer_group = k.gr AND b.ordering_key = k.ok "
        "AND b.published_at BETWEEN k.lo AND k.hi "
        "WHERE EXISTS (SELECT FROM delivery_sequenced a WHERE a.project_id = b.project_id "
        "AND a.system = b.system AND a.channel = b.channel "
        "AND a.consumer_group = b.consumer_group AND a.ordering_key = b.ordering_key "
        "AND a.published_at < b.published_at AND a.published_at >= k.lo - %s "
        "AND a.processed_at > b.processed_at) "
        "ON CONFLICT ON CONSTRAINT delivery_finding_unique DO NOTHING",
        [project_id, pass_.now, ORDER_SPAN, *arrays, los, his, project_id, ORDER_SPAN],
    )
