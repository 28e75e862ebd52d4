"""Delivery findings from stored spans: the pass's progress across commits
out of time order, ordering keys, and what the API, the Delivery page, the
journeys, the flow graph and the alert rules show of them."""

import datetime as dt
import os
import time

import psycopg
import pytest
from django.db.models import F
from django.test import Client

from collector.db import conninfo
from dashboard.alerts.evaluate import evaluate_rule
from dashboard.alerts.models import Alert, AlertRule
from dashboard.delivery import engine
from dashboard.delivery.models import Finding, PassState
from tests.dashboard import world
from tests.delivery.conftest import findings, set_channel, settle

pytestmark = pytest.mark.usefixtures("telemetry_db")
SECOND = 10**9


class Shop:
    """Kafka events, published and processed at chosen times (ns)."""

    def __init__(self, topic="orders"):
        self.topic = topic
        self.spans: dict[str, list] = {}
        self.published: dict[str, tuple] = {}

    def publish(self, event_id, at_ns, **attrs):
        trace, span_id = world.new_trace_id(), world.new_span_id()
        self.published[event_id] = (trace, span_id)
        attributes = world.messaging("kafka", self.topic, "send", message_id=event_id)
        attributes.update(attrs)
        self.spans.setdefault("orders", []).append(
            world.span(
                trace,
                span_id,
                f"{self.topic} send",
                world.KIND_PRODUCER,
                at_ns,
                2,
                attrs=attributes,
            )
        )

    def process(self, event_id, at_ns, group="payments", error=None, **attrs):
        trace, parent = self.published[event_id]
        attributes = world.messaging("kafka", self.topic, "process", group, event_id)
        attributes.update(attrs)
        self.spans.setdefault(group, []).append(
            world.span(trace, world.new_span_id(), f"{self.topic} process", world.KIND_CONSUMER, at_ns, 3,
                 parent=parent, attrs=attributes, error=error)
        )  # fmt: skip

    def process_by_id(self, event_id, at_ns, group="audit", topic=None, error=None):
        """A consumer instrumented without propagation: a trace of its own, no
        parent, no link; only the message id ties it to the publish."""
        topic = topic or self.topic
        attributes = world.messaging("kafka", topic, "process", group, event_id)
        self.spans.setdefault(group, []).append(
            world.span(world.new_trace_id(), world.new_span_id(), f"{topic} process",
                       world.KIND_CONSUMER, at_ns, 3, attrs=attributes, error=error)
        )  # fmt: skip

    def store(self, project_id):
        world.store(world.traces_batch(world.request(self.spans), project_id))
        self.spans = {}


def a_pass_over_one_good_event(project, now) -> "Shop":
    """ord-1 published and processed once, and a pass that found nothing."""
    shop = Shop()
    shop.publish("ord-1", now - 60 * SECOND)
    shop.process("ord-1", now - 59 * SECOND)
    shop.store(project.id)
    settle()
    assert findings(project) == {}
    return shop


def test_a_stage_stored_late_for_an_old_minute_is_found(project):
    now = time.time_ns()
    shop = a_pass_over_one_good_event(project, now)
    # Three hours old, stored after the pass: a watermark on time would miss it.
    shop.publish("ord-old", now - 10800 * SECOND)
    shop.process("ord-old", now - 10799 * SECOND)
    shop.process("ord-old", now - 10790 * SECOND)
    shop.store(project.id)
    settle()
    # Minutes older than engine.RECENT are looked at once every FULL_EVERY.
    assert findings(project) == {}
    PassState.objects.update(full_at=F("full_at") - engine.FULL_EVERY)
    settle()
    assert findings(project) == {("duplicate", "orders", "payments"): ["ord-old"]}


