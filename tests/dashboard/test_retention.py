"""Retention of every table that grows with use, against the real PostgreSQL: old rows
go, recent ones and everything still in use stay."""

import asyncio
import datetime as dt

import pytest
from django.contrib.sessions.backends.db import SessionStore
from django.contrib.sessions.models import Session
from django.utils import timezone

from collector.brokers import poller
from collector.brokers.models import BrokerState
from dashboard import retention, worker_tasks
from dashboard.alerts.models import Alert, AlertRule, Attempt, Delivery, State, Webhook
from dashboard.replays.models import Replay

NOW = timezone.now()
DAY = dt.timedelta(days=1)


def ago(days: float) -> dt.datetime:
    return NOW - days * DAY


@pytest.fixture
def webhook(project):
    return Webhook.objects.create(project=project, name="ops", url="https://hooks.example.com/x")


@pytest.fixture
def rule(project, webhook):
    return AlertRule.objects.create(project=project, name="lag", kind="lag", params={})


def alert(rule, state, started, resolved=None, fingerprint=None) -> Alert:
    return Alert.objects.create(
        project=rule.project,
        rule=rule,
        fingerprint=fingerprint or f"{state[:3]}{started.timestamp():.0f}",
        state=state,
        started_at=started,
        last_seen_at=resolved or started,
        resolved_at=resolved,
    )


def delivery(webhook, created, status, give_up=None, attempts=2, of_alert=None) -> Delivery:
    row = Delivery.objects.create(
        project=webhook.project,
        webhook=webhook,
        alert=of_alert,
        event="firing",
        message_id=Delivery.new_message_id(),
        body="{}",
        status=status,
        created_at=created,
        give_up_at=give_up or created + DAY,
    )
    for n in range(attempts):
        Attempt.objects.create(
            delivery=row, at=created + n * dt.timedelta(minutes=1), status_code=500, duration_ms=1
        )
    return row


def replay(project, requested) -> Replay:
    return Replay.objects.create(
        project=project,
        event_id="o-1",
        source="/orders",
        event_time=requested,
        webhook_name="ops",
        requested_by="ed",
        requested_at=requested,
        status="delivered",
    )


def session(expires: dt.datetime) -> str:
    store = SessionStore()
    store["user"] = "ana"
    store.create()
    Session.objects.filter(session_key=store.session_key).update(expire_date=expires)
    return store.session_key


@pytest.mark.django_db(transaction=True)
def test_a_pass_purges_old_history_and_keeps_recent_and_open_rows(settings, project, webhook, rule):
    settings.HISTORY_RETENTION_DAYS = 30
    old_resolved = alert(rule, State.RESOLVED, ago(50), resolved=ago(45))
    recent_resolved = alert(rule, State.RESOLVED, ago(50), resolved=ago(10))
    long_firing = alert(rule, State.FIRING, ago(60), fingerprint="still-firing")
    old_delivered = delivery(webhook, ago(40), "delivered", of_alert=old_resolved)
    old_failed = delivery(webhook, ago(40), "failed", of_alert=long_firing)
    abandoned = delivery(webhook, ago(40), "pending", give_up=ago(39))
    still_retrying = delivery(webhook, ago(40), "pending", give_up=NOW + DAY)
    recent = delivery(webhook, ago(2), "delivered", of_alert=recent_resolved)
    recent_of_old_alert = delivery(webhook, ago(1), "failed", of_alert=old_resolved)
    old_replay, recent_replay = replay(project, ago(31)), replay(project, ago(29))
    expired, live = session(NOW - dt.timedelta(minutes=1)), session(NOW + DAY)

    report = retention.purge(NOW)

    assert set(Alert.objects.values_list("pk", flat=True)) == {
        recent_resolved.pk, long_firing.pk
    }  # fmt: skip
    assert set(Delivery.objects.values_list("pk", flat=True)) == {
        still_retrying.pk, recent.pk, recent_of_old_alert.pk
    }  # fmt: skip
    assert set(Attempt.objects.values_list("delivery_id", flat=True)) == {
        still_retrying.pk, recent.pk, recent_of_old_alert.pk
    }  # fmt: skip
    recent_of_old_alert.refresh_from_db()
    assert recent_of_old_alert.alert_id is None  # the record stays, its alert went
    assert list(Replay.objects.values_list("pk", flat=True)) == [recent_replay.pk]
    assert list(Session.objects.values_list("session_key", flat=True)) == [live]
    assert report.deleted == {
        "alerts_delivery": 3,
        "alerts_attempt": 6,
        "alerts_alert": 1,
        "dashboard_replay": 1,
        "django_session": 1,
    }
    assert {old_delivered.pk, old_failed.pk, abandoned.pk, old_replay.pk, expired}.isdisjoint(
        {*Delivery.objects.values_list("pk", flat=True), *Session.objects.values_list("pk")}
    )
    assert retention.purge(NOW).deleted == {}  # nothing left to do


@pytest.mark.django_db(transaction=True)
def test_large_backlogs_go_in_batches(settings, monkeypatch, project, webhook):
    settings.HISTORY_RETENTION_DAYS = 30
    monkeypatch.setattr(retention, "BATCH", 7)
    for n in range(20):
        delivery(webhook, ago(40 + n), "delivered", attempts=1)
        replay(project, ago(40 + n))
    delivery(webhook, ago(1), "delivered", attempts=1)
    report = retention.purge(NOW)
    assert report.deleted["alerts_delivery"] == 20 and report.deleted["dashboard_replay"] == 20
    assert Delivery.objects.count() == 1 and Replay.objects.count() == 0


@pytest.mark.django_db(transaction=True)
def test_brokers_no_longer_polled_are_forgotten_after_the_retention_period(settings, project):
    settings.RETENTION_DAYS = 7
    for source, updated in (("nats://gone:4222", ago(8)), ("nats://here:4222", ago(0.01))):
        BrokerState.objects.create(
            project_id=project.id, source=source, system="nats", updated_at=updated
        )
    poller._prune(None)
    assert list(BrokerState.objects.values_list("source", flat=True)) == ["nats://here:4222"]


@pytest.mark.django_db(transaction=True)
async def test_the_worker_runs_the_retention_pass_until_stopped(settings, project):
    from asgiref.sync import sync_to_async

    settings.HISTORY_RETENTION_DAYS = 30
    await sync_to_async(replay)(project, ago(40))
    assert worker_tasks.TASKS["retention"] == "dashboard.retention:run"
    stop = asyncio.Event()
    task = asyncio.create_task(retention.run(stop, interval=60))
    for _ in range(200):
        if not await sync_to_async(Replay.objects.exists)():
            break
        await asyncio.sleep(0.05)
    stop.set()
    await asyncio.wait_for(task, 10)
    assert not await sync_to_async(Replay.objects.exists)()
