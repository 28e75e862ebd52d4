"""What the search indexes cost a bulk load: binary COPY of the same rows into
tables shaped like the spans and the envelopes, with and without the indexes
of migration 0007_search, interleaved round by round in alternating order
(this machine's speed drifts within minutes), printed as Markdown.

- spans: the primary key alone, against the primary key plus the BRIN over
  start_time of root spans (32 pages a range, autosummarize; one span in
  five is a root here). Summarising happens after the
  load (by the autovacuum worker); `brin_summarize_new_values` is timed in
  the last column.
- envelopes: the primary key and the (project_id, event_id) index, against
  those plus the GIN (jsonb_path_ops) over the payload and the subject index.
  Entries left in the GIN's pending list are merged after the load (as
  autovacuum would); `gin_clean_pending_list` is timed in the last column.

It uses the database `<name>_indexes`, where <name> is BENCH_DATABASE_URL's
database (else `eventscope_bench`), dropped and recreated, migrated.

    python bench/search_indexes.py [--spans 300000] [--envelopes 100000] [--rounds 5]
"""

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.query import SPANS_SQL  # noqa: E402

BASE_INDEXES = {
    "span": ["ALTER TABLE {t} ADD PRIMARY KEY (project_id, trace_id, span_id, start_time)"],
    "envelope": [
        "ALTER TABLE {t} ADD PRIMARY KEY (project_id, source, event_id, time)",
        "CREATE INDEX ON {t} (project_id, event_id)",
    ],
}
DEFERRED = {"brin": "brin_summarize_new_values", "gin": "gin_clean_pending_list"}
SPAN_INDEXES = {
    "primary key only": [],
    "+ BRIN (start_time) of root spans": [
        "CREATE INDEX ON {t} USING brin (start_time) "
        "WITH (pages_per_range = 32, autosummarize = on) WHERE parent_span_id IS NULL"
    ],
}
ENVELOPE_INDEXES = {
    "primary key + event id": [],
    "+ GIN payload, subject": [
        "CREATE INDEX ON {t} USING gin (data jsonb_path_ops) "
        "WITH (gin_pending_list_limit = 16384) WHERE data IS NOT NULL",
        "CREATE INDEX ON {t} (project_id, subject) WHERE subject IS NOT NULL",
    ],
}
ENVELOPES_SQL = """
INSERT INTO src_envelope (project_id, time, source, event_id, type, subject, datacontenttype,
    extensions, data, data_size, trace_id)
SELECT 1, now() - interval '1 hour' + i * interval '10 ms', '/shop/orders', 'ord-' || i,
       'order.created', 'ord-' || i, 'application/json', '{}'::jsonb,
       jsonb_build_object('order_id', 'ord-' || i, 'customer', 'c-' || (i %% 5000),
                          'amount', i %% 500, 'currency', 'EUR',
                          'lines', jsonb_build_array(jsonb_build_object('sku', 'sku-' || (i %% 97),
                                                                        'qty', 1 + i %% 3))),
       120, decode(md5('t' || i), 'hex')
FROM generate_series(1, %(n)s) AS i
"""


def database_url() -> str:
    server = os.environ.get("BENCH_DATABASE_URL") or os.environ.get("DATABASE_URL") or ""
    parts = urlsplit(server or "postgresql://postgres@127.0.0.1:5432")
    named = parts.path.lstrip("/") if os.environ.get("BENCH_DATABASE_URL") else ""
    return urlunsplit(parts._replace(path=f"/{named or 'eventscope_bench'}_indexes"))


