"""The connection counts of a pool's processes and the rule that evens them out
(the pool itself is tested in test_processes)."""

import pytest

from collector import balance


@pytest.fixture
def slots(tmp_path):
    path = str(tmp_path / "connections")
    balance.make_slots(path, 3)
    return [balance.Connections(path, index) for index in range(3)]


def test_each_process_sees_the_counts_of_all(slots):
    first, second, third = slots
    for _ in range(4):
        first.opened()
    second.opened()
    first.closed()
    assert third.counts() == [3, 1, 0]


def test_a_process_over_its_even_share_lets_one_go_at_a_time(slots, monkeypatch):
    now = [100.0]
    monkeypatch.setattr(balance.time, "monotonic", lambda: now[0])
    first, second, third = slots
    for _ in range(5):
        first.opened()
    second.opened()
    third.opened()
    # 7 over 3 processes: a share is 3, and the first holds 5.
    assert first.over_share()
    assert not first.over_share()  # not again before the interval
    now[0] += balance.SHED_INTERVAL_S
    assert first.over_share()
    assert not second.over_share() and not third.over_share()
    # The connection it let go comes back to the second: 4, 2 and 1.
    first.closed()
    second.opened()
    now[0] += balance.SHED_INTERVAL_S
    assert first.over_share()
    # Then to the third: 3, 2 and 2 is as even as 7 connections go.
    first.closed()
    third.opened()
    now[0] += balance.SHED_INTERVAL_S
    assert not any(process.over_share() for process in slots)


def test_a_restarted_process_starts_from_no_connections(tmp_path):
    path = str(tmp_path / "connections")
    balance.make_slots(path, 2)
    before = balance.Connections(path, 1)
    before.opened()
    before.opened()
    after = balance.Connections(path, 1)  # the replacement of a process that died
    assert after.counts() == [0, 0]


def test_outside_a_pool_nothing_is_counted_or_let_go(monkeypatch):
    monkeypatch.delenv(balance.FILE_ENV, raising=False)
    monkeypatch.setattr(balance, "_connections", None)
    assert balance.configure() is None
    balance.opened()
    assert not balance.let_one_go()
