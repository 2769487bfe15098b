"""The OBD link's decisions on a fake clock: row timing, silence, trip end, probing a parked
car, stale bounds. No adapter, no thread, no sleep."""

from __future__ import annotations

import pytest

from eccm.clock import FakeClock
from eccm.obd.plan import fast_max_age, slow_max_age
from eccm.obd.policy import (
    RATE_FACTS_INTERVAL,
    SILENT_PROBE_INTERVAL,
    LinkPolicy,
    Outage,
    Reconnection,
)

INTERVAL = 0.2
TRIP_END = 10.0
CAP = 60.0
SLOW = 5.0


def make(clock: FakeClock, interval: float = INTERVAL) -> LinkPolicy:
    return LinkPolicy(interval, TRIP_END, CAP, SLOW, clock.monotonic())


def run_until_due(policy: LinkPolicy, clock: FakeClock) -> None:
    """Waits as the link does (rate facts included), on the fake clock, until a round is due."""
    while True:
        policy.facts_due(clock.monotonic())
        wait = policy.wait(clock.monotonic(), float("inf"))
        if wait is None:
            return
        clock.advance(wait)


def answered_round(policy: LinkPolicy, clock: FakeClock, took: float = 0.05) -> float:
    run_until_due(policy, clock)
    start = clock.monotonic()
    clock.advance(took)
    policy.answered(start, clock.monotonic())
    return start


def silent_round(policy: LinkPolicy, clock: FakeClock, took: float = 0.0) -> tuple[float, bool]:
    run_until_due(policy, clock)
    start = clock.monotonic()
    clock.advance(took)
    return start, policy.silent(start, clock.monotonic())


def test_a_round_is_due_at_connection() -> None:
    clock = FakeClock()
    policy = make(clock)
    assert policy.wait(clock.monotonic(), float("inf")) is None
    assert policy.lately


def test_rows_every_sample_interval_on_their_grid() -> None:
    clock = FakeClock()
    policy = make(clock)
    t0 = clock.monotonic()
    starts = [answered_round(policy, clock, took=0.03 * (i % 3)) for i in range(10)]
    # Rounds of different durations do not shift the grid.
    assert starts == pytest.approx([t0 + i * INTERVAL for i in range(10)])


def test_a_round_that_overran_starts_the_next_at_once_and_skips_missed_rows() -> None:
    clock = FakeClock()
    policy = make(clock)
    t0 = clock.monotonic()
    answered_round(policy, clock, took=0.05)
    start = answered_round(policy, clock, took=0.5)  # the row at t0+0.2 took 0.5 s
    assert start == pytest.approx(t0 + INTERVAL)
    # Not a burst to catch up: the next row comes after the overrun, at once.
    assert policy.next_row == pytest.approx(t0 + 2 * INTERVAL)
    assert policy.wait(clock.monotonic(), float("inf")) is None
    policy.answered(clock.monotonic(), clock.monotonic())
    assert policy.next_row == pytest.approx(clock.monotonic())


def test_the_wait_ends_early_for_queued_requests_and_rate_facts() -> None:
    clock = FakeClock()
    policy = make(clock, interval=1.0)
    now = clock.monotonic()
    assert policy.facts_due(now)
    assert not policy.facts_due(now)
    answered_round(policy, clock, took=0.1)
    now = clock.monotonic()
    assert policy.wait(now, float("inf")) == pytest.approx(0.9)
    assert policy.wait(now, now + 0.3) == pytest.approx(0.3)
    # A request due now still waits a little: never a busy loop.
    assert policy.wait(now, now) == pytest.approx(0.001)


def test_rate_facts_once_per_interval() -> None:
    clock = FakeClock()
    policy = make(clock)
    due = []
    for _ in range(50):
        due.append(policy.facts_due(clock.monotonic()))
        clock.advance(0.1)
    assert sum(due) == 5
    assert RATE_FACTS_INTERVAL == 1.0


def test_silence_probes_once_a_second_before_the_timeout() -> None:
    clock = FakeClock()
    policy = make(clock)
    start, end = silent_round(policy, clock, took=0.3)
    assert not end
    assert not policy.lately
    assert policy.next_row == pytest.approx(start + max(INTERVAL, SILENT_PROBE_INTERVAL))


def test_silence_ends_the_trip_after_trip_end_timeout_exactly_once() -> None:
    clock = FakeClock()
    policy = make(clock)
    last = answered_round(policy, clock, took=0.0)
    ends = []
    while clock.monotonic() < last + 200:
        start, end = silent_round(policy, clock)
        ends.append((start - last, end))
    # The first silent round at TRIP_END_TIMEOUT or later ends it, and only that one.
    first_past = next(at for at, _ in ends if at >= TRIP_END)
    assert [at for at, end in ends if end] == [first_past]
    assert first_past < TRIP_END + SILENT_PROBE_INTERVAL


