"""Query benchmark: dashboard reads on a database holding 10 million spans over 7 days.

Fills a separate database (`eventscope_bench_query` on the benchmark server,
see bench/run.py; reused when already filled with the same size) with the
real schema (Django migrations) and server-side generate_series INSERTs of
a realistic shop: 20 services, 30 channels, two consumer groups per channel
and a call edge per service; five spans per trace (HTTP root, publish, two
consumers, an internal step), three messaging stages per trace, 1 % of
consumes failing, and per-minute flow rollups for every edge.

Then it measures server time (Django's full request handling, in process,
no network) of /api/flow for 1 h, 24 h and 7 d, /api/flow/series of a
consume edge for 1 h and 7 d, a trace by id, the failures page, and
/api/failures (list, grouped by fingerprint, one fingerprint's list), the
Delivery page and /api/findings (on findings for 1 % of the events), one
incremental delivery pass after a minute of traffic, and prints a Markdown
table. `BENCH_QUERY_DB` names another database to fill and measure.

    python bench/query.py [--spans 10000000] [--runs 40] [--refill] [--only delivery]
"""

import argparse
import datetime as dt
import importlib
import os
import sys
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

DEFAULT_SERVER = "postgresql://postgres@127.0.0.1:5432"
BENCH_DB = os.environ.get("BENCH_QUERY_DB", "eventscope_bench_query")
SERVICES, CHANNELS, DAYS, SPANS_PER_TRACE = 20, 30, 7, 5
CUSTOMERS = 5000
AHEAD = 2  # hours of data past the fill time


def database_url() -> str:
    """`eventscope_bench_query` on the benchmark server; when BENCH_DATABASE_URL
    names a database, that name with `_query` after it."""
    server = (
        os.environ.get("BENCH_DATABASE_URL") or os.environ.get("DATABASE_URL") or DEFAULT_SERVER
    )
    parts = urlsplit(server)
    named = parts.path.lstrip("/") if os.environ.get("BENCH_DATABASE_URL") else ""
    return urlunsplit(parts._replace(path="/" + (f"{named}_query" if named else BENCH_DB)))


def filled_with(url: str) -> int:
    """Spans the benchmark database holds, or 0 if it is missing, half-filled or out of date.

    The data runs AHEAD hours past the fill time, so a fill stays usable
    (a full last hour, a full week) for AHEAD hours.
    """
    try:
        with psycopg.connect(url, connect_timeout=5) as conn:
            row = conn.execute(
                "SELECT spans FROM bench_fill WHERE done AND filled_at > now() - %s",
                (dt.timedelta(hours=AHEAD),),
            ).fetchone()
            applied = {
                name
                for (name,) in conn.execute(
                    "SELECT name FROM django_migrations WHERE app = 'collector'"
                )
            }
    except psycopg.Error:
        return 0
    # A fill made before a schema change is refilled.
    latest = sorted(p.stem for p in (ROOT / "collector" / "migrations").glob("0*.py"))[-1]
    return row[0] if row and latest in applied else 0


def recreate(url: str) -> None:
    parts = urlsplit(url)
    name = parts.path.lstrip("/")
    admin = urlunsplit(parts._replace(path="/postgres"))
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')


