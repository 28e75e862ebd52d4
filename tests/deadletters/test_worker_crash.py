"""A redrive survives the worker being killed -9 in the middle: the next worker
takes the job over and the original queue still receives every message
exactly once."""

import collections
import subprocess
import sys
import time

import pytest

from dashboard.deadletters.models import Redrive
from tests.deadletters.conftest import RABBIT_API, redrive
from tests.test_commands import ROOT, command_env

pytestmark = [pytest.mark.brokers, pytest.mark.django_db(transaction=True)]
N = 300


def start_worker(log_path, brokers: str) -> subprocess.Popen:
    with open(log_path, "ab") as log:
        return subprocess.Popen(
            [sys.executable, "manage.py", "worker"],
            cwd=ROOT,
            env=command_env(EVENTSCOPE_BROKERS=brokers, EVENTSCOPE_LOG_LEVEL="WARNING"),
            stdout=log,
            stderr=subprocess.STDOUT,
        )


def wait_for(check, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.1)
    raise AssertionError(f"{what} within {timeout} s")


def consumed_exactly_once(ids: list[str], got: list) -> None:
    counts = collections.Counter(p.message_id for p, _ in got)
    assert sorted(counts) == sorted(ids), "lost or foreign messages"
    assert max(counts.values()) == 1, [k for k, v in counts.items() if v > 1]


def test_killing_the_worker_mid_redrive_neither_loses_nor_duplicates(
    brokers, rabbit, editor_client, tmp_path
):
    ids = rabbit.dead_letter(N)
    job = redrive(editor_client, system="rabbitmq", dead_letter=rabbit.dlq, rate_per_s=100)
    urls = f"{RABBIT_API}?project=shop"
    worker = start_worker(tmp_path / "worker.log", urls)
    try:
        wait_for(
            lambda: Redrive.objects.get(pk=job).moved >= 60, 60, "the redrive did not get going"
        )
        worker.kill()  # SIGKILL: no clean-up of any kind
        worker.wait(10)
        stopped = Redrive.objects.get(pk=job)
        assert stopped.state == "running" and stopped.moved < N
        assert 0 < rabbit.depth(rabbit.dlq) < N

        worker = start_worker(tmp_path / "worker.log", urls)
        finished = wait_for(
            lambda: (r := Redrive.objects.get(pk=job)).finished and r, 90, "no finish"
        )
    finally:
        worker.kill()
        worker.wait(10)
    assert (finished.state, finished.moved, finished.failed, finished.total) == ("done", N, 0, N)
    assert finished.runs == 2
    assert rabbit.depth(rabbit.dlq) == 0
    consumed_exactly_once(ids, rabbit.consume_all(rabbit.source))


def test_streams_survive_a_killed_worker_too(stream_world, editor_client, tmp_path):
    w = stream_world
    ids = w.dead_letter(N)
    job = redrive(editor_client, system=w.system, dead_letter=w.dlq, rate_per_s=100)
    urls = f"{w.url}?project=shop"
    worker = start_worker(tmp_path / "worker.log", urls)
    try:
        wait_for(
            lambda: Redrive.objects.get(pk=job).moved >= 60, 60, "the redrive did not get going"
        )
        worker.kill()
        worker.wait(10)
        assert Redrive.objects.get(pk=job).state == "running"
        assert 0 < w.depth() < N
        worker = start_worker(tmp_path / "worker.log", urls)
        finished = wait_for(
            lambda: (r := Redrive.objects.get(pk=job)).finished and r, 90, "no finish"
        )
    finally:
        worker.kill()
        worker.wait(10)
    assert (finished.state, finished.moved, finished.failed) == ("done", N, 0)
    assert w.depth() == 0
    counts = collections.Counter(m["ce-id"] for m in w.consumed())
    assert sorted(counts) == sorted(ids) and max(counts.values()) == 1
