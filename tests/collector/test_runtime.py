"""Process composition: loading background tasks and leading them."""

import asyncio

import pytest
from django.core.exceptions import ImproperlyConfigured

from collector import runtime
from collector.db import conninfo


def test_a_task_whose_module_does_not_exist_stops_the_start():
    with pytest.raises(ImproperlyConfigured) as raised:
        runtime.load_tasks(
            {"maintenance": "collector.maintenance:run", "later": "collector.not_built_yet:run"}
        )
    assert str(raised.value) == (
        "background task 'later': module collector.not_built_yet does not exist"
    )


def test_a_task_whose_function_does_not_exist_stops_the_start():
    with pytest.raises(ImproperlyConfigured, match="'maintenance': .* has no 'go'"):
        runtime.load_tasks({"maintenance": "collector.maintenance:go"})


def test_every_configured_task_loads():
    from dashboard.worker_tasks import TASKS

    assert list(runtime.load_tasks(TASKS)) == list(TASKS)


def test_a_task_that_fails_on_import_for_another_reason_is_not_skipped(tmp_path, monkeypatch):
    (tmp_path / "task_that_raises.py").write_text("raise RuntimeError('bad settings')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(RuntimeError, match="bad settings"):
        runtime.load_tasks({"broken": "task_that_raises:run"})


def test_a_module_importing_a_missing_dependency_is_not_skipped(tmp_path, monkeypatch):
    (tmp_path / "task_with_bad_import.py").write_text("import no_such_dependency_xyz\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ModuleNotFoundError):
        runtime.load_tasks({"bad": "task_with_bad_import:run"})


async def test_the_leader_runs_tasks_and_a_second_one_waits(telemetry_db):
    runs = {"a": 0, "b": 0}

    def task(name):
        async def run(stop):
            runs[name] += 1
            await stop.wait()

        return run

    stop_a, stop_b = asyncio.Event(), asyncio.Event()
    state_a, state_b = runtime.Leadership(), runtime.Leadership()
    dsn = conninfo()
    leader_a = asyncio.create_task(runtime.lead({"t": task("a")}, stop_a, dsn, state_a, poll=0.1))
    await _until(lambda: state_a.leading)
    leader_b = asyncio.create_task(runtime.lead({"t": task("b")}, stop_b, dsn, state_b, poll=0.1))
    await asyncio.sleep(0.5)
    assert state_a.leading and not state_b.leading
    assert runs == {"a": 1, "b": 0}

    stop_a.set()  # a clean stop releases the lock; the other takes over
    await asyncio.wait_for(leader_a, 5)
    await _until(lambda: state_b.leading)
    # Leading comes just before its tasks start: give them their turn.
    await _until(lambda: runs["b"] == 1)
    stop_b.set()
    await asyncio.wait_for(leader_b, 5)
    assert state_b.running == []


async def test_a_crashing_task_is_restarted(monkeypatch):
    monkeypatch.setattr(runtime, "TASK_RESTART_SECONDS", 0.01)
    calls = []

    async def flaky(stop):
        calls.append(1)
        if len(calls) < 3:
            raise RuntimeError("boom")
        await stop.wait()

    stop = asyncio.Event()
    task = asyncio.create_task(runtime._keep_running("flaky", flaky, stop))
    await _until(lambda: len(calls) == 3)
    stop.set()
    await asyncio.wait_for(task, 2)


async def _until(condition, timeout=10.0):
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not reached")
        await asyncio.sleep(0.02)
