"""Per-minute flow-edge rollups, accumulated while a write is prepared.

The writer feeds only newly inserted rows in here (a retried delivery adds
nothing), then upserts the sums additively, so several collectors can write
the same minute of the same edge concurrently. Edge semantics:

- publish  service:<svc> -> channel:<system>:<channel>: producer stages;
  `count` counts publishes, `errors` the failed ones.
- consume  channel:<system>:<channel> -> service:<svc>, per consumer group:
  `count` = processed + failed + dead-lettered outcomes, `received` =
  receipts, `errors` = failed + dead-lettered, `retries` = retried stages.
  `duration_hist` holds outcome durations, `e2e_hist` produce->consume
  latency of outcomes.
- call     service:<client> -> service:<server> from CLIENT->SERVER span pairs.
"""

import datetime as dt
import hashlib
from bisect import bisect_left as _bucket  # histogram.bucket, without a call around it

from collector import fingerprint, histogram
from collector.batch import CONSUMER, PRODUCER

PUBLISH, CONSUME, CALL = "publish", "consume", "call"
OUTCOMES = frozenset(("processed", "failed", "deadlettered"))
ERRORS = frozenset(("failed", "deadlettered"))

_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_MINUTE_NS = 60_000_000_000

# The bounds as floats: bisecting a float latency among floats compares
# without converting every int bound (same buckets, a third of the cost).
_BOUNDS = tuple(float(bound) for bound in histogram.BOUNDS_MS)

# count, received, errors, deadlettered, retries, duration_sum, e2e_count, e2e_sum
_COUNT, _RECEIVED, _ERRORS, _DEAD, _RETRIES, _DSUM, _ECOUNT, _ESUM = range(8)