def test_a_transaction_open_during_a_pass_is_read_by_the_next_one(project):
    """A collector whose transaction began before a pass and commits after it
    (rows with an older time than what the pass saw) is not skipped."""
    now = time.time_ns()
    a_pass_over_one_good_event(project, now)
    minute = dt.datetime.fromtimestamp((now - 600 * SECOND) / 1e9, dt.UTC)
    trace, publish = os.urandom(16), os.urandom(8)
    with psycopg.connect(conninfo()) as slow:
        # An in-flight transaction, as the writer's: stages and their minute's rollup.
        for n, (stage, role, group, span_id, parent) in enumerate(
            [
                ("published", "producer", "", publish, None),
                ("processed", "consumer", "payments", os.urandom(8), publish),
                ("processed", "consumer", "payments", os.urandom(8), publish),
            ]
        ):
            slow.execute(
                "INSERT INTO collector_stage (project_id, time, dedupe_key, stage, role, system, "
                "channel, service, consumer_group, trace_id, span_id, parent_span_id, "
                "linked_trace_ids, linked_span_ids, event_id, origin) VALUES (%s, %s, %s, %s, "
                "%s, 'kafka', 'orders', %s, %s, %s, %s, %s, %s, %s, 'ord-slow', 1)",
                (
                    project.id, minute + dt.timedelta(seconds=n), os.urandom(16), stage, role,
                    group or "orders", group, trace, span_id, parent,
                    [trace] if parent else None, [parent] if parent else None,
                ),
            )  # fmt: skip
        slow.execute(
            "INSERT INTO collector_flowrollup (project_id, minute, source, target, kind, "
            "consumer_group, count, duration_hist, e2e_hist) VALUES (%s, %s, "
            "'channel:kafka:orders', 'service:payments', 'consume', 'payments', 2, '{}', '{}') "
            "ON CONFLICT DO NOTHING",
            (project.id, minute.replace(second=0, microsecond=0)),
        )
        settle()  # runs while the rows are not committed
        assert findings(project) == {}
        slow.commit()
    settle()
    assert findings(project) == {("duplicate", "orders", "payments"): ["ord-slow"]}


def test_kafka_partition_and_key_order_and_a_resent_export(project):
    now = time.time_ns()
    shop = Shop()
    for n in range(6):
        key = "cust-a" if n < 3 else "cust-b"
        shop.publish(f"ord-{n}", now - (60 - n) * SECOND, **{
            "messaging.kafka.message.key": key, "messaging.destination.partition.id": "3",
        })  # fmt: skip
    # cust-a processed 2, 0, 1 (2 went ahead of both); cust-b in order.
    for n, at in ((2, 50), (0, 49), (1, 48), (3, 40), (4, 39), (5, 38)):
        shop.process(f"ord-{n}", now - at * SECOND)
    document = world.request(shop.spans)
    world.store(world.traces_batch(document, project.id))
    settle()
    assert findings(project) == {("out_of_order", "orders", "payments"): ["ord-2"]}
    # The same export again (a retry): nothing changes.
    world.store(world.traces_batch(document, project.id))
    settle()
    assert findings(project) == {("out_of_order", "orders", "payments"): ["ord-2"]}
    finding = Finding.objects.get(project=project)
    assert finding.ordering_key == "partition 3 key cust-a"
    assert [e["event_id"] for e in finding.examples[1:]] == ["ord-0", "ord-1"]