# One statement per day partition, so two connections can load in parallel.
# Trace i starts at start + i * step; every id is derived from i, so the
# benchmark can name a trace without reading one.
SPANS_SQL = f"""
INSERT INTO collector_span (project_id, trace_id, span_id, parent_span_id, start_time,
    duration_ns, service, name, kind, status_code, status_message, attributes, resource, scope)
SELECT %(project)s, t.trace_id, s.span_id, s.parent, s.start_time, s.duration_ns, s.service,
       s.name, s.kind, s.status, CASE WHEN s.status = 2 THEN 'payment declined' END, s.attrs,
       jsonb_build_object('service.name', s.service), 'shop'
FROM generate_series(%(first)s::bigint, %(last)s::bigint) AS i
CROSS JOIN LATERAL (SELECT decode(md5('t' || i), 'hex') AS trace_id,
    %(start)s::timestamptz + i * %(step)s * interval '1 microsecond' AS t0,
    (i %% {CHANNELS})::int AS c, 'svc-' || lpad(((i %% {CHANNELS}) %% {SERVICES})::text, 2, '0') AS producer,
    'svc-' || lpad((((i %% {CHANNELS}) + 3) %% {SERVICES})::text, 2, '0') AS g1,
    'svc-' || lpad((((i %% {CHANNELS}) + 7) %% {SERVICES})::text, 2, '0') AS g2,
    'topic-' || lpad((i %% {CHANNELS})::text, 2, '0') AS channel,
    (i %% 100 = 0) AS failing) AS t
CROSS JOIN LATERAL (VALUES
    (substr(decode(md5('a' || i), 'hex'), 1, 8), NULL::bytea, t.t0, 40000000::bigint, t.producer,
     'POST /orders', 2::smallint, 0::smallint, '{{"http.route": "/orders"}}'::jsonb),
    (substr(decode(md5('b' || i), 'hex'), 1, 8), substr(decode(md5('a' || i), 'hex'), 1, 8),
     t.t0 + interval '10 ms', 3000000, t.producer, t.channel || ' publish', 4, 0,
     jsonb_build_object('messaging.system', 'kafka', 'messaging.destination.name', t.channel,
                        'messaging.operation.type', 'send', 'messaging.message.id', 'evt-' || i)),
    (substr(decode(md5('c' || i), 'hex'), 1, 8), substr(decode(md5('b' || i), 'hex'), 1, 8),
     t.t0 + interval '60 ms', 20000000, t.g1, t.channel || ' process', 5, 0,
     jsonb_build_object('messaging.system', 'kafka', 'messaging.destination.name', t.channel,
                        'messaging.consumer.group.name', t.g1, 'messaging.message.id', 'evt-' || i)),
    (substr(decode(md5('d' || i), 'hex'), 1, 8), substr(decode(md5('b' || i), 'hex'), 1, 8),
     t.t0 + interval '80 ms', 12000000, t.g2, t.channel || ' process', 5,
     CASE WHEN t.failing THEN 2 ELSE 0 END,
     jsonb_build_object('messaging.system', 'kafka', 'messaging.destination.name', t.channel,
                        'messaging.consumer.group.name', t.g2, 'messaging.message.id', 'evt-' || i)),
    (substr(decode(md5('e' || i), 'hex'), 1, 8), substr(decode(md5('c' || i), 'hex'), 1, 8),
     t.t0 + interval '65 ms', 5000000, t.g1, 'SELECT orders', 1, 0,
     '{{"db.system": "postgresql"}}'::jsonb)
) AS s(span_id, parent, start_time, duration_ns, service, name, kind, status, attrs)
"""

STAGES_SQL = f"""
INSERT INTO collector_stage (project_id, time, dedupe_key, stage, role, system, channel, service,
    consumer_group, trace_id, span_id, parent_span_id, linked_trace_ids, linked_span_ids,
    event_id, error, duration_ms, e2e_ms, origin)
SELECT %(project)s, s.time, decode(md5(s.k || i), 'hex'), s.stage, s.role, 'kafka', t.channel,
       s.service, s.grp, t.trace_id, substr(decode(md5(s.k || i), 'hex'), 1, 8), s.parent,
       CASE WHEN s.role = 'consumer' THEN ARRAY[t.trace_id] END,
       CASE WHEN s.role = 'consumer' THEN ARRAY[s.parent] END,
       'evt-' || i, s.error, s.ms, s.e2e, 1
FROM generate_series(%(first)s::bigint, %(last)s::bigint) AS i
CROSS JOIN LATERAL (SELECT decode(md5('t' || i), 'hex') AS trace_id,
    %(start)s::timestamptz + i * %(step)s * interval '1 microsecond' AS t0,
    'svc-' || lpad(((i %% {CHANNELS}) %% {SERVICES})::text, 2, '0') AS producer,
    'svc-' || lpad((((i %% {CHANNELS}) + 3) %% {SERVICES})::text, 2, '0') AS g1,
    'svc-' || lpad((((i %% {CHANNELS}) + 7) %% {SERVICES})::text, 2, '0') AS g2,
    'topic-' || lpad((i %% {CHANNELS})::text, 2, '0') AS channel,
    (i %% 100 = 0) AS failing) AS t
CROSS JOIN LATERAL (VALUES
    ('b', t.t0 + interval '10 ms', 'published', 'producer', t.producer, '',
     substr(decode(md5('a' || i), 'hex'), 1, 8), NULL::text, 3.0::float8, NULL::float8),
    ('c', t.t0 + interval '60 ms', 'processed', 'consumer', t.g1, t.g1,
     substr(decode(md5('b' || i), 'hex'), 1, 8), NULL, 20.0, 50.0),
    ('d', t.t0 + interval '80 ms', CASE WHEN t.failing THEN 'failed' ELSE 'processed' END,
     'consumer', t.g2, t.g2, substr(decode(md5('b' || i), 'hex'), 1, 8),
     CASE WHEN t.failing THEN 'payment declined: card ' || (i %% 7) END, 12.0, 70.0)
) AS s(k, time, stage, role, service, grp, parent, error, ms, e2e)
"""

