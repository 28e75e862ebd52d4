"""Alert state through real evaluations, with time driven explicitly, and the
notifications a real local receiver gets."""

import base64
import datetime as dt
import hashlib
import hmac

import pytest

from dashboard.alerts import sender
from dashboard.alerts.evaluate import evaluate_all, evaluate_rule
from dashboard.alerts.models import Alert, AlertRule, Delivery, Webhook
from dashboard.alerts.rules import fingerprint
from tests.alerts.conftest import insert_rollup, insert_stages

S = dt.timedelta(seconds=1)


def make_rule(project, webhooks=(), **fields):
    defaults = {
        "name": "Orders failing",
        "kind": "failed_events",
        "params": {
            "threshold": 0,
            "window_seconds": 3600,
            "service": "",
            "system": "",
            "channel": "",
            "group": "",
        },
        "for_seconds": 60,
        "repeat_seconds": 600,
    }
    rule = AlertRule.objects.create(project=project, **{**defaults, **fields})
    rule.webhooks.set(webhooks)
    return rule


def verify(secret: str, received) -> bool:
    """The Standard Webhooks check, written from the spec, on the raw body."""
    key = base64.b64decode(secret.removeprefix("whsec_"))
    signed = b"%s.%s.%s" % (
        received.headers["webhook-id"].encode(),
        received.headers["webhook-timestamp"].encode(),
        received.body,
    )
    expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    offered = [s.split(",", 1)[1] for s in received.headers["webhook-signature"].split(" ")]
    return any(hmac.compare_digest(expected, sig) for sig in offered)


@pytest.fixture
def failing(project, t0):
    insert_stages(
        project.id,
        [
            (t0 - 10 * S, "failed", "billing", "kafka", "orders", "billing-group"),
            (t0 - 5 * S, "deadlettered", "billing", "kafka", "orders", "billing-group"),
            (t0 - 5 * S, "processed", "billing", "kafka", "orders", "billing-group"),
        ],
    )


def test_it_fires_once_repeats_and_resolves_once(project, receiver, failing, t0):
    hook = Webhook.objects.create(project=project, name="ops", url=receiver.url)
    rule = make_rule(project, [hook])

    evaluate_rule(rule.pk, t0)
    alert = Alert.objects.get(rule=rule)
    assert alert.state == "pending"
    assert alert.labels == {
        "project": "shop",
        "service": "billing",
        "system": "kafka",
        "channel": "orders",
        "group": "billing-group",
    }
    assert alert.fingerprint == fingerprint(rule.pk, alert.labels)
    evaluate_rule(rule.pk, t0 + 59 * S)
    assert sender.deliver_due(t0 + 59 * S) == 0

    evaluate_rule(rule.pk, t0 + 60 * S)  # held for_seconds: firing
    evaluate_rule(rule.pk, t0 + 120 * S)  # still firing, not repeated yet
    assert sender.deliver_due(t0 + 120 * S) == 1

    def events():
        return list(Delivery.objects.order_by("pk").values_list("event", flat=True))

    assert evaluate_rule(rule.pk, t0 + 659 * S)["repeat"] == 0  # 1 s short of repeat_seconds
    assert events() == ["firing"]
    assert evaluate_rule(rule.pk, t0 + 660 * S)["repeat"] == 1  # repeat_seconds after the notice
    assert events() == ["firing", "repeat"]
    evaluate_rule(rule.pk, t0 + 700 * S)
    assert events() == ["firing", "repeat"]
    assert sender.deliver_due(t0 + 700 * S) == 1

    # The failures leave the one-hour window: resolved, told once.
    evaluate_rule(rule.pk, t0 + 3600 * S)
    evaluate_rule(rule.pk, t0 + 3700 * S)
    assert sender.deliver_due(t0 + 3700 * S) == 1

    bodies = [r.json() for r in receiver.requests]
    assert [b["type"] for b in bodies] == ["alert.firing", "alert.repeat", "alert.resolved"]
    assert {b["data"]["alert"]["fingerprint"] for b in bodies} == {alert.fingerprint}
    assert bodies[0]["data"]["alert"]["value"] == 2.0
    assert bodies[0]["data"]["rule"] == {
        "id": rule.pk,
        "name": "Orders failing",
        "kind": "failed_events",
    }
    assert all(verify(hook.secret, r) for r in receiver.requests)
    alert.refresh_from_db()
    assert alert.state == "resolved"
    assert alert.firing_at == t0 + 60 * S
    assert alert.resolved_at == t0 + 3600 * S


