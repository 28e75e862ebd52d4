"""Time lag and Burrow's evaluation rules on hand-made offset histories."""

import pytest

from collector.brokers import lag
from collector.brokers.lag import Point, interpolate_time_lag, partition_status

WINDOW = 600.0
NOW = 10_000.0


# ---- interpolation (kafka-lag-exporter) ----------------------------------------------


def test_it_interpolates_between_the_two_samples_around_the_committed_offset():
    # End offset 100 at t=1000, 200 at t=1100: offset 150 was written at t=1050.
    history = [(1000.0, 100), (1100.0, 200), (1200.0, 300)]
    seconds, extrapolated = interpolate_time_lag(history, 150, now=1200.0)
    assert seconds == pytest.approx(150.0)
    assert extrapolated is False


def test_a_committed_offset_equal_to_a_sample_is_that_samples_time():
    history = [(1000.0, 100), (1100.0, 200), (1200.0, 300)]
    assert interpolate_time_lag(history, 200, now=1200.0) == (pytest.approx(100.0), False)


def test_a_caught_up_consumer_is_zero_seconds_behind():
    history = [(1000.0, 100), (1100.0, 200)]
    assert interpolate_time_lag(history, 200, now=1150.0) == (0.0, False)
    assert interpolate_time_lag(history, 250, now=1150.0) == (0.0, False)


def test_it_extrapolates_before_the_oldest_sample_and_says_so():
    # 1 message/s from the first two points: offset 50 was written at t=950.
    history = [(1000.0, 100), (1100.0, 200), (1200.0, 260)]
    seconds, extrapolated = interpolate_time_lag(history, 50, now=1200.0)
    assert seconds == pytest.approx(250.0)
    assert extrapolated is True


def test_a_flat_history_gives_at_least_the_age_of_the_oldest_sample():
    history = [(1000.0, 500), (1100.0, 500), (1200.0, 500)]
    seconds, extrapolated = interpolate_time_lag(history, 400, now=1200.0)
    assert seconds == pytest.approx(200.0)
    assert extrapolated is True


def test_a_recreated_log_forgets_the_older_history():
    history = [(1000.0, 900), (1100.0, 1000), (1200.0, 10), (1300.0, 110)]
    seconds, extrapolated = interpolate_time_lag(history, 60, now=1300.0)
    assert seconds == pytest.approx(50.0)
    assert extrapolated is False


def test_no_history_gives_no_time_lag():
    assert interpolate_time_lag([], 5, now=1.0) == (None, False)


def test_one_sample_gives_no_time_lag_rather_than_zero():
    # The first poll sees 990 messages waiting: how old they are is unknown.
    assert interpolate_time_lag([(1000.0, 1000)], 10, now=1000.0) == (None, False)
    # ...but a caught-up consumer is zero seconds behind from the first sample.
    assert interpolate_time_lag([(1000.0, 1000)], 1000, now=1000.0) == (0.0, False)


def test_drain_estimate_and_consume_rate():
    points = [Point(0.0, committed_offset=0), Point(30.0, committed_offset=300)]
    rate = lag.consume_rate(points)
    assert rate == pytest.approx(10.0)
    assert lag.drain_seconds(500, rate) == pytest.approx(50.0)
    assert lag.drain_seconds(0, None) == 0.0
    assert lag.drain_seconds(10, 0.0) is None


# ---- Burrow's rules ------------------------------------------------------------------------


def history(*rows, start=NOW - 500, step=100.0, active=None):
    """Points from (committed, lag) pairs, one per `step` seconds, ending before NOW."""
    points = []
    for index, (committed, lag_value) in enumerate(rows):
        t = start + index * step
        points.append(Point(t, committed + lag_value, committed, lag_value, active))
    return points


def test_rule_1_any_zero_lag_in_the_window_is_ok():
    points = history((100, 0), (100, 20), (100, 40), (100, 60))
    assert partition_status(points, NOW, WINDOW)[0] == lag.OK


def test_rule_2_offsets_not_moving_while_the_consumer_is_active_is_stalled():
    points = history((100, 10), (100, 20), (100, 30), (100, 40), active=NOW - 30)
    status, reason = partition_status(points, NOW, WINDOW)
    assert status == lag.STALLED
    assert "stayed at 100" in reason and "lag 40" in reason


def test_rule_3_offsets_moving_but_lag_never_shrinking_is_a_warning():
    points = history((100, 10), (150, 10), (200, 25), (260, 40))
    status, reason = partition_status(points, NOW, WINDOW)
    assert status == lag.WARNING
    assert "10 → 40" in reason


def test_offsets_moving_and_lag_shrinking_is_ok():
    points = history((100, 50), (150, 60), (200, 30), (260, 20))
    assert partition_status(points, NOW, WINDOW) == (lag.OK, "consuming")


def test_rule_4_no_progress_and_no_activity_for_longer_than_the_window_is_stopped():
    # Committed offset last moved 800 s ago; window is 600 s.
    rows = [(90, 5)] + [(100, 10 * n) for n in range(1, 9)]
    points = history(*rows, start=NOW - 900, step=100)
    status, reason = partition_status(points, NOW, WINDOW)
    assert status == lag.STOPPED
    assert "no consumer activity" in reason


def test_no_progress_for_less_than_a_window_is_an_error():
    points = history((100, 10), (100, 20), (100, 30), start=NOW - 500, step=150)
    status, reason = partition_status(points, NOW, WINDOW)
    assert status == lag.ERROR
    assert "has not moved from 100" in reason


