"""The alertmanager-push format: Eventscope alerts posted to an Alertmanager's
own API (POST /api/v2/alerts), against Debian's real prometheus-alertmanager,
plus the body shape and the re-send schedule with time driven explicitly."""

import asyncio
import datetime as dt
import json
import shutil
import socket
import subprocess
import threading
import time
import urllib.parse
import urllib.request

import pytest
from django.db import connection

from dashboard.alerts import evaluate, sender
from dashboard.alerts.evaluate import evaluate_rule
from dashboard.alerts.models import AlertRule, Delivery, Webhook
from dashboard.alerts.transports import Notification, push_url, transport_for
from tests.alerts.conftest import Reply, insert_stages
from tests.alerts.test_evaluate import make_rule

S = dt.timedelta(seconds=1)
ALERTMANAGER = shutil.which("prometheus-alertmanager") or "/usr/bin/prometheus-alertmanager"


def parse_time(value: str) -> dt.datetime:
    return dt.datetime.fromisoformat(value.replace("Z", "+00:00"))


# ---- the body ------------------------------------------------------------------


def notification(event, t0, **alert):
    return Notification(
        event=event,
        rule={"id": 7, "name": "Orders failing", "kind": "failed_events"},
        project={"id": 1, "slug": "shop", "name": "Shop"},
        alert={
            "id": 3,
            "fingerprint": "abcd",
            "state": "firing",
            "labels": {"project": "shop", "channel": "orders", "group": "billing"},
            "value": 2.0,
            "summary": "2 failed events on orders",
            "started_at": "2026-01-05T10:00:00Z",
            "resolved_at": None,
            "url": "https://eventscope.example.com/alerts/?project=shop#alert-3",
            **alert,
        },
        time=t0,
    )


def render(event, t0, **alert):
    hook = Webhook(name="am", url="http://am.example.com:9093", format="alertmanager-push")
    return json.loads(transport_for(hook).render(notification(event, t0, **alert)))


def test_a_firing_alert_is_a_postable_alerts_array_with_ends_at_minutes_ahead(settings):
    settings.ALERT_EVALUATION_SECONDS = 15
    t0 = dt.datetime(2026, 1, 5, 10, 3, tzinfo=dt.UTC)
    (alert,) = render("firing", t0)
    assert set(alert) == {"labels", "annotations", "startsAt", "endsAt", "generatorURL"}
    assert alert["labels"] == {
        "alertname": "Orders failing",
        "severity": "warning",
        "project": "shop",
        "channel": "orders",
        "group": "billing",
    }
    assert alert["annotations"] == {"summary": "2 failed events on orders", "value": "2"}
    assert alert["startsAt"] == "2026-01-05T10:00:00Z"
    assert parse_time(alert["endsAt"]) == t0 + 4 * 60 * S
    assert alert["generatorURL"] == "https://eventscope.example.com/alerts/?project=shop#alert-3"


def test_ends_at_covers_four_evaluations_when_they_are_rarer_than_a_minute(settings):
    settings.ALERT_EVALUATION_SECONDS = 120
    t0 = dt.datetime(2026, 1, 5, 10, 3, tzinfo=dt.UTC)
    (alert,) = render("repeat", t0)
    assert parse_time(alert["endsAt"]) == t0 + 8 * 60 * S


def test_a_resolved_alert_ends_when_it_was_resolved():
    t0 = dt.datetime(2026, 1, 5, 10, 9, tzinfo=dt.UTC)
    (alert,) = render("resolved", t0, state="resolved", resolved_at="2026-01-05T10:08:30Z")
    assert alert["endsAt"] == "2026-01-05T10:08:30Z"
    assert alert["labels"]["alertname"] == "Orders failing"


@pytest.mark.parametrize(
    "url, posted",
    [
        ("http://am:9093", "http://am:9093/api/v2/alerts"),
        ("http://am:9093/", "http://am:9093/api/v2/alerts"),
        (
            "https://ops.example.com/alertmanager",
            "https://ops.example.com/alertmanager/api/v2/alerts",
        ),
        ("http://am:9093/api/v2/alerts", "http://am:9093/api/v2/alerts"),
        ("http://am:9093/api/v2/alerts/", "http://am:9093/api/v2/alerts"),
        ("https://u:p@am.example.com/api/v2/alerts", "https://u:p@am.example.com/api/v2/alerts"),
    ],
)
def test_the_url_is_the_base_or_the_alerts_endpoint(url, posted):
    assert push_url(url) == posted


# ---- the schedule, against a local receiver, time driven explicitly ------------


