"""Audit rows cannot be changed or deleted, by the ORM or by SQL, except by
the retention purge of rows past EVENTSCOPE_AUDIT_RETENTION_DAYS."""

import datetime as dt

import pytest
from django.db import DatabaseError, connection, transaction
from django.utils import timezone

from dashboard.audit import retention
from dashboard.audit.models import AppendOnly, AuditEvent
from dashboard.audit.trail import record


def sql(statement, params=()):
    """Run `statement` in a savepoint, so a refusal leaves the test's transaction usable."""
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(statement, params)
        return cursor.rowcount


@pytest.fixture
def event(db):
    return record("token.created", actor="ada", target="read token “x”", ip="192.0.2.1")


def test_postgresql_refuses_update_and_delete(event):
    with pytest.raises(DatabaseError, match="append-only: UPDATE"):
        sql("UPDATE audit_auditevent SET actor = 'mallory' WHERE id = %s", [event.pk])
    with pytest.raises(DatabaseError, match="append-only: DELETE"):
        sql("DELETE FROM audit_auditevent WHERE id = %s", [event.pk])
    # An old row too, without the purge's setting.
    old = AuditEvent(action="logout", actor="ada", time=timezone.now() - dt.timedelta(days=900))
    old.save()
    with pytest.raises(DatabaseError, match="append-only: DELETE"):
        sql("DELETE FROM audit_auditevent WHERE id = %s", [old.pk])
    assert AuditEvent.objects.get(pk=event.pk).actor == "ada"
    assert AuditEvent.objects.count() == 2


def test_the_orm_refuses_changes_before_sql_is_sent(event):
    event.actor = "mallory"
    with pytest.raises(AppendOnly):
        event.save()
    with pytest.raises(AppendOnly):
        event.delete()
    with pytest.raises(AppendOnly):
        AuditEvent.objects.filter(pk=event.pk).update(actor="mallory")
    with pytest.raises(AppendOnly):
        AuditEvent.objects.all().delete()
    assert AuditEvent.objects.get(pk=event.pk).actor == "ada"


def test_the_purge_deletes_only_what_is_past_retention(db, settings):
    settings.AUDIT_RETENTION_DAYS = 30
    now = timezone.now()
    for days in (400, 31, 29, 0):
        AuditEvent(action="logout", actor=f"u{days}", time=now - dt.timedelta(days=days)).save()
    assert retention.purge(now) == 2
    assert sorted(AuditEvent.objects.values_list("actor", flat=True)) == ["u0", "u29"]
    # The permission ends with the purge's transaction.
    with pytest.raises(DatabaseError, match="append-only"):
        sql("DELETE FROM audit_auditevent")


def test_no_cutoff_can_delete_the_last_days_rows(event):
    """A purge handed a wrong cutoff (a clock or setting gone wrong) still
    cannot erase what just happened."""
    future = (timezone.now() + dt.timedelta(days=1)).isoformat()
    with pytest.raises(DatabaseError, match="append-only: DELETE"):
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute("SELECT set_config('eventscope.audit_purge_before', %s, true)", [future])
            cursor.execute("DELETE FROM audit_auditevent")
    assert AuditEvent.objects.filter(pk=event.pk).exists()


def test_the_worker_runs_the_purge():
    from collector import runtime
    from dashboard.worker_tasks import TASKS

    assert TASKS["audit_retention"] == "dashboard.audit.retention:run"
    loaded = runtime.load_tasks({"audit_retention": TASKS["audit_retention"]})
    assert loaded["audit_retention"] is retention.run