# A CloudEvent for every other trace (the order as published, with its payload):
# subject = the order id, 5,000 customers.
ENVELOPES_SQL = f"""
INSERT INTO collector_envelope (project_id, time, source, event_id, type, subject,
    datacontenttype, extensions, data, data_size, trace_id)
SELECT %(project)s, %(start)s::timestamptz + i * %(step)s * interval '1 microsecond'
           + interval '10 ms', '/shop/orders', 'ord-' || i, 'order.created', 'ord-' || i,
       'application/json', '{{}}'::jsonb,
       jsonb_build_object('order_id', 'ord-' || i, 'customer', 'c-' || (i %% {CUSTOMERS}),
                          'amount', i %% 500, 'currency', 'EUR'),
       80, decode(md5('t' || i), 'hex')
FROM generate_series(%(first)s::bigint, %(last)s::bigint) AS i
WHERE i %% 2 = 0
"""

# Every edge is active every minute, as in a shop doing ~200 orders a minute.
ROLLUPS_SQL = f"""
WITH edges AS (
    SELECT 'service:svc-' || lpad((c %% {SERVICES})::text, 2, '0') AS source,
           'channel:kafka:topic-' || lpad(c::text, 2, '0') AS target, 'publish' AS kind, '' AS grp
    FROM generate_series(0, {CHANNELS} - 1) AS c
    UNION ALL
    SELECT 'channel:kafka:topic-' || lpad(c::text, 2, '0'),
           'service:svc-' || lpad(((c + o) %% {SERVICES})::text, 2, '0'), 'consume',
           'svc-' || lpad(((c + o) %% {SERVICES})::text, 2, '0')
    FROM generate_series(0, {CHANNELS} - 1) AS c, (VALUES (3), (7)) AS g(o)
    UNION ALL
    SELECT 'service:svc-' || lpad(s::text, 2, '0'),
           'service:svc-' || lpad(((s + 1) %% {SERVICES})::text, 2, '0'), 'call', ''
    FROM generate_series(0, {SERVICES} - 1) AS s
)
INSERT INTO collector_flowrollup (project_id, minute, source, target, kind, consumer_group,
    count, received, errors, deadlettered, retries, duration_hist, duration_sum_ms, e2e_hist,
    e2e_count, e2e_sum_ms)
SELECT %(project)s, m, e.source, e.target, e.kind, e.grp, n, 0, n / 100, 0, 0,
       ARRAY[0, 0, 1, 2, n - 6, 2, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]::bigint[], n * 15.0,
       CASE WHEN e.kind = 'consume'
            THEN ARRAY[0, 0, 0, 0, 0, 1, n - 2, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0]::bigint[]
            ELSE ARRAY[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]::bigint[] END,
       CASE WHEN e.kind = 'consume' THEN n ELSE 0 END, CASE WHEN e.kind = 'consume' THEN n * 60.0 ELSE 0 END
FROM generate_series(date_trunc('minute', %(start)s::timestamptz),
                     date_trunc('minute', %(end)s::timestamptz), interval '1 minute') AS m
CROSS JOIN edges AS e
CROSS JOIN LATERAL (SELECT 6 + (hashtext(e.source || e.target || m::text) & 7) AS n) AS x
"""