def test_the_signature_is_over_the_raw_body_and_fails_for_another_secret(
    project, receiver, failing, t0
):
    hook = Webhook.objects.create(project=project, name="ops", url=receiver.url)
    rule = make_rule(project, [hook], for_seconds=0)
    evaluate_rule(rule.pk, t0)
    sender.deliver_due(t0)
    (received,) = receiver.requests
    assert received.headers["content-type"] == "application/json"
    assert received.headers["webhook-id"].startswith("msg_")
    assert abs(int(received.headers["webhook-timestamp"]) - t0.timestamp()) < 5
    assert verify(hook.secret, received)
    other = Webhook(secret="whsec_" + base64.b64encode(b"x" * 32).decode())
    assert not verify(other.secret, received)
    tampered = type(received)(received.path, received.headers, received.body + b" ")
    assert not verify(hook.secret, tampered)


def test_a_condition_that_clears_while_pending_notifies_nobody(project, receiver, failing, t0):
    hook = Webhook.objects.create(project=project, name="ops", url=receiver.url)
    rule = make_rule(project, [hook], for_seconds=600)
    evaluate_rule(rule.pk, t0)
    evaluate_rule(rule.pk, t0 + 3600 * S)  # gone before for_seconds... of holding
    assert not Alert.objects.filter(rule=rule).exists()
    assert not Delivery.objects.exists()


def test_a_muted_rule_tracks_state_and_tells_what_was_missed_when_unmuted(
    project, receiver, failing, t0
):
    hook = Webhook.objects.create(project=project, name="ops", url=receiver.url)
    rule = make_rule(project, [hook], for_seconds=0, muted_until=t0 + 300 * S)
    evaluate_rule(rule.pk, t0)
    assert Alert.objects.get(rule=rule).state == "firing"
    assert not Delivery.objects.exists()
    evaluate_rule(rule.pk, t0 + 301 * S)
    assert list(Delivery.objects.values_list("event", flat=True)) == ["firing"]


def test_an_alert_that_fired_before_a_mute_is_announced_as_resolved_during_it(
    project, receiver, failing, t0
):
    hook = Webhook.objects.create(project=project, name="pager", url=receiver.url)
    rule = make_rule(project, [hook], for_seconds=0)
    evaluate_rule(rule.pk, t0)
    sender.deliver_due(t0)
    # The on-call mutes the rule while working on it; the failures then stop.
    AlertRule.objects.filter(pk=rule.pk).update(muted_until=t0 + 7200 * S)
    evaluate_rule(rule.pk, t0 + 1800 * S)
    assert sender.deliver_due(t0 + 1800 * S) == 0  # still firing, muted: no repeat
    evaluate_rule(rule.pk, t0 + 3600 * S)  # out of the window: resolved, still muted
    assert sender.deliver_due(t0 + 3600 * S) == 1
    # The mute ends; nothing is left to tell.
    evaluate_rule(rule.pk, t0 + 7300 * S)
    assert sender.deliver_due(t0 + 7300 * S) == 0
    assert [r.json()["type"] for r in receiver.requests] == ["alert.firing", "alert.resolved"]
    assert Alert.objects.get(rule=rule).state == "resolved"


def test_an_alert_that_fires_and_ends_within_a_mute_is_never_announced(
    project, receiver, failing, t0
):
    hook = Webhook.objects.create(project=project, name="pager", url=receiver.url)
    rule = make_rule(project, [hook], for_seconds=0, muted_until=t0 + 7200 * S)
    evaluate_rule(rule.pk, t0)
    evaluate_rule(rule.pk, t0 + 3600 * S)
    evaluate_rule(rule.pk, t0 + 7300 * S)
    assert Alert.objects.get(rule=rule).state == "resolved"
    assert not Delivery.objects.exists()


def test_disabling_a_muted_rule_tells_receivers_its_alert_resolved(project, receiver, failing, t0):
    hook = Webhook.objects.create(project=project, name="pager", url=receiver.url)
    rule = make_rule(project, [hook], for_seconds=0)
    evaluate_rule(rule.pk, t0)
    AlertRule.objects.filter(pk=rule.pk).update(muted_until=t0 + 7200 * S, enabled=False)
    evaluate_all(t0 + S)
    assert sorted(Delivery.objects.values_list("event", flat=True)) == ["firing", "resolved"]


def test_disabling_a_rule_resolves_its_alerts(project, receiver, failing, t0):
    hook = Webhook.objects.create(project=project, name="ops", url=receiver.url)
    rule = make_rule(project, [hook], for_seconds=0)
    evaluate_rule(rule.pk, t0)
    AlertRule.objects.filter(pk=rule.pk).update(enabled=False)
    evaluate_all(t0 + S)
    assert Alert.objects.get(rule=rule).state == "resolved"
    assert sorted(Delivery.objects.values_list("event", flat=True)) == ["firing", "resolved"]