def prepare(url: str, spans: int, envelopes: int) -> tuple[bytes, bytes]:
    """Migrate a fresh database and return the binary COPY data of both tables."""
    parts = urlsplit(url)
    admin = urlunsplit(parts._replace(path="/postgres"))
    name = parts.path.lstrip("/")
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    env = {**os.environ, "DATABASE_URL": url, "DJANGO_SETTINGS_MODULE": "dashboard.settings"}
    subprocess.run([sys.executable, str(ROOT / "manage.py"), "migrate", "--verbosity", "0"],
                   env=env, check=True, cwd=ROOT)  # fmt: skip
    with psycopg.connect(url, autocommit=True) as conn:
        for table in ("span", "envelope"):
            conn.execute(f"CREATE TABLE src_{table} (LIKE collector_{table} INCLUDING DEFAULTS)")
        traces = spans // 5
        conn.execute(
            SPANS_SQL.replace("INSERT INTO collector_span", "INSERT INTO src_span"),
            {"project": 1, "first": 0, "last": traces - 1,
             "start": "2026-01-01T00:00:00Z", "step": 3600e6 / traces},
        )  # fmt: skip
        conn.execute(ENVELOPES_SQL, {"n": envelopes})
        data = []
        for table, order in (("span", "start_time"), ("envelope", "time")):
            with conn.cursor().copy(
                f"COPY (SELECT * FROM src_{table} ORDER BY {order}) TO STDOUT (FORMAT binary)"
            ) as copy:
                data.append(b"".join(bytes(chunk) for chunk in copy))
    return data[0], data[1]


def load(url: str, table: str, indexes: list[str], data: bytes, summarize: bool) -> tuple:
    """Seconds to COPY `data` into a fresh table with `indexes`, and to do then
    the index work left for later."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("DROP TABLE IF EXISTS target")
        # The production tables' B-trees (LIKE … INCLUDING INDEXES would copy 0007's too).
        conn.execute(f"CREATE TABLE target (LIKE collector_{table} INCLUDING DEFAULTS)")
        for sql in BASE_INDEXES[table] + indexes:
            conn.execute(sql.format(t="target"))
        conn.execute("CHECKPOINT")
        began = time.perf_counter()
        with conn.transaction(), conn.cursor().copy("COPY target FROM STDIN (FORMAT binary)") as c:
            for start in range(0, len(data), 1 << 20):
                c.write(data[start : start + (1 << 20)])
        copied = time.perf_counter() - began
        began = time.perf_counter()
        if summarize and indexes:
            # What autovacuum does later: summarise BRIN ranges, merge GIN pending lists.
            for index, method in conn.execute(
                "SELECT indexrelid::regclass::text, a.amname FROM pg_index i JOIN pg_class c "
                "ON c.oid = i.indexrelid JOIN pg_am a ON a.oid = c.relam "
                "WHERE indrelid = 'target'::regclass AND a.amname IN ('brin', 'gin')"
            ).fetchall():
                deferred = DEFERRED[method]
                conn.execute(f"SELECT {deferred}(%s::regclass)", (index,))
        return copied, time.perf_counter() - began


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--spans", type=int, default=300_000)
    parser.add_argument("--envelopes", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)
    url = database_url()
    span_data, envelope_data = prepare(url, args.spans, args.envelopes)
    cases = [("span", label, sql, span_data, args.spans) for label, sql in SPAN_INDEXES.items()]
    cases += [("envelope", label, sql, envelope_data, args.envelopes)
              for label, sql in ENVELOPE_INDEXES.items()]  # fmt: skip
    times: dict = {(c[0], c[1]): [] for c in cases}
    load(url, "span", [], span_data, False)  # warm up
    for round_no in range(args.rounds):
        # Alternate the order, so a drift of the machine's speed favours neither.
        for table, label, indexes, data, _rows in cases[:: 1 if round_no % 2 == 0 else -1]:
            times[(table, label)].append(load(url, table, indexes, data, True))
    print(f"\n## Search indexes on a bulk load ({args.rounds} rounds, interleaved; median)\n")
    print(
        "| table | indexes | rows | COPY s | µs per row | ratio | deferred (BRIN summary, GIN merge) s |"
    )
    print("|---|---|---:|---:|---:|---:|---:|")
    for table, label, _indexes, _data, rows in cases:
        copied = statistics.median(t[0] for t in times[(table, label)])
        first = next(c for c in cases if c[0] == table)
        base = statistics.median(t[0] for t in times[(table, first[1])])
        summarised = statistics.median(t[1] for t in times[(table, label)])
        print(
            f"| {table} | {label} | {rows:,} | {copied:.2f} | {copied / rows * 1e6:.1f} "
            f"| {copied / base:.3f} | {summarised:.3f} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