@pytest.fixture
def failing(project, t0):
    insert_stages(project.id, [(t0 - 10 * S, "failed", "billing", "kafka", "orders", "billing")])


def pushes(receiver):
    return [r for r in receiver.requests if r.path.endswith("/api/v2/alerts")]


def test_a_firing_alert_is_re_sent_every_minute_whatever_the_rules_repeat(
    project, receiver, failing, t0, settings
):
    settings.ALERT_EVALUATION_SECONDS = 15
    am = Webhook.objects.create(
        project=project, name="am", url=receiver.url, format="alertmanager-push"
    )
    ops = Webhook.objects.create(project=project, name="ops", url=receiver.url)
    # Never repeat: the JSON receiver hears of it once; Alertmanager must not forget it.
    rule = make_rule(project, [am, ops], for_seconds=0, repeat_seconds=0)
    for second in range(0, 301, 15):
        evaluate_rule(rule.pk, t0 + second * S)
        sender.deliver_due(t0 + second * S)
    times = list(
        Delivery.objects.filter(webhook=am)
        .order_by("created_at")
        .values_list("created_at", flat=True)
    )
    assert times[0] == t0
    assert len(times) >= 6
    assert all(b - a <= 60 * S for a, b in zip(times, times[1:], strict=False))
    assert t0 + 300 * S - times[-1] <= 60 * S
    assert Delivery.objects.filter(webhook=ops).count() == 1
    bodies = [r.json() for r in pushes(receiver)]
    assert len(bodies) == len(times)
    for when, (alert,) in zip(times, bodies, strict=True):
        assert parse_time(alert["endsAt"]) == when + 4 * 60 * S
        assert parse_time(alert["startsAt"]) == t0
    # Condition gone: sent once more, ending now.
    with connection.cursor() as cursor:
        cursor.execute("DELETE FROM collector_stage WHERE project_id = %s", [project.id])
    end = t0 + 310 * S
    evaluate_rule(rule.pk, end)
    sender.deliver_due(end)
    evaluate_rule(rule.pk, end + 60 * S)
    sender.deliver_due(end + 60 * S)
    ((resolved,),) = [r.json() for r in pushes(receiver)][len(times) :]
    assert parse_time(resolved["endsAt"]) == end
    assert Delivery.objects.filter(webhook=ops).count() == 2


def test_pushes_go_on_during_a_mute_only_for_an_alert_already_sent(
    project, receiver, failing, t0, settings
):
    settings.ALERT_EVALUATION_SECONDS = 60
    am = Webhook.objects.create(
        project=project, name="am", url=receiver.url, format="alertmanager-push"
    )
    rule = make_rule(project, [am], for_seconds=0)
    AlertRule.objects.filter(pk=rule.pk).update(muted_until=t0 + 90 * S)
    evaluate_rule(rule.pk, t0)
    assert not Delivery.objects.exists()  # a new alert in a mute is not announced
    evaluate_rule(rule.pk, t0 + 120 * S)
    evaluate_rule(rule.pk, t0 + 180 * S)
    AlertRule.objects.filter(pk=rule.pk).update(muted_until=t0 + 1000 * S)
    evaluate_rule(rule.pk, t0 + 240 * S)
    events = list(Delivery.objects.order_by("created_at").values_list("event", flat=True))
    assert events == ["firing", "repeat", "repeat"]


def test_a_newer_push_replaces_an_older_one_waiting_for_a_retry(project, receiver, failing, t0):
    receiver.script(Reply(503))
    am = Webhook.objects.create(
        project=project, name="am", url=receiver.url, format="alertmanager-push"
    )
    rule = make_rule(project, [am], for_seconds=0)
    evaluate_rule(rule.pk, t0)
    sender.deliver_due(t0)
    first = Delivery.objects.get()
    assert first.status == "pending" and first.attempt_count == 1
    with connection.cursor() as cursor:
        cursor.execute("DELETE FROM collector_stage WHERE project_id = %s", [project.id])
    evaluate_rule(rule.pk, t0 + 20 * S)
    sender.deliver_due(t0 + 3600 * S)
    first.refresh_from_db()
    assert first.status == "failed" and "superseded" in first.last_error
    resolved = Delivery.objects.get(event="resolved")
    assert resolved.status == "delivered"
    # The firing body was tried once (the 503); it never followed the resolve.
    assert [r.json()[0]["endsAt"] for r in pushes(receiver)] == [
        (t0 + 240 * S).isoformat().replace("+00:00", "Z"),
        (t0 + 20 * S).isoformat().replace("+00:00", "Z"),
    ]


