"""The share of the adapter's time that on-demand requests may take (pure, no clock needed:
times are plain numbers)."""

from __future__ import annotations

import pytest

from eccm.obd.dtc_poller import READ_TIMEOUT
from eccm.obd.share import AdapterShare


def test_a_request_that_fits_before_the_next_row_runs_free() -> None:
    share = AdapterShare(0.0, share=0.05, burst=0.02, first_guess=0.05)
    for _ in range(10):  # as many as fit: idle time costs logging nothing
        turn = share.turn(1.0, next_row=1.2, kind="read VIN")
        assert turn.run and not turn.charged
        share.ran("read VIN", 1.0, 1.05, next_row=1.2)
    assert share.tokens(1.05) == pytest.approx(0.02)


def test_beyond_idle_time_one_charged_request_per_row_and_a_bounded_share() -> None:
    share = AdapterShare(0.0, share=0.05, burst=0.02, first_guess=0.05)
    first = share.turn(10.0, next_row=10.0, kind="read VIN")  # a row is due: no idle time
    assert first.run and first.charged
    share.ran("read VIN", 10.0, 10.1, next_row=10.0)
    # In debt by 0.08 s: the next waits until it is paid back at 5 % of the clock.
    second = share.turn(10.1, next_row=10.1, kind="read VIN")
    assert not second.run and second.wait == pytest.approx(0.08 / 0.05)
    share.row()
    assert not share.turn(11.0, next_row=11.0, kind="read VIN").run
    assert share.turn(11.8, next_row=11.8, kind="read VIN").run


def test_one_charged_request_between_two_rows_even_with_time_in_hand() -> None:
    share = AdapterShare(0.0, share=0.5, burst=1.0, first_guess=0.01)
    assert share.turn(5.0, next_row=5.0, kind="x").charged
    share.ran("x", 5.0, 5.01, next_row=5.0)
    turn = share.turn(5.01, next_row=5.0, kind="x")
    assert not turn.run and turn.wait == 0.0  # after the row that is due now
    share.row()
    assert share.turn(5.05, next_row=5.05, kind="x").run


def test_over_a_long_run_charged_time_stays_within_the_share() -> None:
    share = AdapterShare(0.0, share=0.05, burst=0.02, first_guess=0.03)
    now, charged = 0.0, 0.0
    while now < 600.0:  # rows back to back every 25 ms, a request always waiting
        turn = share.turn(now, next_row=now, kind="read VIN")
        if turn.run:
            share.ran("read VIN", now, now + 0.03, next_row=now)
            charged += 0.03
            now += 0.03
        now += 0.025  # the row
        share.row()
    assert charged <= 0.05 * 600.0 + 0.02 + 0.03


def test_the_estimate_learns_the_longest_duration_and_decays_slowly() -> None:
    share = AdapterShare(0.0, first_guess=0.05)
    share.ran("read VIN", 0.0, 0.2, next_row=10.0)
    assert share.estimate("read VIN") == pytest.approx(0.2)
    share.ran("read VIN", 1.0, 1.1, next_row=10.0)
    assert share.estimate("read VIN") == pytest.approx(0.18)
    # Too long for the idle time left: charged instead.
    assert share.turn(9.9, next_row=10.0, kind="read VIN").charged
    assert share.estimate("dtc read") == 0.05


def test_retry_hint_is_never_zero() -> None:
    share = AdapterShare(0.0)
    assert share.retry_after(0.0) == 0.1
    assert share.retry_after(1.234) == 1.2


def test_one_long_request_costs_a_bounded_wait() -> None:
    share = AdapterShare(0.0, share=0.03, burst=0.02, max_debt=0.1)
    share.ran("dtc read", 0.0, 3.0, next_row=0.0)  # a car stuck for 3 s
    share.row()
    turn = share.turn(3.0, next_row=3.0, kind="read VIN")
    assert not turn.run and turn.wait == pytest.approx(0.1 / 0.03)


@pytest.mark.parametrize("took", [0.5, 1.0, 1.4])
def test_a_client_looping_a_slow_request_keeps_90_percent_of_the_rows(took: float) -> None:
    """A DTC read or a multi-frame VIN on a K-line car takes 0.5 to 1 s; a client that loops
    it must still leave logging 90 % of the adapter's time with the default share, rows back
    to back (no idle time to run it free)."""
    share = AdapterShare(0.0)
    now, charged, span = 0.0, 0.0, 600.0
    while now < span:
        if share.turn(now, next_row=now, kind="dtc read").run:
            share.ran("dtc read", now, now + took, next_row=now)
            charged += took
            now += took
        now += 0.2  # the row
        share.row()
    assert charged <= 0.1 * span, charged / span


def test_after_a_stuck_request_a_dtc_read_still_starts_within_its_timeout() -> None:
    share = AdapterShare(0.0)
    share.ran("dtc read", 0.0, 5.0, next_row=0.0)  # a car stuck for 5 s
    share.row()
    turn = share.turn(5.0, next_row=5.0, kind="dtc read")
    assert not turn.run and turn.wait < READ_TIMEOUT  # the poller's (and DTC_TIMEOUT)