# Delivery findings of the shop (dashboard.delivery), as the pass would keep
# them: of every 1000 events, 5 processed twice by the first group, 2 missing
# and 1 late in the second, 1 out of order and 1 poison.
FINDINGS_SQL = f"""
INSERT INTO delivery_finding (project_id, kind, system, channel, consumer_group, service,
    event_key, event_time, detected_at, event_id, event_source, trace_id, successes, failures,
    retry_ms, deadlettered, delay_ms, ordering_key, examples)
SELECT %(project)s, f.kind, 'kafka', 'topic-' || lpad((i %% {CHANNELS})::text, 2, '0'), f.grp,
       f.grp, decode(md5('k' || i), 'hex'),
       %(start)s::timestamptz + i * %(step)s * interval '1 microsecond' + interval '10 ms',
       now(), 'evt-' || i, NULL, md5('t' || i), f.successes, f.failures, f.retry_ms,
       f.kind = 'poison', f.delay_ms, f.okey,
       jsonb_build_array(jsonb_build_object('trace_id', md5('t' || i),
           'span_id', substr(md5('c' || i), 1, 16), 'service', f.grp, 'stage', 'processed'))
FROM generate_series(0, %(traces)s::bigint - 1) AS i
CROSS JOIN LATERAL (SELECT
    'svc-' || lpad((((i %% {CHANNELS}) + 3) %% {SERVICES})::text, 2, '0') AS g1,
    'svc-' || lpad((((i %% {CHANNELS}) + 7) %% {SERVICES})::text, 2, '0') AS g2) AS g
CROSS JOIN LATERAL (VALUES
    (i %% 1000 < 5, 'duplicate', g.g1, 2, 0, NULL::float8, NULL::float8, ''),
    (i %% 1000 IN (5, 6), 'missing', g.g2, 0, 0, NULL, NULL, ''),
    (i %% 1000 = 7, 'late', g.g2, 1, 0, NULL, 95000.0, ''),
    (i %% 1000 = 8, 'out_of_order', g.g1, 1, 0, NULL, NULL, 'partition 0 key k' || (i %% 97)),
    (i %% 1000 = 9, 'poison', g.g2, 0, 3, 1500.0, NULL, '')
) AS f(hit, kind, grp, successes, failures, retry_ms, delay_ms, okey)
WHERE f.hit
"""


def ensure_delivery(url: str) -> int:
    """Migrate (a fill made before the delivery tables gets them) and fill the
    findings once; returns how many there are."""
    import subprocess

    env = {**os.environ, "DATABASE_URL": url, "DJANGO_SETTINGS_MODULE": "dashboard.settings"}
    subprocess.run(
        [sys.executable, str(ROOT / "manage.py"), "migrate", "--verbosity", "0"],
        env=env, check=True, cwd=ROOT,
    )  # fmt: skip
    with psycopg.connect(url, autocommit=True) as conn:
        found = conn.execute("SELECT count(*) FROM delivery_finding").fetchone()[0]
        if not found:
            traces, start, step_us, project = conn.execute(
                "SELECT traces, start, step_us, project FROM bench_fill"
            ).fetchone()
            params = {"project": project, "traces": traces, "start": start, "step": step_us}
            conn.execute(FINDINGS_SQL, params)
            conn.execute("VACUUM ANALYZE delivery_finding")
            found = conn.execute("SELECT count(*) FROM delivery_finding").fetchone()[0]
    return found