def test_the_test_notification_is_a_short_lived_alert(project, receiver, t0):
    from dashboard.alerts.outbox import enqueue, sample_notification

    am = Webhook.objects.create(
        project=project, name="am", url=receiver.url, format="alertmanager-push"
    )
    enqueue(am, sample_notification(am, t0), t0)
    sender.deliver_due(t0)
    ((alert,),) = [r.json() for r in pushes(receiver)]
    assert alert["labels"]["alertname"] == "Test notification"
    assert parse_time(alert["startsAt"]) < parse_time(alert["endsAt"]) <= t0 + 10 * 60 * S


# ---- a real Alertmanager -----------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get_json(url: str):
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.loads(response.read())


@pytest.fixture
def alertmanager(tmp_path):
    """Debian's prometheus-alertmanager on a free loopback port, routing
    everything to a receiver that notifies nobody, clustering off."""
    if not shutil.which(ALERTMANAGER):
        pytest.fail(
            f"{ALERTMANAGER} not found; run scripts/prepare-tests "
            "(apt-get install prometheus-alertmanager)"
        )
    config = tmp_path / "alertmanager.yml"
    config.write_text('route:\n  receiver: "null"\nreceivers:\n  - name: "null"\n')
    port = free_port()
    process = subprocess.Popen(
        [
            ALERTMANAGER,
            f"--config.file={config}",
            f"--storage.path={tmp_path / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--cluster.listen-address=",
        ],
        stdout=subprocess.DEVNULL,
        stderr=(tmp_path / "alertmanager.log").open("wb"),
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                get_json(f"{base}/api/v2/status")
                break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(
                        "alertmanager did not start: " + (tmp_path / "alertmanager.log").read_text()
                    ) from None
                time.sleep(0.2)
        yield base
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture
def worker_loops():
    """The worker's alert evaluation and webhook sender loops, running for real
    on their own thread until the test ends."""
    loop = asyncio.new_event_loop()
    stop = asyncio.Event()

    async def main():
        await asyncio.gather(evaluate.run(stop), sender.run(stop))

    thread = threading.Thread(target=loop.run_until_complete, args=(main(),), daemon=True)
    thread.start()
    yield
    loop.call_soon_threadsafe(stop.set)
    thread.join(15)
    assert not thread.is_alive()


def alerts_in(base: str, alertname: str, **query) -> list[dict]:
    params = urllib.parse.urlencode({"filter": f'alertname="{alertname}"', **query})
    return get_json(f"{base}/api/v2/alerts?{params}")


def wait_for(check, seconds=20):
    deadline = time.monotonic() + seconds
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.2)


def test_a_real_alertmanager_holds_the_alert_while_it_fires_and_drops_it_on_resolve(
    transactional_db, project, settings, alertmanager, worker_loops
):
    settings.ALERT_EVALUATION_SECONDS = 1
    settings.WEBHOOK_ALLOW_PRIVATE = True
    now = dt.datetime.now(dt.UTC)
    insert_stages(project.id, [(now - 10 * S, "failed", "billing", "kafka", "orders", "billing")])
    am = Webhook.objects.create(
        project=project, name="am", url=alertmanager, format="alertmanager-push"
    )
    make_rule(project, [am], name="Orders failing", for_seconds=0)

    def active():
        found = alerts_in(alertmanager, "Orders failing")
        return [a for a in found if a["status"]["state"] == "active"]

    (alert,) = wait_for(active)
    assert alert["labels"] == {
        "alertname": "Orders failing",
        "severity": "warning",
        "project": "shop",
        "service": "billing",
        "system": "kafka",
        "channel": "orders",
        "group": "billing",
    }
    assert alert["annotations"]["summary"]
    assert alert["receivers"] == [{"name": "null"}]
    assert parse_time(alert["endsAt"]) > dt.datetime.now(dt.UTC) + 3 * 60 * S

    with connection.cursor() as cursor:
        cursor.execute("DELETE FROM collector_stage WHERE project_id = %s", [project.id])

    # Resolved alerts leave Alertmanager's list, whatever the state filters say.
    wait_for(
        lambda: (
            not alerts_in(
                alertmanager, "Orders failing", active="true", silenced="true", inhibited="true"
            )
        )
    )
    resolved = Delivery.objects.get(webhook=am, event="resolved")
    assert resolved.status == "delivered"
    (body,) = json.loads(resolved.body)
    assert parse_time(body["endsAt"]) <= dt.datetime.now(dt.UTC)
    assert not alerts_in(alertmanager, "Orders failing", active="false")