def test_consumers_known_only_by_message_id_join_their_publish(project):
    """audit carries only the message id: it is learned as a group of the
    channel, and is judged missing, late and duplicate like the others, also
    when its stages are stored before the publish; a relay that publishes the
    same message id to another topic does not take the consumers over."""
    set_channel(project, "kafka", "orders", deadline_seconds=5)
    now = time.time_ns()
    shop = Shop()
    # The consume stages of ord-0 come first, the publish in a later pass.
    shop.published["ord-0"] = (world.new_trace_id(), world.new_span_id())
    shop.process_by_id("ord-0", now - 99 * SECOND)
    shop.process_by_id("ord-0", now - 97 * SECOND)
    shop.store(project.id)
    settle()
    assert findings(project) == {("duplicate", "orders", "audit"): ["ord-0"]}
    for n in range(6):
        shop.publish(f"ord-{n}", now - (100 - n) * SECOND)
        shop.process(f"ord-{n}", now - (99 - n) * SECOND)  # payments, with the context
    for n in (1, 2):
        shop.process_by_id(f"ord-{n}", now - (99 - n) * SECOND)
    shop.process_by_id("ord-4", now - 80 * SECOND)  # after its 5 s deadline
    shop.process_by_id("ord-5", now - 94 * SECOND, error="timeout")
    shop.process_by_id("ord-5", now - 93 * SECOND)
    # A relay republishes ord-1 to `audit-copy` with the same message id.
    relay = Shop("audit-copy")
    relay.publish("ord-1", now - 90 * SECOND)
    relay.process_by_id("ord-1", now - 89 * SECOND, group="archive")
    shop.store(project.id)
    relay.store(project.id)
    settle()
    assert findings(project) == {
        ("duplicate", "orders", "audit"): ["ord-0"],
        ("missing", "orders", "audit"): ["ord-3"],
        ("late", "orders", "audit"): ["ord-4"],
    }
    late = Finding.objects.get(project=project, kind="late")
    assert 15_000 < late.delay_ms < 17_000
    # Judged again from scratch, the same.
    Finding.objects.all().delete()
    PassState.objects.all().delete()
    settle()
    assert findings(project) == {
        ("duplicate", "orders", "audit"): ["ord-0"],
        ("missing", "orders", "audit"): ["ord-3"],
        ("late", "orders", "audit"): ["ord-4"],
    }


@pytest.fixture
def troubled(project):
    """payments: ord-1 processed twice; ord-2 failed three times then dead-lettered.
    shipping (learned from ord-0..ord-2): never handles ord-3 and handles ord-4 late."""
    set_channel(project, "kafka", "orders", deadline_seconds=5)
    now = time.time_ns()
    shop = Shop()
    for n in range(5):
        shop.publish(f"ord-{n}", now - (100 - n) * SECOND)
        shop.process(f"ord-{n}", now - (99 - n) * SECOND)
    shop.process("ord-1", now - 90 * SECOND)
    for k in range(3):
        shop.process("ord-2", now - (98 - k) * SECOND, error="card declined")
    shop.process("ord-2", now - 94 * SECOND, **{"eventscope.stage": "deadlettered"})
    for n in (0, 1, 2):
        shop.process(f"ord-{n}", now - (99 - n) * SECOND, group="shipping")
    shop.process("ord-4", now - 80 * SECOND, group="shipping")
    shop.store(project.id)
    settle()
    return shop


EXPECTED = {
    ("duplicate", "orders", "payments"): ["ord-1"],
    ("poison", "orders", "payments"): ["ord-2"],
    ("missing", "orders", "shipping"): ["ord-3"],
    ("late", "orders", "shipping"): ["ord-4"],
}