def test_an_answer_starts_a_new_count_of_silence() -> None:
    clock = FakeClock()
    policy = make(clock)
    answered_round(policy, clock)
    while not silent_round(policy, clock)[1]:
        pass
    last = answered_round(policy, clock, took=0.0)
    ends = [(start - last, end) for start, end in (silent_round(policy, clock) for _ in range(40))]
    assert [at for at, end in ends if end] == [next(at for at, _ in ends if at >= TRIP_END)]


def test_a_car_silent_from_the_connection_counts_from_the_connection() -> None:
    clock = FakeClock()
    policy = make(clock)
    t0 = clock.monotonic()
    while True:
        start, end = silent_round(policy, clock)
        if end:
            break
    assert TRIP_END <= start - t0 < TRIP_END + SILENT_PROBE_INTERVAL


def test_a_parked_car_is_probed_ever_less_often_up_to_the_cap() -> None:
    clock = FakeClock()
    policy = make(clock)
    answered_round(policy, clock)
    gaps = []
    previous = None
    for _ in range(40):
        start, _ = silent_round(policy, clock)
        if previous is not None:
            gaps.append(round(start - previous, 6))
        previous = start
    past = gaps[gaps.index(SILENT_PROBE_INTERVAL * 2) - 1 :]
    assert past[:8] == [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, CAP, CAP]
    assert max(gaps) == CAP
    assert policy.probe_cap == CAP


def test_probing_resets_when_the_car_answers() -> None:
    clock = FakeClock()
    policy = make(clock)
    answered_round(policy, clock)
    for _ in range(30):
        silent_round(policy, clock)
    assert policy.next_row - clock.monotonic() == pytest.approx(CAP)
    start = answered_round(policy, clock, took=0.05)
    assert policy.lately
    assert policy.next_row == pytest.approx(start + INTERVAL)
    # The next silence starts again at one probe a second, and backs off from the base.
    start, _ = silent_round(policy, clock)
    assert policy.next_row == pytest.approx(start + SILENT_PROBE_INTERVAL)


def test_the_probe_cap_is_never_below_the_silent_probe_interval() -> None:
    clock = FakeClock()
    policy = LinkPolicy(INTERVAL, TRIP_END, 0.1, SLOW, clock.monotonic())
    assert policy.probe_cap == SILENT_PROBE_INTERVAL


def test_slow_sample_interval_spaces_the_probes_too() -> None:
    clock = FakeClock()
    policy = LinkPolicy(5.0, 1.0, CAP, SLOW, clock.monotonic())
    start, end = silent_round(policy, clock, took=2.0)
    assert end
    assert policy.next_row == pytest.approx(start + 5.0)


def test_nothing_to_read_waits_for_the_slow_batch_or_a_second() -> None:
    clock = FakeClock()
    policy = make(clock)
    now = clock.monotonic()
    policy.unasked(now, now + 3.0)
    assert policy.next_row == now + 3.0
    policy.unasked(now, None)
    assert policy.next_row == now + SILENT_PROBE_INTERVAL


def test_stale_bounds_follow_the_measured_round() -> None:
    clock = FakeClock()
    policy = make(clock)
    # Before any round: the bounds of SAMPLE_INTERVAL alone.
    first = policy.bounds(slow_cycle=SLOW)
    assert first.fast == fast_max_age(INTERVAL, 0.0)
    assert first.slow == slow_max_age(SLOW, SLOW, first.fast)
    # A car whose reads of a row take 1.2 s (one value per request): the bound widens.
    answered_round(policy, clock, took=1.2)
    assert policy.round_time == pytest.approx(1.2)
    wide = policy.bounds(slow_cycle=SLOW)
    assert wide.fast == pytest.approx(fast_max_age(INTERVAL, 1.2))
    assert wide.fast > first.fast
    # Rounds become fast again: the smoothed round shrinks, and the bound with it.
    for _ in range(30):
        answered_round(policy, clock, took=0.05)
    assert policy.round_time == pytest.approx(0.05, abs=0.01)
    assert policy.bounds(slow_cycle=SLOW).fast == pytest.approx(fast_max_age(INTERVAL, 0.05))
    # A slow pass longer than OBD_SLOW_INTERVAL widens the slow bound.
    long = policy.bounds(slow_cycle=20.0)
    assert long.slow == pytest.approx(slow_max_age(SLOW, 20.0, long.fast))


def test_a_row_bound_comes_from_the_rounds_before_it() -> None:
    clock = FakeClock()
    policy = make(clock)
    answered_round(policy, clock, took=0.05)
    before = policy.bounds(slow_cycle=SLOW)
    # The long round is measured only once reported: its own row keeps the earlier bound.
    run_until_due(policy, clock)
    start = clock.monotonic()
    clock.advance(2.0)
    assert policy.bounds(slow_cycle=SLOW) == before
    policy.answered(start, clock.monotonic())
    assert policy.bounds(slow_cycle=SLOW).fast > before.fast


