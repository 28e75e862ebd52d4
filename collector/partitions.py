"""Daily partitions of the raw telemetry tables.

The writer calls `ensure` for the days a batch touches (cached per process);
the worker creates tomorrow's ahead of time and drops expired days whole,
which is far cheaper than DELETE and leaves no bloat.
"""

import datetime as dt

PARTITIONED = ("collector_span", "collector_stage", "collector_envelope", "collector_log")

# Serialises partition DDL between processes; the number is arbitrary but fixed.
DDL_LOCK_KEY = 0x45530001


def partition_name(table: str, day: dt.date) -> str:
    return f"{table}_p{day:%Y%m%d}"


def _day_of(name: str) -> dt.date | None:
    try:
        return dt.datetime.strptime(name.rsplit("_p", 1)[1], "%Y%m%d").date()
    except (IndexError, ValueError):
        return None


def existing(cursor, table: str) -> dict[dt.date, str]:
    """The partitions of `table`, by day."""
    cursor.execute(
        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
        "WHERE i.inhparent = %s::regclass",
        (table,),
    )
    days = {}
    for (name,) in cursor.fetchall():
        day = _day_of(name)
        if day is not None:
            days[day] = name
    return days


def ensure(cursor, days, tables=PARTITIONED) -> None:
    """Create the daily partitions for `days` that do not exist yet.

    Runs inside the caller's transaction; takes a transaction-scoped advisory
    lock so concurrent writers do not race on the same CREATE.
    """
    days = sorted(set(days))
    if not days:
        return
    cursor.execute("SELECT pg_advisory_xact_lock(%s)", (DDL_LOCK_KEY,))
    for table in tables:
        have = existing(cursor, table)
        for day in days:
            if day in have:
                continue
            nxt = day + dt.timedelta(days=1)
            cursor.execute(
                f'CREATE TABLE IF NOT EXISTS "{partition_name(table, day)}" '
                f"PARTITION OF {table} FOR VALUES FROM ('{day.isoformat()}') "
                f"TO ('{nxt.isoformat()}')"
            )


def drop_older_than(cursor, cutoff: dt.date, tables=PARTITIONED) -> list[str]:
    """Drop whole partitions whose day ends on or before `cutoff`; returns their names."""
    dropped = []
    cursor.execute("SELECT pg_advisory_xact_lock(%s)", (DDL_LOCK_KEY,))
    for table in tables:
        for day, name in sorted(existing(cursor, table).items()):
            if day < cutoff:
                cursor.execute(f'DROP TABLE IF EXISTS "{name}"')
                dropped.append(name)
    return dropped