def test_the_api_lists_findings_per_kind_channel_and_group(client, viewer, troubled, project):
    assert findings(project) == EXPECTED
    client.force_login(viewer)
    body = client.get("/api/findings?window=1h").json()
    assert body["next_cursor"] is None
    got = {(i["kind"], i["system"], i["channel"], i["group"]): i for i in body["items"]}
    assert {k: v["count"] for k, v in got.items()} == {
        ("duplicate", "kafka", "orders", "payments"): 1,
        ("poison", "kafka", "orders", "payments"): 1,
        ("missing", "kafka", "orders", "shipping"): 1,
        ("late", "kafka", "orders", "shipping"): 1,
    }
    item = got[("duplicate", "kafka", "orders", "payments")]
    assert set(item) >= {"kind", "system", "channel", "group", "count", "examples"}
    example = item["examples"][0]
    assert example["event_id"] == "ord-1" and example["successes"] == 2
    assert len(example["spans"]) == 2 and all(s["span_id"] for s in example["spans"])
    poison = got[("poison", "kafka", "orders", "payments")]["examples"][0]
    assert poison["attempts"] == 4 and poison["deadlettered"] is True
    assert poison["retry_ms"] == pytest.approx(4000, abs=50)
    late = got[("late", "kafka", "orders", "shipping")]["examples"][0]
    assert late["delay_ms"] == pytest.approx(16000, abs=50)

    only = client.get("/api/findings?window=1h&kind=missing").json()["items"]
    assert [(i["kind"], i["examples"][0]["event_id"]) for i in only] == [("missing", "ord-3")]
    first = client.get("/api/findings?window=1h&limit=1").json()
    assert len(first["items"]) == 1 and first["next_cursor"]
    rest = client.get(f"/api/findings?window=1h&limit=10&cursor={first['next_cursor']}").json()
    assert len(rest["items"]) == 3
    assert client.get("/api/findings?window=1h&channel=payments").json()["items"] == []
    # Bad input: a clear 400.
    bad = client.get("/api/findings?kind=lost")
    assert bad.status_code == 400 and "kind" in bad.json()["error"]
    assert client.get("/api/findings?cursor=!!").status_code == 400
    assert client.get("/api/findings?window=2d").status_code == 400


def test_findings_stay_in_their_project(client, troubled, other_viewer, read_token):
    client.force_login(other_viewer)
    assert client.get("/api/findings?window=1h").json()["items"] == []
    token = Client(HTTP_AUTHORIZATION=f"Bearer {read_token}")
    assert len(token.get("/api/findings?window=1h").json()["items"]) == 4


def test_the_delivery_page_the_journey_and_the_flow_edge_show_them(
    client, viewer, editor, troubled, project
):
    client.force_login(viewer)
    page = client.get("/delivery/?window=1h")
    html = page.content.decode()
    assert page.status_code == 200
    assert 'data-area="delivery" aria-current="page"' in html
    assert 'data-channel="orders" data-group="payments"' in html
    assert 'data-channel="orders" data-group="shipping"' in html
    for kind in ("duplicate", "poison", "missing", "late"):
        assert f'<tr data-kind="{kind}">' in html
    assert "ord-3" in html  # the oldest missing event, linked
    # Viewers cannot change settings.
    assert client.post("/delivery/retire", {"system": "kafka", "channel": "orders",
                                            "group": "shipping"}).status_code == 403  # fmt: skip

    trace, _ = troubled.published["ord-1"]
    journey = client.get(f"/traces/{trace}").content.decode()
    assert 'id="delivery-badges"' in journey and "duplicate · payments" in journey

    edges = client.get("/api/flow?window=1h").json()["edges"]
    payments = next(e for e in edges if e["target"] == "service:payments")
    assert payments["delivery"] == {
        "duplicate": 1, "missing": 0, "late": 0, "out_of_order": 0, "poison": 1,
    }  # fmt: skip

    client.force_login(editor)
    answer = client.post(
        "/delivery/retire", {"system": "kafka", "channel": "orders", "group": "shipping"}
    )
    assert answer.status_code == 302
    assert ("missing", "orders", "shipping") not in findings(project)
    unknown = {"system": "kafka", "channel": "orders", "group": "nobody"}
    assert client.post("/delivery/retire", unknown).status_code == 404
    engine.run_pass()  # a retired group stays unexpected
    assert ("missing", "orders", "shipping") not in findings(project)
    bad = client.post(
        "/delivery/channel", {"system": "kafka", "channel": "orders", "deadline_seconds": "-3"}
    )
    assert bad.status_code == 302
    assert "from 1 to 604800" in client.get("/delivery/").content.decode()