def test_the_query_time_is_measured_and_kept_across_connections() -> None:
    clock = FakeClock()
    policy = make(clock)
    first = policy.query_time
    for _ in range(40):
        policy.request_took(0.25)
    assert policy.query_time == pytest.approx(0.25, abs=0.001)
    assert first != policy.query_time
    policy.connected(clock.monotonic())
    assert policy.query_time == pytest.approx(0.25, abs=0.001)
    # 0.2 s rows with 0.1 s left: no room, but one slow request is still read.
    now = clock.monotonic()
    assert policy.slow_budget(now - 0.1, now) == 1
    policy.request_took(0.0)
    for _ in range(60):
        policy.request_took(0.01)
    assert policy.slow_budget(now, now) == 19 or policy.slow_budget(now, now) == 20


def test_a_new_connection_resets_the_silence() -> None:
    clock = FakeClock()
    policy = make(clock)
    for _ in range(30):
        silent_round(policy, clock)
    policy.connected(clock.monotonic())
    assert policy.lately
    assert policy.wait(clock.monotonic(), float("inf")) is None
    start, end = silent_round(policy, clock)
    assert not end
    assert policy.next_row == pytest.approx(start + SILENT_PROBE_INTERVAL)


def test_reconnection_tries_at_once_then_backs_off_to_the_cap() -> None:
    retry = Reconnection(cap=8.0)
    assert retry.delay(0.0) == 0.0
    delays = []
    for i in range(8):
        retry.failed(float(i))
        delays.append(retry.delay(0.0))
    assert delays == [0.5, 1.0, 2.0, 4.0, 8.0, 8.0, 8.0, 8.0]
    # Jitter adds up to a quarter, never past the cap.
    assert retry.delay(0.99) == 8.0


def test_a_failed_connection_is_news_once_per_outage() -> None:
    retry = Reconnection(cap=60.0)
    news = [retry.failed(100.0 + i) for i in range(5)]
    assert news == [True, False, False, False, False]
    assert retry.outage == Outage(100.0, 5)
    assert retry.connected() == Outage(100.0, 5)
    assert retry.outage is None
    assert retry.delay(0.0) == 0.0
    assert retry.connected() is None


def test_a_lost_connection_is_reported_by_the_link_and_its_retries_counted() -> None:
    retry = Reconnection(cap=60.0)
    retry.connected()
    retry.lost(200.0)
    assert retry.delay(0.0) == 0.5
    # The loss was said already: the failed tries after it are not news.
    assert not retry.failed(201.0)
    assert not retry.failed(202.0)
    assert retry.connected() == Outage(200.0, 2)


def test_a_cap_below_the_base_bounds_the_first_wait_too() -> None:
    retry = Reconnection(cap=0.2)
    retry.failed(0.0)
    assert retry.delay(0.0) == 0.2


def test_a_round_reads_slow_values_only_after_answered_fast_ones() -> None:
    clock = FakeClock()
    policy = make(clock)
    now = clock.monotonic()
    # The fast values went unanswered: a silent car is not asked for more.
    assert policy.slow_limit(now, now, has_fast=True, fast_answered=False) == 0
    # Answered, or no fast values at all: as many as fit before the next row.
    fits = policy.slow_limit(now, now, has_fast=True, fast_answered=True)
    assert fits == int(INTERVAL / policy.query_time)
    assert policy.slow_limit(now, now, has_fast=False, fast_answered=False) == fits
    # Past the next row already: one all the same, so slow values are still read.
    assert policy.slow_limit(now, now + 1.0, has_fast=True, fast_answered=True) == 1


def test_round_end_publishes_an_answered_round_with_the_bounds_before_it() -> None:
    clock = FakeClock()
    policy = make(clock)
    run_until_due(policy, clock)
    start = clock.monotonic()
    before = policy.bounds(slow_cycle=SLOW)
    clock.advance(1.2)
    end = policy.round_end(start, clock.monotonic(), SLOW, asked=True, answered=True, slow_due=None)
    assert end.row == before and not end.trip_ends
    assert policy.round_time == pytest.approx(1.2)  # the next row's bound follows it
    assert policy.wait(clock.monotonic(), float("inf")) is None  # overran: next at once


def test_round_end_of_a_silent_car_ends_the_trip_once_and_probes_slower() -> None:
    clock = FakeClock()
    policy = make(clock)
    ends = []
    while clock.monotonic() < 1000.0 + TRIP_END + 5.0:
        run_until_due(policy, clock)
        start = clock.monotonic()
        end = policy.round_end(start, start, SLOW, asked=True, answered=False, slow_due=None)
        assert end.row is None
        ends.append((start, end.trip_ends))
    assert [at for at, ended in ends if ended] == [
        next(at for at, _ in ends if at - 1000.0 >= TRIP_END)
    ]
    assert not policy.lately


def test_round_end_with_nothing_asked_waits_for_the_next_slow_group() -> None:
    clock = FakeClock()
    policy = make(clock)
    now = clock.monotonic()
    end = policy.round_end(now, now, SLOW, asked=False, answered=False, slow_due=now + 0.7)
    assert end.row is None and not end.trip_ends
    assert policy.next_row == now + 0.7
