"""One group's transaction: the write lock, COPY (or the deduplicating path), one
envelope per CloudEvent, the joins, the rollups and the NOTIFY hints."""

import collections
import datetime as dt

from collector import notify, rollups
from collector.batch import ORIGIN_CLOUDEVENT, PRODUCER
from collector.writer.calls import _Calls
from collector.writer.items import (
    Item,
    add_stages,
    array_params,
    bytea_array,
    copy_rows,
    count_stored,
    int4_array,
    text_array,
)
from collector.writer.joins import _EndToEnd
from collector.writer.lanes import _Lane
from collector.writer.prepare import _Rows
from collector.writer.rows import (
    _DAY_NS,
    ENVELOPES,
    LOGS,
    SPANS,
    STAGES,
    _bounds,
    _ns,
    _Table,
)

# CloudEvents without a `time` are stamped on receipt; a retry then carries a
# different time, so such rows are deduplicated by key within this window.
RECEIVE_TIME_WINDOW_NS = _DAY_NS
# pg_advisory_xact_lock(WRITE_LOCK_CLASS, project id) orders writers of a project.
WRITE_LOCK_CLASS = 0x45530003


class _Transaction(_EndToEnd, _Calls):
    """Everything written for one group, inside one transaction."""

    def __init__(self, lane: _Lane, cur, rows: _Rows, *, copy_straight: bool = True):
        self.lane = lane
        # COPY straight into the tables, with no savepoint: a row stored
        # before (a retried export) aborts the transaction, which the writer
        # then runs again deduplicating every table (copy_straight False).
        self.copy_straight = copy_straight
        self.holding = False  # the project's write lock
        self.cur = cur
        self.rows = rows
        self.rollups = rollups.Rollups()
        self.failures = rollups.FailureRollups()
        self.areas: dict[int, set[str]] = collections.defaultdict(set)
        # The group's publishes by context and by event (see _e2e_for_consumers),
        # for the writer's recent publishes once committed.
        self.published: tuple[dict, dict] = ({}, {})

    async def run(self) -> None:
        """The transaction, from its BEGIN to its COMMIT: the lane's connection
        is in autocommit mode, so that both travel with the statements next to
        them (pipelines) instead of taking a round trip each. The caller rolls
        back when this raises."""
        rows = self.rows
        pipeline = self.cur.connection.pipeline
        # CloudEvents keep one envelope per event, and rows stamped on receipt
        # are known by key alone: whether such a row is stored already must be
        # asked, and the answer acted on, under the lock.
        timeless = [item for item in rows.logs if not item.row.time_from_record]
        lock_first = bool(rows.envelopes or rows.receive_timed or timeless)
        if lock_first:
            async with pipeline():
                await self.cur.execute("BEGIN")
                await self._lock(hold_the_road=False)
            self._hold_the_road()
            if rows.envelopes or rows.receive_timed:
                await self._drop_stored_events()
            if timeless:
                await self._drop_stored_logs(timeless)
            e2e, unsettled, consumers, publishes = await self._e2e_for_consumers()
        else:
            async with pipeline():
                await self.cur.execute("BEGIN")
                e2e, unsettled, consumers, publishes = await self._e2e_for_consumers()
        # Consume stages whose publish is not known yet wait for the lock: a
        # publish committed meanwhile by another lane or process is then
        # found before they are stored, and they go in with their latency
        # instead of being updated after (a new version of the row in every
        # index of collector_stage).
        held = [] if lock_first else _items_of(consumers, unsettled)
        stages = _without(rows.stages, held) if held else rows.stages

        new_spans = await self._insert(SPANS, rows.spans)
        for item in consumers:
            # Set from this transaction's join (a failed earlier attempt may have
            # set another); e2e_ms is the row's last column, written with the COPY.
            item.e2e = e2e.get(id(item.row))
        new_stages = await self._insert(STAGES, stages)
        await self._insert(ENVELOPES, rows.envelopes)
        await self._insert(LOGS, rows.logs)

        # Counted before the lock is taken: what follows holds it.
        all_new = not stages or new_stages is stages
        self._count_stages(new_stages)
        if e2e:
            if all_new:
                self._count_e2e([item.row for item in consumers], e2e)
            else:
                new_ids = {id(item) for item in new_stages}
                self._count_e2e([i.row for i in consumers if id(i) in new_ids], e2e)
        if held:
            # The lock and the lookup in one round trip (a pipeline): the
            # lookup runs once the lock is granted, and sees what was
            # committed before.
            async with self.cur.connection.pipeline():
                if not lock_first:
                    await self._lock(hold_the_road=False)
                meanwhile = await self._stored_publishes([item.row for item in held])
            self._hold_the_road()
            for item in held:
                item.e2e = meanwhile.get(id(item.row))
            new_held = await self._insert(STAGES, held)
            self._count_stages(new_held)
            all_new = all_new and new_held is held
            new_stages = new_stages + new_held
            if meanwhile:
                self._count_e2e([item.row for item in new_held], meanwhile)
        elif not lock_first:
            await self._lock()
        if all_new:
            # The group's publishes, indexed for the consumers' joins already.
            await self._late_producers(publishes, self.published)
        else:
            await self._late_producers([i.row for i in new_stages if i.row.role == PRODUCER])
        await self._calls(new_spans)

        for project_id in self.rollups.projects():
            self.areas[project_id].add(notify.FLOW)
        # The rollups, the hints and the commit in one round trip: nothing
        # here waits for an answer (a round trip costs the collector about
        # 100 µs of CPU, as much as a hundred spans' rollups).
        async with pipeline():
            if columns := rollups.upsert_columns(self.rollups):
                await self.cur.execute(rollups.UPSERT, array_params(columns))
            if columns := rollups.failure_upsert_columns(self.failures):
                await self.cur.execute(rollups.FAILURE_UPSERT_ROWS, array_params(columns))
            # notify.send's query, for every hint at once; delivered at commit.
            await self.cur.execute(
                "SELECT pg_notify(%s, hint) FROM unnest(%s::text[]) AS hint",
                (
                    notify.CHANNEL,
                    [
                        notify.payload(project_id, area)
                        for project_id in sorted(self.areas)
                        for area in sorted(self.areas[project_id])
                    ],
                ),
            )
            await self.cur.execute("COMMIT")

    def _count_stages(self, new_stages: list[Item]) -> None:
        """Add newly stored stages to the flow and failure rollups."""
        failed, projects = add_stages(self.rollups, new_stages)
        for project_id in projects:
            self.areas[project_id].add(notify.STAGES)
        for stage in failed:
            self.failures.add_stage(stage)
            self.areas[stage.project_id].add(notify.FAILURES)

    async def _lock(self, *, hold_the_road: bool = True) -> None:
        """Take the write lock of the group's projects, held until commit.

        Writers of one project (lanes, collector processes, collectors) load
        their rows at the same time but take turns from their joins to their
        commit, in one order (no deadlock). A transaction that takes the lock
        sees every row committed before, and none of the rows of the ones
        still waiting for it: of a producer and its consumer (or a CLIENT and
        its SERVER) stored by two writers at the same instant, the one that
        takes the lock second finds the other, and the pair is joined exactly
        once.
        """
        await self.cur.execute(
            "SELECT pg_advisory_xact_lock(%s, p) FROM unnest(%s::int[]) AS p ORDER BY p",
            (WRITE_LOCK_CLASS, sorted(self.rows.projects())),
        )
        if hold_the_road:  # else the caller does once the lock is granted (a pipeline)
            self._hold_the_road()

    def _hold_the_road(self) -> None:
        # Every other writer of the project waits from now until this commits.
        if not self.holding:
            self.lane.writer.hold_the_road()
            self.holding = True

    def release(self) -> None:
        if self.holding:
            self.holding = False
            self.lane.writer.clear_the_road()

    # -- inserting -------------------------------------------------------------------

    async def _insert(self, table: _Table, items: list[Item]) -> list[Item]:
        """Store `items`; returns the ones that were not stored before."""
        if not items:
            return []
        if self.copy_straight:
            # Nothing is a retry (UniqueViolation otherwise, and the writer
            # runs the transaction again with copy_straight False).
            await self._copy(table.name, table, items)
            count_stored(items)
            return items
        new = await self._insert_new_only(table, items)
        new_ids = {id(item) for item in new}
        for item in items:
            if id(item) in new_ids:
                item.pending.result.stored += 1
            else:
                item.pending.result.duplicates += 1
        return new

    async def _copy(self, target: str, table: _Table, items: list[Item]) -> None:
        async with self.cur.copy(
            f"COPY {target} ({table.column_list}) FROM STDIN (FORMAT BINARY)"
        ) as copy:
            await copy_rows(copy, table, items, table is STAGES)

    async def _insert_new_only(self, table: _Table, items: list[Item]) -> list[Item]:
        staging = await self.lane.staging_table(self.cur, table)
        await self._copy(staging, table, items)
        key = ", ".join(table.key)
        await self.cur.execute(
            f"INSERT INTO {table.name} ({table.column_list}) "
            f"SELECT {table.column_list} FROM {staging} "
            f"ON CONFLICT DO NOTHING RETURNING {key}"
        )
        inserted = {tuple(_comparable(v) for v in row) for row in await self.cur.fetchall()}
        await self.cur.execute(f"TRUNCATE {staging}")
        # A key is its table's leading identity columns and the row's time, to
        # the microsecond.
        return [item for item in items if _key(table, item) in inserted]

    # -- CloudEvents: one envelope per event ---------------------------------------------

    async def _drop_stored_events(self) -> None:
        """Drop envelopes of events already stored within a day, and stages of
        CloudEvents stamped on receipt that were stored already.

        An event reported at several stages (published, received, processed...)
        carries its envelope each time; the first one stored is the event's.
        A retried CloudEvent without a `time` has a new receive time, so its
        stage is matched by key within the window instead of by primary key.
        """
        rows = self.rows
        envs = rows.envelopes
        stages = [
            i
            for i in rows.stages
            if i.row.origin == ORIGIN_CLOUDEVENT
            and (i.row.project_id, i.row.event_source, i.row.event_id, i.row.time_ns)
            in rows.receive_timed
        ]
        lo, hi = _bounds([i.time_ns for i in envs + stages], RECEIVE_TIME_WINDOW_NS)
        if envs:
            await self.cur.execute(
                "SELECT k.p, k.s, k.i FROM unnest(%b::int[], %b::text[], %b::text[]) AS k(p, s, i) "
                "WHERE EXISTS (SELECT FROM collector_envelope e WHERE e.project_id = k.p "
                "AND e.source = k.s AND e.event_id = k.i AND e.time BETWEEN %s AND %s)",
                (
                    int4_array([i.row.project_id for i in envs]),
                    text_array([i.row.source for i in envs]),
                    text_array([i.row.event_id for i in envs]),
                    lo,
                    hi,
                ),
            )
            stored = {tuple(r) for r in await self.cur.fetchall()}
            keep = []
            for item in envs:
                env = item.row
                if (env.project_id, env.source, env.event_id) in stored:
                    item.pending.result.duplicates += 1
                else:
                    keep.append(item)
            rows.envelopes = keep
        if stages:
            rows.stages = await self._without_stored_keys(STAGES, rows.stages, stages)

    async def _drop_stored_logs(self, timeless: list[Item]) -> None:
        """Drop log records stamped on receipt whose key is stored within a day
        (a retry of a record that has no time of its own)."""
        self.rows.logs = await self._without_stored_keys(LOGS, self.rows.logs, timeless)

    async def _without_stored_keys(self, table: _Table, items: list[Item], candidates):
        """`items` less the `candidates` whose (project, dedupe key) `table`
        holds within RECEIVE_TIME_WINDOW_NS of their time; those count as duplicates."""
        lo, hi = _bounds([i.time_ns for i in candidates], RECEIVE_TIME_WINDOW_NS)
        await self.cur.execute(
            "SELECT k.p, k.d FROM unnest(%b::int[], %b::bytea[]) AS k(p, d) "
            f"WHERE EXISTS (SELECT FROM {table.name} t WHERE t.project_id = k.p "
            f"AND t.dedupe_key = k.d AND t.{table.columns[1]} BETWEEN %s AND %s)",
            (
                int4_array([i.row.project_id for i in candidates]),
                bytea_array([i.key for i in candidates]),
                lo,
                hi,
            ),
        )
        stored = {(p, bytes(d)) for p, d in await self.cur.fetchall()}
        ids = {id(i) for i in candidates}
        keep = []
        for item in items:
            if id(item) in ids and (item.row.project_id, item.key) in stored:
                item.pending.result.duplicates += 1
            else:
                keep.append(item)
        return keep


def _items_of(items: list[Item], rows: list) -> list[Item]:
    """The items, in order, whose row is one of `rows`."""
    ids = {id(row) for row in rows}
    return [item for item in items if id(item.row) in ids]


def _without(items: list[Item], leave: list[Item]) -> list[Item]:
    """`items` less the ones in `leave`, in order."""
    ids = {id(item) for item in leave}
    return [item for item in items if id(item) not in ids]


def _key(table: _Table, item: Item) -> tuple:
    """The values of `table.key` of an item's row, its time in microseconds."""
    row, time_us = item.row, item.time_ns // 1000
    if table is SPANS:
        return (row.project_id, row.trace_id, row.span_id, time_us)
    if table is ENVELOPES:
        return (row.project_id, row.source, row.event_id, time_us)
    return (row.project_id, item.key, time_us)  # stages, log records


def _comparable(value):
    # RETURNING gives datetimes and bytes for bytea; a time is compared in
    # microseconds, as stored (the items keep nanoseconds).
    if isinstance(value, dt.datetime):
        return _ns(value) // 1000
    return value
