"""Partition upkeep for the writer: day partitions created on demand, and their
first planner statistics."""

import asyncio
import datetime as dt
import logging

import psycopg

from collector import partitions
from collector.writer.lanes import CONNECT_TIMEOUT
from collector.writer.prepare import _Rows
from collector.writer.rows import STAGES

log = logging.getLogger(__name__)

# A day partition gets its first planner statistics from the writer once
# this many of its rows have landed, unless it has some already: autovacuum
# comes to a fresh partition only after a minute or more, and until then the
# planner can take the primary key for the stage lookups and read the whole
# day once per key. Statistics from the first rows keep that choice right as
# the day grows (the keys are unique, the time range covers the day).
ANALYZE_AFTER_ROWS = 1_000
ANALYZED_COLUMNS = {
    "collector_span": (
        "project_id", "trace_id", "span_id", "parent_span_id", "start_time", "kind", "service",
    ),
    "collector_stage": (
        "project_id", "time", "dedupe_key", "trace_id", "span_id", "role", "stage", "event_id",
        "e2e_ms",
    ),
}  # fmt: skip


class _PartitionUpkeep:
    """The partition upkeep of a Writer (its `conninfo`, `_known_days`, `_day_rows`, ...)."""

    async def _ensure_partitions(self, days: set[dt.date]) -> None:
        if not days - self._known_days:
            return
        async with self._partitions_lock:
            missing = days - self._known_days
            if missing:
                # The DDL commits on its own short connection, so the data
                # transaction never holds the partition lock.
                await asyncio.to_thread(self._create_partitions, sorted(missing))
                self._known_days |= missing

    def _count_day_rows(self, rows: "_Rows") -> None:
        """Analyse a day's partitions when enough rows have landed in them (ANALYZE_AFTER_ROWS)."""
        count = len(rows.spans) + len(rows.stages)
        for day in rows.days():
            before = self._day_rows[day]
            self._day_rows[day] = before + count
            if before < ANALYZE_AFTER_ROWS <= before + count:
                task = asyncio.create_task(asyncio.to_thread(self._analyze, day))
                self._background.add(task)
                task.add_done_callback(self._background.discard)
        while len(self._day_rows) > 4:  # days long past need no more counting
            del self._day_rows[min(self._day_rows)]

    def _analyze(self, day: dt.date) -> None:
        # The columns the writer's and the dashboard's lookups filter on, from
        # a small sample: whole rows (jsonb above all) would take seconds.
        targets = ", ".join(
            f'"{partitions.partition_name(table, day)}" ({", ".join(columns)})'
            for table, columns in ANALYZED_COLUMNS.items()
        )
        try:
            with psycopg.connect(
                self.conninfo, connect_timeout=CONNECT_TIMEOUT, autocommit=True
            ) as conn:
                analysed = conn.execute(
                    "SELECT EXISTS (SELECT FROM pg_stats WHERE tablename = %s "
                    "AND attname = 'trace_id')",
                    (partitions.partition_name(STAGES.name, day),),
                ).fetchone()[0]
                if not analysed:  # by another collector process, or autovacuum
                    conn.execute("SET default_statistics_target = 20")
                    conn.execute(f"ANALYZE {targets}")
        except (psycopg.Error, OSError) as exc:
            log.warning("could not analyse the partitions of %s: %s", day, exc)

    def _create_partitions(self, days) -> None:
        with psycopg.connect(self.conninfo, connect_timeout=CONNECT_TIMEOUT) as conn:
            with conn.cursor() as cur:
                partitions.ensure(cur, days)