def minute_of(time_ns: int) -> dt.datetime:
    """The UTC minute a time (ns since the epoch) falls in."""
    return _EPOCH + dt.timedelta(microseconds=(time_ns // _MINUTE_NS) * 60_000_000)


def service_node(name: str) -> str:
    return f"service:{name}"


def channel_node(system: str, channel: str) -> str:
    return f"channel:{system}:{channel}"


def stage_edge(project_id, role, service, system, channel, group):
    """(project, source, target, kind, group) of the edge a stage belongs to, or None.

    A stage without a channel cannot be placed on the graph; it is still
    stored and shown in journeys and failures.
    """
    if not channel:
        return None
    if role == PRODUCER:
        return project_id, service_node(service), channel_node(system, channel), PUBLISH, ""
    if role == CONSUMER:
        return project_id, channel_node(system, channel), service_node(service), CONSUME, group
    return None


class Rollups:
    """Sums per (project, minute, source, target, kind, consumer group)."""

    def __init__(self):
        self._rows: dict[tuple, list] = {}
        # stage names -> edge: a group's stages share a few edges, and building
        # the node names again for each costs more than looking them up.
        self._edges: dict[tuple, tuple | None] = {}

    def __len__(self):
        return len(self._rows)

    def edge_of(self, stage, role=None):
        """stage_edge() of a stage (with `role` instead of the stage's own, if given)."""
        key = (
            stage.project_id, role or stage.role, stage.service, stage.system, stage.channel,
            stage.consumer_group,
        )  # fmt: skip
        try:
            return self._edges[key]
        except KeyError:
            edge = self._edges[key] = stage_edge(*key)
            return edge

    def _row(self, edge, time_ns):
        # Keyed by the minute's number: a datetime per stage costs more than the sums.
        key = (edge, time_ns // _MINUTE_NS)
        row = self._rows.get(key)
        if row is None:
            row = self._rows[key] = [[0] * 8, histogram.empty(), histogram.empty()]
        return row

    def projects(self) -> set[int]:
        return {edge[0] for edge, _minute in self._rows}

    def add_stage(self, stage) -> None:
        """Count one newly stored stage on its edge."""
        # edge_of() and _row() inline: this runs for every stored stage.
        key = (
            stage.project_id, stage.role, stage.service, stage.system, stage.channel,
            stage.consumer_group,
        )  # fmt: skip
        try:
            edge = self._edges[key]
        except KeyError:
            edge = self._edges[key] = stage_edge(*key)
        if edge is None:
            return
        key = (edge, stage.time_ns // _MINUTE_NS)
        row = self._rows.get(key)
        if row is None:
            row = self._rows[key] = [[0] * 8, histogram.empty(), histogram.empty()]
        sums, durations, _ = row
        name = stage.stage
        if stage.role == PRODUCER:
            if name not in ("published", "failed"):
                return
            sums[_COUNT] += 1
            if name == "failed":
                sums[_ERRORS] += 1
        elif name == "received":
            sums[_RECEIVED] += 1
            return
        elif name == "retried":
            sums[_RETRIES] += 1
            return
        elif name in OUTCOMES:
            sums[_COUNT] += 1
            if name in ERRORS:
                sums[_ERRORS] += 1
            if name == "deadlettered":
                sums[_DEAD] += 1
        else:
            return
        duration_ms = stage.duration_ms
        if duration_ms is not None:
            durations[_bucket(_BOUNDS, duration_ms)] += 1
            sums[_DSUM] += duration_ms

    def add_e2e(self, edge, time_ns: int, e2e_ms: float) -> None:
        """Add one produce->consume latency to a consume edge."""
        sums, _, e2e = self._row(edge, time_ns)
        e2e[_bucket(_BOUNDS, e2e_ms)] += 1
        sums[_ECOUNT] += 1
        sums[_ESUM] += e2e_ms

    def add_call(
        self, project_id, client, server, time_ns, duration_ms: float, error: bool
    ) -> None:
        """Count one CLIENT->SERVER call between two different services."""
        edge = (project_id, service_node(client), service_node(server), CALL, "")
        sums, durations, _ = self._row(edge, time_ns)
        sums[_COUNT] += 1
        if error:
            sums[_ERRORS] += 1
        durations[histogram.bucket(duration_ms)] += 1
        sums[_DSUM] += duration_ms

    def params(self) -> list[tuple]:
        """Upsert parameters, in key order so concurrent writers lock rows in the same order."""
        out = []
        for key in sorted(self._rows, key=_lock_order):
            (project_id, source, target, kind, group), minute = key
            sums, durations, e2e = self._rows[key]
            out.append(
                (
                    project_id,
                    minute_of(minute * _MINUTE_NS),
                    source,
                    target,
                    kind,
                    group,
                    sums[_COUNT],
                    sums[_RECEIVED],
                    sums[_ERRORS],
                    sums[_DEAD],
                    sums[_RETRIES],
                    durations,
                    sums[_DSUM],
                    e2e,
                    sums[_ECOUNT],
                    sums[_ESUM],
                )
            )
        return out


def _lock_order(key):
    (project_id, source, target, kind, group), minute = key
    return project_id, minute, source, target, kind, group


def _minutes(minute_index: str) -> str:
    """SQL for the timestamptz of a minute given by its number since the epoch."""
    return f"timestamptz 'epoch' + {minute_index} * interval '1 minute'"


def _added(column: str) -> str:
    """SQL adding a stored histogram and the upserted one element by element.

    In the statement itself: the SQL function es_array_add (migration 0002)
    is not inlined, and set up anew for every row upserted it cost twice the
    rest of the upsert.
    """
    return (
        f"{column} = ARRAY(SELECT coalesce(a, 0) + coalesce(b, 0) FROM unnest("
        f"r.{column}, EXCLUDED.{column}) WITH ORDINALITY AS h(a, b, n) ORDER BY n)"
    )


_HISTOGRAM = len(histogram.empty())  # buckets of every histogram column
# A group's rows in one statement, each column an array parameter and the
# histograms one flat array each, cut per row: a statement per row (even
# pipelined) cost more in psycopg's Python than the rows' arithmetic.
UPSERT = f"""
INSERT INTO collector_flowrollup AS r (
    project_id, minute, source, target, kind, consumer_group,
    count, received, errors, deadlettered, retries,
    duration_hist, duration_sum_ms, e2e_hist, e2e_count, e2e_sum_ms
)
SELECT k.p, {_minutes("k.m")}, k.s, k.t, k.k, k.g, k.c, k.rc, k.e, k.d, k.rt,
    h.d[(k.n - 1) * {_HISTOGRAM} + 1 : k.n * {_HISTOGRAM}], k.ds,
    h.e[(k.n - 1) * {_HISTOGRAM} + 1 : k.n * {_HISTOGRAM}], k.ec, k.es
FROM unnest(
    %b::int[], %b::bigint[], %b::text[], %b::text[], %b::text[], %b::text[], %b::bigint[],
    %b::bigint[], %b::bigint[], %b::bigint[], %b::bigint[], %b::float8[], %b::bigint[],
    %b::float8[]
) WITH ORDINALITY AS k(p, m, s, t, k, g, c, rc, e, d, rt, ds, ec, es, n)
CROSS JOIN (SELECT %b::bigint[] AS d, %b::bigint[] AS e) AS h
ORDER BY k.n
ON CONFLICT (project_id, minute, source, target, kind, consumer_group) DO UPDATE SET
    count = r.count + EXCLUDED.count,
    received = r.received + EXCLUDED.received,
    errors = r.errors + EXCLUDED.errors,
    deadlettered = r.deadlettered + EXCLUDED.deadlettered,
    retries = r.retries + EXCLUDED.retries,
    {_added("duration_hist")},
    duration_sum_ms = r.duration_sum_ms + EXCLUDED.duration_sum_ms,
    {_added("e2e_hist")},
    e2e_count = r.e2e_count + EXCLUDED.e2e_count,
    e2e_sum_ms = r.e2e_sum_ms + EXCLUDED.e2e_sum_ms
"""


def upsert_columns(rollups: Rollups) -> list[tuple[str, list]]:
    """UPSERT's parameters: each column as (its element type, its values), the
    rows in lock order; none when nothing was added. The writer encodes them."""
    if not rollups._rows:
        return []
    keys = sorted(rollups._rows, key=_lock_order)  # rows locked in one order
    rows = [rollups._rows[key] for key in keys]
    durations, e2e = [], []
    for _sums, duration_hist, e2e_hist in rows:
        durations += duration_hist
        e2e += e2e_hist

    def sums(i: int) -> list:
        return [row[0][i] for row in rows]

    return [
        ("int4", [edge[0] for edge, _minute in keys]),
        ("int8", [minute for _edge, minute in keys]),
        ("text", [edge[1] for edge, _minute in keys]),
        ("text", [edge[2] for edge, _minute in keys]),
        ("text", [edge[3] for edge, _minute in keys]),
        ("text", [edge[4] for edge, _minute in keys]),
        ("int8", sums(_COUNT)),
        ("int8", sums(_RECEIVED)),
        ("int8", sums(_ERRORS)),
        ("int8", sums(_DEAD)),
        ("int8", sums(_RETRIES)),
        ("float8", [float(v) for v in sums(_DSUM)]),
        ("int8", sums(_ECOUNT)),
        ("float8", [float(v) for v in sums(_ESUM)]),
        ("int8", durations),
        ("int8", e2e),
    ]


# ---- failure rollups ---------------------------------------------------------------


def failure_group_key(service, channel, system, group, fingerprint_) -> bytes:
    """The md5 over the length-prefixed names and the error's fingerprint."""
    text = "".join(
        f"{len(part)}:{part}" for part in (service, channel, system, group, fingerprint_)
    )
    return hashlib.md5(text.encode(), usedforsecurity=False).digest()


# count, deadlettered, first ns, last ns, template, error type, fingerprint,
# example message, example event id, example event source, example trace id
_F_COUNT, _F_DEAD, _F_FIRST, _F_LAST = range(4)
_F_EXAMPLE_EVENT = 8  # example message at 7, then event id, source, trace id


class FailureRollups:
    """Failed and dead-lettered stages per (project, minute, service, channel,
    system, consumer group, error fingerprint): count, dead letters, first and
    last time, and one example (message, event) per group and minute.

    The fingerprint is the error type and the message's template
    (collector/fingerprint.py): messages that differ only in ids are one group.
    """

    def __init__(self):
        self._rows: dict[tuple, list] = {}
        # (message, error type) -> (template, fingerprint): a burst of one
        # failure repeats the same few messages.
        self._shapes: dict[tuple, tuple[str, str]] = {}

    def add_stage(self, stage) -> None:
        """Count one newly stored stage, if it is a failure."""
        if stage.stage not in ERRORS:
            return
        error, error_type = stage.error or "", stage.error_type or ""
        shape = self._shapes.get((error, error_type))
        if shape is None:
            shape = self._shapes[(error, error_type)] = fingerprint.of(error, error_type)
        self.add(
            stage.project_id,
            (stage.service, stage.channel, stage.system, stage.consumer_group),
            shape,
            error_type,
            (error[: fingerprint.MAX_MESSAGE], stage.event_id, stage.event_source, stage.trace_id),
            stage.time_ns,
            dead=int(stage.stage == "deadlettered"),
        )

    def add(
        self, project_id, names, shape, error_type, example, first_ns, last_ns=None, count=1, dead=0
    ) -> None:
        """Count `count` failures of one group between two times of one minute.

        `shape` is (template, fingerprint); `example` is (message, event id,
        event source, trace id) of one of them.
        """
        last_ns = first_ns if last_ns is None else last_ns
        template, fp = shape
        key = (project_id, first_ns // _MINUTE_NS, names, fp)
        row = self._rows.get(key)
        if row is None:
            row = self._rows[key] = [0, 0, first_ns, last_ns, template, error_type, fp, *example]
        elif row[_F_EXAMPLE_EVENT] is None and example[1] is not None:
            # An example that links to an event page beats one that cannot.
            row[_F_EXAMPLE_EVENT - 1 :] = example
        row[_F_COUNT] += count
        row[_F_DEAD] += dead
        row[_F_FIRST] = min(row[_F_FIRST], first_ns)
        row[_F_LAST] = max(row[_F_LAST], last_ns)

    def __len__(self):
        return len(self._rows)

    def minutes(self) -> set[tuple[int, int]]:
        """(project, minute number) of every row."""
        return {(key[0], key[1]) for key in self._rows}

    def params(self) -> list[tuple]:
        out = []
        for (project_id, minute, names, fp), row in self._rows.items():
            count, dead, first_ns, last_ns, template, error_type, _, *example = row
            out.append(
                (
                    project_id, minute_of(minute * _MINUTE_NS),
                    failure_group_key(*names, fp), *names, template, error_type, fp,
                    count, dead,
                    _EPOCH + dt.timedelta(microseconds=first_ns // 1000),
                    _EPOCH + dt.timedelta(microseconds=last_ns // 1000),
                    *example,
                )
            )  # fmt: skip
        # Concurrent writers lock the rows in one order.
        out.sort(key=lambda row: (row[0], row[1], row[2]))
        return out


_FAILURE_COLUMNS = """
    project_id, minute, group_key, service, channel, system, consumer_group, error,
    error_type, fingerprint, count, deadlettered, first_time, last_time,
    example_error, example_event_id, example_event_source, example_trace_id
"""
_FAILURE_SET = """ON CONFLICT (project_id, minute, group_key) DO UPDATE SET
    count = r.count + EXCLUDED.count,
    deadlettered = r.deadlettered + EXCLUDED.deadlettered,
    first_time = least(r.first_time, EXCLUDED.first_time),
    last_time = greatest(r.last_time, EXCLUDED.last_time),
    -- The minute keeps its first example, unless only the new one names an event.
    example_error = CASE WHEN r.example_event_id IS NULL AND EXCLUDED.example_event_id IS NOT NULL
                         THEN EXCLUDED.example_error ELSE r.example_error END,
    example_event_source = CASE WHEN r.example_event_id IS NULL
                                     AND EXCLUDED.example_event_id IS NOT NULL
                                THEN EXCLUDED.example_event_source
                                ELSE r.example_event_source END,
    example_trace_id = CASE WHEN r.example_event_id IS NULL AND EXCLUDED.example_event_id IS NOT NULL
                            THEN EXCLUDED.example_trace_id ELSE r.example_trace_id END,
    example_event_id = coalesce(r.example_event_id, EXCLUDED.example_event_id)
"""
# One row a statement (migration 0006 rebuilds the table with it).
FAILURE_UPSERT = (
    f"INSERT INTO collector_failurerollup AS r ({_FAILURE_COLUMNS}) "
    f"VALUES ({', '.join(['%s'] * 18)}) {_FAILURE_SET}"
)
# A group's rows in one statement, as UPSERT does; times in microseconds.
FAILURE_UPSERT_ROWS = f"""
INSERT INTO collector_failurerollup AS r ({_FAILURE_COLUMNS})
SELECT k.p, {_minutes("k.m")}, k.gk, k.sv, k.ch, k.sy, k.cg, k.er, k.et, k.fp, k.c, k.d,
    timestamptz 'epoch' + k.f * interval '1 microsecond',
    timestamptz 'epoch' + k.l * interval '1 microsecond', k.xe, k.xi, k.xs, k.xt
FROM unnest(
    %b::int[], %b::bigint[], %b::bytea[], %b::text[], %b::text[], %b::text[], %b::text[],
    %b::text[], %b::text[], %b::text[], %b::bigint[], %b::bigint[], %b::bigint[],
    %b::bigint[], %b::text[], %b::text[], %b::text[], %b::bytea[]
) WITH ORDINALITY AS k(p, m, gk, sv, ch, sy, cg, er, et, fp, c, d, f, l, xe, xi, xs, xt, n)
ORDER BY k.n
{_FAILURE_SET}"""


_FAILURE_KINDS = ("int4", "int8", "bytea", *["text"] * 7, *["int8"] * 4, *["text"] * 3, "bytea")


def failure_upsert_columns(failures: FailureRollups) -> list[tuple[str, list]]:
    """FAILURE_UPSERT_ROWS' parameters, as upsert_columns gives UPSERT's."""
    if not failures._rows:
        return []
    rows = []
    for (project_id, minute, names, fp), row in failures._rows.items():
        count, dead, first_ns, last_ns, template, error_type, _, *example = row
        key = failure_group_key(*names, fp)
        rows.append((project_id, minute, key, *names, template, error_type, fp, count, dead,
                     first_ns // 1000, last_ns // 1000, *example))  # fmt: skip
    rows.sort(key=lambda row: (row[0], row[1], row[2]))  # locked in one order
    columns = zip(*rows, strict=True)
    return [(kind, list(column)) for kind, column in zip(_FAILURE_KINDS, columns, strict=True)]