def test_alert_kinds_fire_on_findings(troubled, project):
    rules = {
        kind: AlertRule.objects.create(
            project=project, name=kind, kind=kind, params={"threshold": 0}, for_seconds=0
        )
        for kind in ("duplicates", "missing_events", "out_of_order")
    }
    for rule in rules.values():
        evaluate_rule(rule.pk)
    firing = {a.rule.kind: (a.labels, a.value) for a in Alert.objects.filter(state="firing")}
    assert firing["duplicates"] == (
        {"project": project.slug, "system": "kafka", "channel": "orders", "group": "payments"},
        1.0,
    )
    assert firing["missing_events"][0]["group"] == "shipping"
    assert "out_of_order" not in firing


def test_a_week_counted_from_hourly_counts_is_exact(project):
    """Most of a week is read from the hourly counts the database keeps of
    the findings: after inserts, updates and deletes they agree with counting
    the findings themselves, per group, kind and trend bucket."""
    import random

    from django.utils import timezone

    from dashboard.delivery import queries

    rnd = random.Random(15)
    until = timezone.now()
    since = until - dt.timedelta(days=7)

    def finding(n):
        kind = rnd.choice(queries.KINDS)
        return Finding(
            project=project, kind=kind, system="kafka", channel=rnd.choice(["orders", "refunds"]),
            group=rnd.choice(["payments", "shipping"]), event_key=n.to_bytes(8, "big"),
            event_time=since + dt.timedelta(seconds=rnd.uniform(-3600, 7 * 86400 + 3600)),
            successes=rnd.choice([2, 3]) if kind == "duplicate" else 1, examples=[],
        )  # fmt: skip

    Finding.objects.bulk_create([finding(n) for n in range(1500)])
    Finding.objects.filter(group="shipping", kind="missing", channel="orders").delete()
    Finding.objects.filter(pk__in=Finding.objects.order_by("pk").values("pk")[:200]).update(
        event_time=F("event_time") + dt.timedelta(minutes=97)
    )
    Finding.objects.bulk_create([finding(n) for n in range(2000, 2300)])

    span = (until - since).total_seconds() / queries.TREND_BUCKETS
    expected: dict = {}
    extra: dict = {}
    for f in Finding.objects.filter(project=project, event_time__gte=since, event_time__lt=until):
        b = min(int((f.event_time - since).total_seconds() // span), queries.TREND_BUCKETS - 1)
        trend = expected.setdefault((f.channel, f.group, f.kind), [0] * queries.TREND_BUCKETS)
        trend[b] += 1
        if f.kind == "duplicate":
            extra[(f.channel, f.group)] = extra.get((f.channel, f.group), 0) + f.successes - 1
    assert len(queries._split(since, until)[0]) > 120  # most hours from the hourly counts
    rows, groups = queries.overview(project.id, since, until)
    got = {
        (r["channel"], r["group"], kind): r["trend"][kind]
        for r in rows
        for kind in queries.KINDS
        if r["counts"][kind]
    }
    assert got == expected
    assert {(r["channel"], r["group"]): r["extra"] for r in rows} == extra
    # GET /api/findings counts the same, whole hours from the hourly counts.
    items, _ = queries.grouped(project.id, since, until, queries.Filters(), limit=500)
    assert {(i["channel"], i["group"], i["kind"]): i["count"] for i in items} == {
        k: sum(v) for k, v in expected.items()
    }
    in_window = Finding.objects.filter(project=project, event_time__gte=since, event_time__lt=until)
    for item in items:
        times = sorted(
            f.event_time
            for f in in_window.filter(
                kind=item["kind"], channel=item["channel"], group=item["group"]
            )
        )
        assert item["first_seen"] == times[0].isoformat().replace("+00:00", "Z")
        assert item["last_seen"] == times[-1].isoformat().replace("+00:00", "Z")
    # A window given in another time zone (half an hour off UTC) counts the same.
    offset = dt.timezone(dt.timedelta(hours=5, minutes=30))
    again, _ = queries.overview(project.id, since.astimezone(offset), until.astimezone(offset))
    assert [r["trend"] for r in again] == [r["trend"] for r in rows]
    assert sum(g["count"] for g in groups) == sum(map(sum, expected.values()))