def test_activity_before_the_window_does_not_count_as_stalled():
    rows = [(100, 10 * n) for n in range(1, 6)]
    points = history(*rows, start=NOW - 700, step=100, active=NOW - 2000)
    assert partition_status(points, NOW, WINDOW)[0] == lag.STOPPED
    # Not moving for less than a window, with activity long ago: an error, not yet stopped.
    recent = history(*rows[:4], start=NOW - 500, step=100, active=NOW - 2000)
    assert partition_status(recent, NOW, WINDOW)[0] == lag.ERROR


def test_rule_5_offset_going_backwards_is_a_rewind():
    points = history((500, 10), (520, 10), (300, 230))
    status, reason = partition_status(points, NOW, WINDOW)
    assert status == lag.REWIND
    assert "from 520 to 300" in reason


def test_a_rewind_is_reported_even_after_zero_lag_until_the_consumer_catches_up():
    points = history((500, 0), (520, 0), (300, 220))
    assert partition_status(points, NOW, WINDOW)[0] == lag.REWIND
    points.append(Point(NOW - 10, 540, 540, 0))
    assert partition_status(points, NOW, WINDOW) == (lag.OK, "caught up")


def test_a_rewind_the_consumer_has_caught_up_from_is_over():
    # 520 -> 300 (rewind) -> 540 with lag 0 (caught up) -> 560 with lag 5.
    points = history((520, 10), (300, 230), (540, 0), (560, 5))
    assert partition_status(points, NOW, WINDOW) == (lag.OK, "caught up within the window")
    # A rewind after the last catch-up still counts.
    points = history((540, 0), (560, 5), (300, 265))
    assert partition_status(points, NOW, WINDOW)[0] == lag.REWIND


def test_rewind_ranks_with_error():
    assert lag.SEVERITY[lag.REWIND] == lag.SEVERITY[lag.ERROR] > lag.SEVERITY[lag.WARNING]
    partitions = [
        {"partition": "0", "status": lag.WARNING, "reason": "lag grew"},
        {"partition": "1", "status": lag.REWIND, "reason": "went back"},
    ]
    assert lag.group_status(partitions)[0] == lag.REWIND


# ---- a window that is still filling ------------------------------------------------------


def test_two_polls_without_progress_are_not_yet_an_error():
    # 15-second polls: one message slower than a poll must not raise an error.
    points = [Point(NOW - 15, 1010, 1000, 10), Point(NOW, 1012, 1000, 12)]
    status, reason = partition_status(points, NOW, WINDOW)
    assert status == lag.OK
    assert reason.startswith("collecting samples (15s of the 10m window")


def test_status_is_judged_once_the_samples_cover_half_the_window():
    stuck = [Point(NOW - 15 * n, 1000 + 40 - n, 1000, 40 - n) for n in range(40, -1, -1)]
    # 20 polls (285 s): still collecting; 21 polls (300 s): judged.
    assert partition_status(stuck[-20:], NOW, WINDOW)[0] == lag.OK
    assert partition_status(stuck[-21:], NOW, WINDOW)[0] == lag.ERROR
    # Three points are needed however far apart they are.
    sparse = [Point(NOW - 400, 1010, 1000, 10), Point(NOW, 1020, 1000, 20)]
    assert partition_status(sparse, NOW, WINDOW)[1].startswith("collecting samples")


def test_a_short_pause_in_a_filled_window_is_ok():
    # Consuming every poll except for two slow polls in the middle.
    committed = [100 + 10 * n for n in range(20)] + [290, 290] + [300 + 10 * n for n in range(20)]
    points = [
        Point(NOW - 15 * (len(committed) - 1 - i), c + 12, c, 12) for i, c in enumerate(committed)
    ]
    points[20] = Point(points[20].time, 300, 290, 10)
    points[21] = Point(points[21].time, 310, 290, 20)
    assert partition_status(points, NOW, WINDOW) == (lag.OK, "consuming")


# ---- depth alone (no acknowledgement counter) ------------------------------------------------


def depths(*values, active=None):
    return [
        Point(NOW - 100 * (len(values) - 1 - i), None, None, v, active)
        for i, v in enumerate(values)
    ]


def test_depth_that_never_falls_without_consumers_is_stopped():
    status, reason = partition_status(depths(10, 12, 12, 15), NOW, WINDOW)
    assert status == lag.STOPPED
    assert reason == "depth never fell in the window (10 → 15) and no consumer is attached"


def test_depth_that_never_falls_with_consumers_is_an_error():
    status, reason = partition_status(depths(10, 12, 12, 15, active=NOW), NOW, WINDOW)
    assert status == lag.ERROR
    assert "though consumers are attached" in reason


def test_depth_that_falls_at_times_is_ok():
    assert partition_status(depths(10, 30, 20, 25, active=NOW), NOW, WINDOW)[0] == lag.OK
    # ...and a depth-only queue is judged only once its window is filled.
    assert partition_status(depths(10, 12)[-2:], NOW, WINDOW)[0] == lag.OK


def test_unknown_lag_is_ok_not_an_error():
    points = [Point(NOW - 10, 40, None, None)]
    assert partition_status(points, NOW, WINDOW)[0] == lag.OK


def test_the_group_takes_its_worst_partition_and_names_it():
    partitions = [
        {"partition": "0", "status": lag.OK, "reason": "consuming"},
        {"partition": "1", "status": lag.WARNING, "reason": "lag grew"},
        {"partition": "2", "status": lag.STALLED, "reason": "stuck at 7"},
    ]
    status, reason = lag.group_status(partitions)
    assert status == lag.STALLED
    assert reason == "partition 2: stalled: stuck at 7 (+1 more partition not ok)"
    assert lag.group_status([{"partition": "", "status": lag.OK, "reason": ""}]) == (lag.OK, "")
