"""A writing lane's connection and its staging tables."""

import logging
import os

import psycopg

from collector.writer.items import configure_connection
from collector.writer.rows import _Table, configure_copy

log = logging.getLogger(__name__)

CONNECT_TIMEOUT = 5
WRITER_APPLICATION_NAME = "eventscope writer"
# A writer's session: a hung server must not hold acknowledgements forever,
# and every lookup a writer makes is a point lookup by key, so an index scan
# in a nested loop is always the right plan. A day partition created minutes
# ago has no statistics yet, and the planner would otherwise scan it whole
# (or its BRIN time range, once per key in LATERAL-less joins), getting
# slower as the day fills up. Set for the session, they cost no statement
# per transaction.
WRITER_OPTIONS = (
    "-c statement_timeout=60000 -c enable_seqscan=off -c enable_hashjoin=off "
    "-c enable_mergejoin=off"
)


class _Lane:
    """One writing lane: its connection and that connection's staging tables."""

    def __init__(self, writer):
        self.writer = writer
        self.conninfo = writer.conninfo
        self._conn: psycopg.AsyncConnection | None = None
        self._staging_ready: set[str] = set()

    async def connection(self) -> psycopg.AsyncConnection:
        if self._conn is None or self._conn.closed:
            self._conn = await psycopg.AsyncConnection.connect(
                self.conninfo,
                connect_timeout=CONNECT_TIMEOUT,
                # Operators find the writers in pg_stat_activity by this name,
                # and which collector process each belongs to.
                application_name=f"{WRITER_APPLICATION_NAME} (pid {os.getpid()})",
                options=WRITER_OPTIONS,
                # A group's transaction sends its own BEGIN and COMMIT, each
                # with the statements next to it (_Transaction.run).
                autocommit=True,
            )
            configure_copy(self._conn)
            configure_connection(self._conn)
            self._staging_ready.clear()
        return self._conn

    async def roll_back(self) -> None:
        """End a failed transaction; a connection that cannot is discarded."""
        conn = self._conn
        if conn is None or conn.closed:
            return
        if conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE:
            return
        try:
            await conn.execute("ROLLBACK")
        except (psycopg.Error, OSError):
            await self.discard()  # the next group connects afresh

    async def discard(self) -> None:
        conn, self._conn = self._conn, None
        self._staging_ready.clear()
        if conn is not None:
            try:
                await conn.close()
            except Exception:  # the connection is already broken; nothing to save
                log.debug("closing a broken connection failed", exc_info=True)

    async def close(self) -> None:
        if self._conn is not None:
            await self._conn.close()
            self._conn = None

    async def staging_table(self, cur, table: _Table) -> str:
        name = f"es_staging_{table.name}"
        if name not in self._staging_ready:
            # Temporary and per connection: no WAL, no contention between collectors.
            await cur.execute(
                f"CREATE TEMP TABLE IF NOT EXISTS {name} (LIKE {table.name}) ON COMMIT DELETE ROWS"
            )
            self._staging_ready.add(name)
        return name