DELIVERY_REQUESTS = [
    ("GET /delivery/ (page, 24h)", "/delivery/"),
    ("GET /delivery/?window=7d (page)", "/delivery/?window=7d"),
    ("GET /api/findings?window=24h", "/api/findings?window=24h"),
    ("GET /api/findings?window=7d", "/api/findings?window=7d"),
    ("GET /api/findings?window=7d&kind=missing", "/api/findings?window=7d&kind=missing"),
]


def delivery_pass_ms(url: str, minutes: int = 1) -> tuple[float, int]:
    """One incremental delivery pass after `minutes` of the shop's traffic is
    stored anew (its stages rewritten and its rollups touched, as the writer
    does), with the pass caught up before and due for its scan of every
    minute kept: (milliseconds, stages read)."""
    from django.db import connection

    from dashboard.delivery import engine

    with connection.cursor() as cur:
        cur.execute("DELETE FROM delivery_dirtyminute")
        cur.execute("SELECT pg_current_snapshot()::text")
        snapshot = cur.fetchone()[0]
        cur.execute(
            "INSERT INTO delivery_passstate (id, snapshot, full_snapshot, full_at, swept_until, "
            "passed_at) VALUES (1, %s, %s, now() - interval '1 hour', now(), now()) "
            "ON CONFLICT (id) DO UPDATE SET snapshot = %s, full_snapshot = %s, "
            "full_at = now() - interval '1 hour', swept_until = now(), passed_at = now()",
            [snapshot, snapshot, snapshot, snapshot],
        )
        cur.execute(
            "UPDATE collector_stage SET e2e_ms = e2e_ms WHERE time >= now() - %s AND time < now()",
            [dt.timedelta(minutes=minutes)],
        )
        cur.execute(
            "UPDATE collector_flowrollup SET count = count WHERE minute >= now() - %s "
            "AND minute < now()",
            [dt.timedelta(minutes=minutes + 1)],
        )
    began = time.perf_counter()
    done = engine.run_pass(max_minutes=10_000)
    return (time.perf_counter() - began) * 1000, done["stages"]