def test_alertmanager_and_slack_formats(project, receiver, failing, t0, settings):
    settings.PUBLIC_URL = "https://eventscope.example.com"
    am = Webhook.objects.create(project=project, name="am", url=receiver.url, format="alertmanager")
    slack = Webhook.objects.create(
        project=project, name="chat", url=receiver.url + "/slack", format="slack"
    )
    rule = make_rule(
        project,
        [am, slack],
        for_seconds=0,
        params={"threshold": 1, "window_seconds": 3600, "service": "billing"},
    )
    evaluate_rule(rule.pk, t0)
    sender.deliver_due(t0)
    evaluate_rule(rule.pk, t0 + 3700 * S)
    sender.deliver_due(t0 + 3700 * S)
    am_bodies = [r.json() for r in receiver.requests if r.path == "/hook"]
    slack_bodies = [r.json() for r in receiver.requests if r.path == "/hook/slack"]
    firing, resolved = am_bodies
    assert firing["version"] == "4"
    assert firing["status"] == "firing" and resolved["status"] == "resolved"
    assert firing["receiver"] == "am"
    assert firing["groupLabels"] == {"alertname": "Orders failing"}
    assert firing["commonLabels"]["channel"] == "orders"
    assert firing["truncatedAlerts"] == 0
    assert set(firing) >= {"groupKey", "commonAnnotations", "externalURL", "alerts"}
    (alert,) = firing["alerts"]
    assert set(alert) == {
        "status",
        "labels",
        "annotations",
        "startsAt",
        "endsAt",
        "generatorURL",
        "fingerprint",
    }
    assert alert["endsAt"] == "0001-01-01T00:00:00Z"
    # externalURL is the base of the UI (Alertmanager's own address there); the
    # alert's page is its generatorURL.
    assert firing["externalURL"] == "https://eventscope.example.com"
    assert alert["generatorURL"].startswith("https://eventscope.example.com/alerts/?project=shop#")
    assert alert["startsAt"] == t0.isoformat().replace("+00:00", "Z")
    assert resolved["alerts"][0]["endsAt"] == (t0 + 3700 * S).isoformat().replace("+00:00", "Z")
    assert firing["groupKey"] == resolved["groupKey"]
    assert "webhook-signature" not in receiver.requests[0].headers
    assert [set(b) for b in slack_bodies] == [{"text"}, {"text"}]
    assert "FIRING" in slack_bodies[0]["text"] and "Orders failing" in slack_bodies[0]["text"]
    assert "RESOLVED" in slack_bodies[1]["text"]


def test_slack_text_cannot_ping_a_channel_or_forge_a_link(project, receiver, t0, settings):
    settings.PUBLIC_URL = "https://eventscope.example.com"
    # Service and channel names come from telemetry: anyone who can send events picks them.
    insert_stages(
        project.id,
        [(t0 - S, "failed", "<!channel> pay", "kafka", "<https://evil.example|login>", "g&co")],
    )
    slack = Webhook.objects.create(project=project, name="chat", url=receiver.url, format="slack")
    rule = make_rule(project, [slack], for_seconds=0, name="Orders <!here> & refunds")
    evaluate_rule(rule.pk, t0)
    sender.deliver_due(t0)
    (received,) = receiver.requests
    text = received.json()["text"]
    assert "<!" not in text and "<https://evil" not in text
    assert "Orders &lt;!here&gt; &amp; refunds" in text
    assert "service=&lt;!channel&gt; pay" in text and "group=g&amp;co" in text
    # Our own link is still Slack markup.
    assert text.endswith("|Open in Eventscope>")
    assert "\n<https://eventscope.example.com/alerts/?project=shop#alert-" in text


def test_error_rate_per_edge_and_per_service(project, t0):
    minute = t0 - 60 * S
    insert_rollup(
        project.id,
        minute,
        "channel:kafka:orders",
        "service:billing",
        "consume",
        "g1",
        count=100,
        errors=20,
    )
    insert_rollup(
        project.id,
        minute,
        "channel:kafka:refunds",
        "service:billing",
        "consume",
        "g1",
        count=100,
        errors=0,
    )
    insert_rollup(
        project.id,
        minute,
        "channel:kafka:orders",
        "service:mail",
        "consume",
        "g2",
        count=5,
        errors=5,
    )  # below min_events
    rule = make_rule(
        project, kind="error_rate", for_seconds=0, params={"threshold": 0.05, "window_seconds": 300}
    )
    evaluate_rule(rule.pk, t0)
    (alert,) = Alert.objects.filter(rule=rule)
    assert alert.labels["channel"] == "orders" and alert.labels["service"] == "billing"
    assert alert.value == pytest.approx(0.2)
    by_service = make_rule(
        project, kind="error_rate", for_seconds=0, params={"threshold": 0.05, "by": "service"}
    )
    evaluate_rule(by_service.pk, t0)
    (alert,) = Alert.objects.filter(rule=by_service)
    assert alert.labels == {"project": "shop", "service": "billing"}
    assert alert.value == pytest.approx(0.1)


