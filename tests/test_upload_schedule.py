"""When the uploader runs: the pure UploadSchedule on a fake clock (no thread, no sleep)."""

from __future__ import annotations

import pytest

from eccm.clock import FakeClock
from eccm.upload.schedule import FAILURE_BACKOFF_CAP, UploadSchedule


def fresh(clock: FakeClock, interval: float = 60, jitter: float = 15) -> UploadSchedule:
    return UploadSchedule.starting(interval, jitter, clock.monotonic())


def test_the_first_run_is_at_start() -> None:
    clock = FakeClock()
    s = fresh(clock)
    assert s.is_due(clock.monotonic()) and s.wait(clock.monotonic()) == 0
    assert s.consecutive_failures == 0


def test_after_a_good_run_the_next_is_the_interval_plus_a_random_jitter() -> None:
    clock = FakeClock()
    s = fresh(clock).recorded(failed=False).planned(clock.monotonic(), 0.5)
    assert s.wait(clock.monotonic()) == 67.5
    clock.advance(67.4)
    assert not s.is_due(clock.monotonic())
    assert s.wait(clock.monotonic()) == pytest.approx(0.1)
    clock.advance(0.1)
    assert s.is_due(clock.monotonic())
    # The jitter spans 0..S3_SYNC_JITTER.
    assert fresh(clock).planned(0.0, 0.0).due == 60
    assert fresh(clock).planned(0.0, 0.999).due == pytest.approx(74.985)


def test_a_day_of_good_runs_keeps_the_interval() -> None:
    clock = FakeClock()
    s = fresh(clock, interval=60, jitter=0)
    runs = 0
    for _ in range(24 * 60 * 6):  # a day in 10 s steps
        if s.is_due(clock.monotonic()):
            runs += 1
            s = s.recorded(failed=False).planned(clock.monotonic(), 0.3)
        clock.advance(10)
    assert runs == 24 * 60  # one at start, then one a minute


def test_failures_back_off_up_to_five_minutes_and_never_give_up() -> None:
    clock = FakeClock()
    s = fresh(clock)
    waits = []
    for _ in range(20):
        s = s.recorded(failed=True).planned(clock.monotonic(), 0.999)
        wait = s.wait(clock.monotonic())
        waits.append(round(wait, 6))
        clock.advance(wait)
        assert s.is_due(clock.monotonic())
    assert s.consecutive_failures == 20
    assert waits[0] == pytest.approx(60, rel=0.01)  # the first retry after one interval
    assert waits == sorted(waits)
    assert max(waits) <= FAILURE_BACKOFF_CAP
    assert waits[-1] == pytest.approx(FAILURE_BACKOFF_CAP, rel=0.01)
    # Spread over the upper half of the backoff, so a fleet at the cap is not in lockstep.
    assert s.planned(clock.monotonic(), 0.0).wait(clock.monotonic()) == FAILURE_BACKOFF_CAP / 2


def test_a_good_run_ends_the_backoff() -> None:
    clock = FakeClock()
    s = fresh(clock)
    for _ in range(5):
        s = s.recorded(failed=True)
    s = s.recorded(failed=False).planned(clock.monotonic(), 0.5)
    assert s.consecutive_failures == 0
    assert s.wait(clock.monotonic()) == 67.5


def test_a_run_outside_the_thread_counts_but_does_not_move_the_next_run() -> None:
    # `eccm upload` / run_once: its result feeds the backoff; only the thread plans.
    clock = FakeClock()
    s = fresh(clock).recorded(failed=False).planned(clock.monotonic(), 0.0)
    s = s.recorded(failed=True)
    assert s.consecutive_failures == 1
    assert s.wait(clock.monotonic()) == 60


def test_a_wake_runs_now_and_the_next_run_counts_from_its_end() -> None:
    clock = FakeClock()
    s = fresh(clock, interval=3600, jitter=0).planned(clock.monotonic(), 0.0)
    clock.advance(10)
    assert not s.is_due(clock.monotonic())
    s = s.woken(clock.monotonic())  # a file closed
    assert s.is_due(clock.monotonic())
    clock.advance(2)  # the run took 2 s
    s = s.recorded(failed=False).planned(clock.monotonic(), 0.0)
    assert s.wait(clock.monotonic()) == 3600


def test_a_wake_never_postpones_a_run_already_due() -> None:
    clock = FakeClock()
    s = fresh(clock)
    clock.advance(30)
    assert s.woken(clock.monotonic()).due == s.due


def test_an_unexpected_crash_waits_the_longest_backoff() -> None:
    clock = FakeClock()
    s = fresh(clock).crashed(clock.monotonic())
    assert s.wait(clock.monotonic()) == FAILURE_BACKOFF_CAP


def test_a_wall_clock_step_neither_postpones_nor_hurries_a_run() -> None:
    clock = FakeClock()
    s = fresh(clock).recorded(failed=False).planned(clock.monotonic(), 0.0)
    clock.set_wall(clock.time() - 86_400)  # NTP or GNSS sets the Pi's clock back a day
    assert s.wait(clock.monotonic()) == 60
    clock.set_wall(clock.time() + 10 * 86_400)  # ... or forward
    assert not s.is_due(clock.monotonic())
    clock.advance(60)
    assert s.is_due(clock.monotonic())