def fill(url: str, spans: int) -> dict:
    """Load the benchmark data; returns what was loaded."""
    recreate(url)
    env = {**os.environ, "DATABASE_URL": url, "DJANGO_SETTINGS_MODULE": "dashboard.settings"}
    import subprocess

    subprocess.run(
        [sys.executable, str(ROOT / "manage.py"), "migrate", "--verbosity", "0"],
        env=env, check=True, cwd=ROOT,
    )  # fmt: skip
    from collector import partitions

    end = dt.datetime.now(dt.UTC).replace(microsecond=0) + dt.timedelta(hours=AHEAD)
    start = end - dt.timedelta(days=DAYS)
    traces = spans // SPANS_PER_TRACE
    step_us = (end - start).total_seconds() * 1e6 / traces
    with psycopg.connect(url, autocommit=True) as conn:
        project = conn.execute(
            "INSERT INTO collector_project (name, slug, created_at) VALUES ('Bench', 'bench', now()) "
            "RETURNING id"
        ).fetchone()[0]
        conn.execute("CREATE TABLE bench_fill (spans bigint, traces bigint, start timestamptz, "
                     "step_us float8, project int, done bool, filled_at timestamptz DEFAULT now())")  # fmt: skip
        conn.execute(
            "INSERT INTO bench_fill VALUES (%s, %s, %s, %s, %s, false)",
            (spans, traces, start, step_us, project),
        )
        with conn.transaction(), conn.cursor() as cur:
            days = [start.date() + dt.timedelta(days=d) for d in range(DAYS + 2)]
            partitions.ensure(cur, days)

    chunks = 8
    size = -(-traces // chunks)
    jobs = [
        (sql, k * size, min(traces, (k + 1) * size) - 1)
        for sql in (SPANS_SQL, STAGES_SQL, ENVELOPES_SQL)
        for k in range(chunks)
    ]
    lock = threading.Lock()

    def worker():
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("SET synchronous_commit = off")
            while True:
                with lock:
                    if not jobs:
                        return
                    sql, first, last = jobs.pop(0)
                params = {
                    "project": project,
                    "first": first,
                    "last": last,
                    "start": start,
                    "step": step_us,
                }
                conn.execute(sql, params)

    began = time.monotonic()
    threads = [threading.Thread(target=worker) for _ in range(2)]
    for t in threads:
        t.start()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(ROLLUPS_SQL, {"project": project, "start": start, "end": end})
    for t in threads:
        t.join()
    with psycopg.connect(url, autocommit=True) as conn:
        # The writer keeps failure rollups (by fingerprint) as it stores
        # failures; the fill counts them in afterwards with the migration's own
        # rebuild, which fingerprints each stored failure as the writer does.
        failure_rollups = importlib.import_module("collector.migrations.0006_failure_fingerprints")
        with conn.transaction():
            failure_rollups.rebuild(conn)
        conn.execute("VACUUM ANALYZE")
        conn.execute("UPDATE bench_fill SET done = true")
    return {"seconds": time.monotonic() - began, "traces": traces}


def percentile(values, q):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


# A consume edge of the filled shop (topic-00 is consumed by svc-03 and svc-07).
SERIES_EDGE = "source=channel:kafka:topic-00&target=service:svc-03&kind=consume&group=svc-03"


def requests(trace_hex: str, trace_no: int = 0) -> list[tuple[str, str]]:
    """(label, path) of every request measured; `trace_no` is the number of the
    trace `trace_hex` (ids derive from it)."""
    from collector import fingerprint

    order = trace_no - trace_no % 2  # every other trace has a CloudEvent

    return [
        ("GET /api/flow?window=1h", "/api/flow?window=1h"),
        ("GET /api/flow?window=24h", "/api/flow?window=24h"),
        ("GET /api/flow?window=7d", "/api/flow?window=7d"),
        (
            "GET /api/flow/series?window=1h (consume edge)",
            f"/api/flow/series?window=1h&{SERIES_EDGE}",
        ),
        (
            "GET /api/flow/series?window=7d (consume edge)",
            f"/api/flow/series?window=7d&{SERIES_EDGE}",
        ),
        ("GET /api/traces/<id>", f"/api/traces/{trace_hex}"),
        ("GET /traces/<id> (page)", f"/traces/{trace_hex}"),
        ("GET /failures/ (page, 24h)", "/failures/"),
        ("GET /api/failures?window=24h", "/api/failures?window=24h"),
        ("GET /api/failures?group_by=error&window=7d", "/api/failures?group_by=error&window=7d"),
        ("fingerprinted failure groups (7 d)", "/api/failures?group_by=error&window=7d&limit=500"),
        (
            "failures of one fingerprint (7 d, list)",
            f"/api/failures?window=7d&fingerprint={fingerprint.of('payment declined: card 1')[1]}",
        ),
        ("search: trace id prefix (8 hex)", f"/api/search?q={trace_hex[:8]}"),
        ("search: message id", f"/api/search?q=evt-{trace_no}"),
        # evt-12345 is a prefix of evt-12345[0-9]* too: about a hundred events.
        ("search: event id prefix (9 chars)", f"/api/search?q=evt-{str(trace_no)[:5]}"),
        ("search: CloudEvents subject", f"/api/search?q=subject%3Dord-{order}"),
        ("search: payload field, one event", f"/api/search?q=data.order_id%3Dord-{order}"),
        ("search: payload field, 200 events", "/api/search?q=data.customer%3Dc-42"),
        ("recent traces (1 h)", "/api/traces?window=1h"),
        ("recent traces of a service (1 h)", "/api/traces?window=1h&service=svc-03"),
        ("recent traces of a channel (1 h)", "/api/traces?window=1h&channel=topic-00"),
        ("recent traces with errors (24 h)", "/api/traces?window=24h&status=error"),
        ("recent traces with errors (7 d)", "/api/traces?window=7d&status=error&service=svc-07"),
        ("GET /search/ (page, recent traces)", "/search/"),
        *DELIVERY_REQUESTS,
    ]


def measure(url: str, runs: int, only: str = "") -> list[tuple[str, float, float, int]]:
    os.environ["DATABASE_URL"] = url
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "dashboard.settings")
    os.environ.setdefault("EVENTSCOPE_SECURE_COOKIES", "0")
    import django

    django.setup()
    from django.conf import settings
    from django.contrib.auth import get_user_model
    from django.test import Client

    from collector.models import Project
    from dashboard.accounts.models import Membership

    settings.ALLOWED_HOSTS = ["*"]
    with psycopg.connect(url) as conn:
        traces, start, step_us, project_id = conn.execute(
            "SELECT traces, start, step_us, project FROM bench_fill"
        ).fetchone()
    project = Project.objects.get(pk=project_id)
    from dashboard.flow import hours as flowhours

    began = time.perf_counter()
    flowhours.compact_now()  # what the worker does once a minute
    compact_ms = (time.perf_counter() - began) * 1000
    user, _ = get_user_model().objects.get_or_create(username="bench")
    Membership.objects.get_or_create(user=user, project=project)
    client = Client()
    client.force_login(user)
    # A trace from the last day: the one a user would look up after an alert.
    trace_no = traces - traces // 14
    trace_hex = __import__("hashlib").md5(f"t{trace_no}".encode()).hexdigest()
    cases = requests(trace_hex, trace_no)
    if only == "delivery":
        # The delivery rows, and /api/flow of the same run for scale.
        cases = [c for c in cases if c[1].startswith("/api/flow?")] + DELIVERY_REQUESTS
    results = []
    for label, path in cases:
        for _ in range(3):
            response = client.get(path)
            assert response.status_code == 200, (path, response.status_code, response.content[:300])
        times = []
        for _ in range(runs):
            began = time.perf_counter()
            response = client.get(path)
            times.append((time.perf_counter() - began) * 1000)
        results.append(
            (label, percentile(times, 0.5), percentile(times, 0.95), len(response.content))
        )
    results.append(("hourly compaction pass (worker, once)", compact_ms, compact_ms, 0))
    pass_ms, read = delivery_pass_ms(url)
    results.append(
        (f"delivery pass after a minute of traffic ({read} stages)", pass_ms, pass_ms, 0)
    )
    return results


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--spans", type=int, default=10_000_000)
    parser.add_argument("--runs", type=int, default=40)
    parser.add_argument("--refill", action="store_true", help="refill even if the data is there")
    parser.add_argument(
        "--only",
        choices=["delivery"],
        help="delivery: only the Delivery page, /api/findings, the delivery pass and, "
        "for scale, /api/flow of the same run",
    )
    args = parser.parse_args(argv)
    url = database_url()
    filled = filled_with(url)
    if args.refill or filled != args.spans:
        os.environ.setdefault("DJANGO_SETTINGS_MODULE", "dashboard.settings")
        print(
            f"filling {urlsplit(url).path.lstrip('/')} with {args.spans:,} spans ...",
            file=sys.stderr,
        )
        loaded = fill(url, args.spans)
        print(f"filled in {loaded['seconds']:.0f} s", file=sys.stderr)
    findings = ensure_delivery(url)
    print(f"{findings:,} delivery findings", file=sys.stderr)
    with psycopg.connect(url) as conn:
        spans = conn.execute("SELECT count(*) FROM collector_span").fetchone()[0]
        stages = conn.execute("SELECT count(*) FROM collector_stage").fetchone()[0]
        envelopes = conn.execute("SELECT count(*) FROM collector_envelope").fetchone()[0]
        rollups = conn.execute("SELECT count(*) FROM collector_flowrollup").fetchone()[0]
    results = measure(url, args.runs, args.only or "")
    print(
        f"\n## Query benchmark\n\n{spans:,} spans, {stages:,} stages, {envelopes:,} envelopes, {rollups:,} rollup rows over 7 days; server time in process, {args.runs} runs each.\n"
    )
    print("| request | p50 ms | p95 ms | response bytes |")
    print("|---|---:|---:|---:|")
    for label, p50, p95, size in results:
        print(f"| `{label}` | {p50:.1f} | {p95:.1f} | {size:,} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