def test_throughput_drop_alerts_on_a_quiet_channel(project, t0):
    insert_rollup(
        project.id, t0 - 3 * 3600 * S, "service:shop", "channel:kafka:orders", "publish", count=50
    )
    insert_rollup(
        project.id, t0 - 60 * S, "service:shop", "channel:kafka:busy", "publish", count=50
    )
    rule = make_rule(
        project,
        kind="throughput_drop",
        for_seconds=0,
        params={"min_events": 10, "window_seconds": 600},
    )
    evaluate_rule(rule.pk, t0)
    (alert,) = Alert.objects.filter(rule=rule)
    assert alert.labels == {"project": "shop", "system": "kafka", "channel": "orders"}
    assert alert.value == 0


def test_dead_letters_count_only_dead_lettered_stages(project, failing, t0):
    rule = make_rule(project, kind="dead_letters", for_seconds=0)
    evaluate_rule(rule.pk, t0)
    assert Alert.objects.get(rule=rule).value == 1


def test_a_broken_rule_keeps_its_alerts_and_records_the_error(project, failing, t0, monkeypatch):
    rule = make_rule(project, for_seconds=0)
    evaluate_rule(rule.pk, t0)
    from dashboard.alerts import rules

    def broken(*args):
        raise RuntimeError("database says no")

    monkeypatch.setattr(rules.FailedEventsKind, "evaluate", broken)
    evaluate_rule(rule.pk, t0 + 60 * S)
    rule.refresh_from_db()
    assert "database says no" in rule.last_error
    assert Alert.objects.get(rule=rule).state == "firing"


def test_alerts_are_scoped_to_their_project(project, other_project, failing, t0):
    rule = make_rule(other_project, for_seconds=0)
    evaluate_rule(rule.pk, t0)
    assert not Alert.objects.exists()


@pytest.fixture
def lagging(project, t0):
    from collector.brokers.models import GroupState

    for channel, group, lag, seconds, status in (
        ("orders", "billing", 5000, 120.0, "warning"),
        ("orders", "mail", 10, 0.5, "ok"),
        ("refunds", "billing", 3000, None, "stalled"),
    ):
        GroupState.objects.create(
            project_id=project.id,
            system="rabbitmq",
            channel=channel,
            consumer_group=group,
            lag=lag,
            lag_seconds=seconds,
            status=status,
            reason="not consuming" if status == "stalled" else "",
            updated_at=t0,
        )


@pytest.mark.parametrize(
    "kind, params, expected",
    [
        ("lag", {"threshold": 1000}, {("orders", "billing"): 5000, ("refunds", "billing"): 3000}),
        ("lag", {"threshold": 1000, "channel": "orders"}, {("orders", "billing"): 5000}),
        ("lag_seconds", {"threshold": 60}, {("orders", "billing"): 120}),
        ("lag_status", {}, {("orders", "billing"): 1, ("refunds", "billing"): 3}),
        ("lag_status", {"statuses": ["stalled"]}, {("refunds", "billing"): 3}),
    ],
)
def test_lag_rules_read_the_current_consumer_lag(project, lagging, t0, kind, params, expected):
    rule = make_rule(project, kind=kind, params=params, for_seconds=0)
    evaluate_rule(rule.pk, t0)
    found = {
        (a.labels["channel"], a.labels["group"]): a.value for a in Alert.objects.filter(rule=rule)
    }
    assert found == expected
    assert all(
        set(a.labels) == {"project", "system", "channel", "group"}
        for a in Alert.objects.filter(rule=rule)
    )


def test_an_error_rate_alert_notifies_its_webhook_with_a_plain_number(project, t0):
    # PostgreSQL sums integers as numeric: the rate must still be a float in the payload.
    insert_rollup(
        project.id, t0 - 60 * S, "channel:kafka:orders", "service:billing", "consume", "g1",
        count=40, errors=10,
    )  # fmt: skip
    hook = Webhook.objects.create(project=project, name="ops", url="https://example.com/h")
    rule = make_rule(
        project, webhooks=[hook], kind="error_rate", for_seconds=0, params={"threshold": 0.05}
    )
    evaluate_rule(rule.pk, t0)
    (alert,) = Alert.objects.filter(rule=rule)
    assert alert.value == pytest.approx(0.25)
    (delivery,) = Delivery.objects.filter(alert=alert)
    assert "0.25" in delivery.body
