"""Issue 10 item 2: one bogus GNSS sentence must never step the clock.

GNSS time is adopted (first anchor or a step) only once several consecutive epochs agree
with each other and with the monotonic clock; a date that a week-rollover correction would
move past a plausible horizon, or that lies too far ahead, gives no time at all.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import logging
import operator
import random

import pytest

from eccm.clock import FakeClock
from eccm.gnss.nmea import NmeaDecoder
from eccm.hub import Hub
from eccm.obd.policy import Bounds
from eccm.obd.publisher import Publisher
from eccm.sample import Layout, Reading
from eccm.timebase import CONFIRM_EPOCHS, TimeBase
from tests.listeners import Events
from tests.nmea_sentences import good_fix

TRUE = 1_795_000_000.0  # 2026-11-18T11:06:40Z
Y2038 = dt.datetime(2038, 11, 21, 11, 6, 40, tzinfo=dt.UTC).timestamp()


fix = good_fix


def epochs(tb: TimeBase, clock: FakeClock, true_at_start: float, n: int) -> None:
    """``n`` good 1 Hz epochs; GNSS time follows the monotonic clock."""
    for _ in range(n):
        clock.advance(1.0)
        tb.observe(fix(clock, true_at_start + clock.monotonic() - 500.0))


def test_a_single_fix_does_not_anchor_the_time_but_consecutive_agreeing_epochs_do() -> None:
    clock = FakeClock(start=TRUE - 10 * 365.25 * 86400, monotonic_start=500.0)
    tb = TimeBase()
    epochs(tb, clock, TRUE, 1)
    assert tb.source == "system", "one fix must not set the time"
    epochs(tb, clock, TRUE, CONFIRM_EPOCHS - 1)
    assert tb.source == "gnss"
    assert tb.stamp(clock.time(), clock.monotonic())[0] == pytest.approx(
        TRUE + clock.monotonic() - 500.0, abs=1e-6
    )


def test_a_lone_bogus_fix_among_good_ones_never_moves_the_stamps(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = FakeClock(start=TRUE - 10 * 365.25 * 86400, monotonic_start=500.0)
    tb = TimeBase()
    epochs(tb, clock, TRUE, CONFIRM_EPOCHS)
    with caplog.at_level(logging.INFO, logger="eccm.timebase"):
        for bogus in (Y2038, TRUE + 42 * 365.25 * 86400, Y2038, TRUE - 86400.0, Y2038):
            clock.advance(0.5)
            tb.observe(fix(clock, bogus + clock.monotonic()))
            expected = TRUE + clock.monotonic() - 500.0
            assert tb.stamp(clock.time(), clock.monotonic())[0] == pytest.approx(expected)
            epochs(tb, clock, TRUE, 1)
    assert not any("stepped" in r.getMessage() for r in caplog.records)


def test_a_real_step_is_followed_once_consecutive_epochs_confirm_it() -> None:
    clock = FakeClock(start=TRUE, monotonic_start=500.0)
    tb = TimeBase()
    epochs(tb, clock, TRUE + 3600.0, CONFIRM_EPOCHS)  # the system clock is an hour behind
    assert tb.offset == pytest.approx(3600.0)
    # The receiver had the wrong hour (bad almanac) and corrects itself for good.
    for i in range(CONFIRM_EPOCHS):
        assert tb.offset == pytest.approx(3600.0), f"stepped after {i} epochs"
        epochs(tb, clock, TRUE, 1)
    assert tb.offset == 0.0 and tb.source == "system"


def test_epochs_that_disagree_with_the_monotonic_clock_are_not_adopted() -> None:
    clock = FakeClock(start=TRUE - 86400.0, monotonic_start=500.0)
    tb = TimeBase()
    # GNSS time runs ten times faster than the monotonic clock: not a clock to trust.
    for i in range(20):
        clock.advance(1.0)
        tb.observe(fix(clock, TRUE + 10.0 * i))
    assert tb.source == "system"


def test_a_mad_receiver_is_logged_once_ignored_then_trusted_again_after_consistent_epochs(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = FakeClock(start=TRUE - 10 * 365.25 * 86400, monotonic_start=500.0)
    tb = TimeBase()
    epochs(tb, clock, TRUE, CONFIRM_EPOCHS)
    rng = random.Random(7)
    caplog.clear()
    with caplog.at_level(logging.DEBUG, logger="eccm.timebase"):
        for _ in range(200):
            clock.advance(0.2)
            tb.observe(fix(clock, rng.uniform(0, 3e9)))
            assert tb.stamp(clock.time(), clock.monotonic())[0] == pytest.approx(
                TRUE + clock.monotonic() - 500.0
            )
    noisy = [r for r in caplog.records if r.levelno >= logging.INFO]
    assert len(noisy) == 1, [r.getMessage() for r in noisy]
    assert "ignored" in noisy[0].getMessage()
    assert tb.rejected >= 200 - CONFIRM_EPOCHS
    # It calms down, on a time a day later than before (a true step): adopted after a few.
    epochs(tb, clock, TRUE + 86400.0, CONFIRM_EPOCHS)
    assert tb.stamp(clock.time(), clock.monotonic())[0] == pytest.approx(
        TRUE + 86400.0 + clock.monotonic() - 500.0
    )


def test_epochs_each_a_little_ahead_of_the_last_do_not_walk_the_time_away(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Found (audit of issue 10 item 2): every epoch 1.9 s ahead of the one before was
    "within the threshold" of the anchor, which followed it at once: 5 Hz of them moved the
    stamps 570 s in a minute, with nothing counted or logged. The anchor follows an
    earlier-looking fix only as far as a fix's latency explains (the threshold)."""
    clock = FakeClock(start=TRUE, monotonic_start=500.0)  # the Pi's clock is right
    tb = TimeBase()
    for _ in range(5):
        clock.advance(0.2)
        tb.observe(fix(clock, TRUE + clock.monotonic() - 500.0))
    lead = 0.0
    with caplog.at_level(logging.INFO, logger="eccm.timebase"):
        for _ in range(300):  # a minute at 5 Hz
            clock.advance(0.2)
            lead += 1.9
            tb.observe(fix(clock, TRUE + clock.monotonic() - 500.0 + lead))
            stamp, source = tb.stamp(clock.time(), clock.monotonic())
            assert abs(stamp - clock.time()) <= 2.0 and source == "system", lead
    assert tb.rejected >= 290
    noisy = [r.getMessage() for r in caplog.records if r.levelno >= logging.INFO]
    assert len(noisy) == 1 and "ignored" in noisy[0], noisy


def test_a_fix_whose_latency_shrank_still_moves_the_anchor_forward_at_once() -> None:
    """What the anchor's forward follow is for: the epochs it was adopted from were read
    late (0.8 s), a later one quickly; the stamps take the earlier-looking time at once."""
    clock = FakeClock(start=TRUE - 86_400.0, monotonic_start=500.0)
    tb = TimeBase()
    for _ in range(CONFIRM_EPOCHS):
        clock.advance(1.0)
        tb.observe(fix(clock, TRUE + clock.monotonic() - 500.0, latency=0.8))
    clock.advance(1.0)
    tb.observe(fix(clock, TRUE + clock.monotonic() - 500.0, latency=0.05))
    expected = TRUE + clock.monotonic() - 500.0 - 0.05
    assert tb.stamp(clock.time(), clock.monotonic())[0] == pytest.approx(expected)
    assert tb.rejected == 0


# ---------------------------------------------------------------- the decoder's dates
def sentence(body: str) -> bytes:
    checksum = functools.reduce(operator.xor, body.encode("ascii"), 0)
    return f"${body}*{checksum:02X}\r\n".encode("ascii")


def rmc(hhmmss: str, ddmmyy: str) -> bytes:
    return sentence(f"GPRMC,{hhmmss}.00,A,4807.038,N,01131.000,E,022.4,084.4,{ddmmyy},,,A")


@pytest.mark.parametrize(
    "ddmmyy",
    [
        "060180",  # the GPS epoch: 3 rollovers would land in 2038-11-21
        "311268",  # pynmea2 reads 2068-12-31
        "010145",  # 2045: after the pivot plus one rollover period
        "010166",  # 1966: before GPS, still before the pivot after every rollover
    ],
)
def test_an_implausible_date_gives_no_time_but_keeps_the_position(
    ddmmyy: str, caplog: pytest.LogCaptureFixture
) -> None:
    decoder = NmeaDecoder(FakeClock())
    with caplog.at_level(logging.WARNING, logger="eccm.gnss.nmea"):
        fixes = decoder.feed(rmc("110640", ddmmyy) + rmc("110641", ddmmyy))
    assert [f.time_utc for f in fixes] == [None, None]
    assert all(f.has_position for f in fixes)
    (warning,) = [r.getMessage() for r in caplog.records]  # once, not per sentence
    assert "ignored" in warning
    assert decoder.rejected_times == 2


def test_a_rejected_date_does_not_lend_the_last_good_date_to_its_epoch() -> None:
    decoder = NmeaDecoder(FakeClock())
    good = decoder.feed(rmc("110640", "181126"))
    bad = decoder.feed(rmc("230000", "060180"))
    assert good[0].time_utc == TRUE
    assert bad[0].time_utc is None


def test_rows_wait_for_the_confirmation_of_a_clock_that_is_off_but_not_for_ever() -> None:
    """While the first epochs confirm that the system clock is off, GNSS-only rows wait
    (settling); epochs that stop carrying a time (dates rejected) must not hold them."""
    clock = FakeClock(start=TRUE - 86_400.0, monotonic_start=500.0)
    tb = TimeBase()
    assert not tb.settling(clock.time(), clock.monotonic())
    epochs(tb, clock, TRUE, CONFIRM_EPOCHS - 1)
    assert tb.settling(clock.time(), clock.monotonic())
    clock.advance(3.0)  # then only timeless fixes: no epoch confirms or denies
    assert not tb.settling(clock.time(), clock.monotonic())
    # a clock that agrees with the receiver never holds a row
    right = FakeClock(start=TRUE, monotonic_start=500.0)
    tb2 = TimeBase()
    epochs(tb2, right, TRUE - 1.0, 1)
    assert not tb2.settling(right.time(), right.monotonic())


def test_a_first_fix_without_a_time_holds_rows_until_its_rmc_but_not_for_ever() -> None:
    """SiRFstarV and Telit send GGA (no date) before RMC: the first fix has a position and
    no time. Rows wait for the RMC, not for ever (a receiver that sends no RMC at all)."""
    clock = FakeClock(start=TRUE - 86_400.0, monotonic_start=500.0)
    tb = TimeBase()
    tb.observe(dataclasses.replace(fix(clock, TRUE), time_utc=None))
    assert tb.settling(clock.time(), clock.monotonic())
    epochs(tb, clock, TRUE, 1)  # its RMC says the clock is off: wait for confirmation
    assert tb.settling(clock.time(), clock.monotonic())
    gga_only = TimeBase()
    gga_only.observe(dataclasses.replace(fix(clock, TRUE), time_utc=None))
    clock.advance(2.5)
    gga_only.observe(dataclasses.replace(fix(clock, TRUE), time_utc=None))
    assert not gga_only.settling(clock.time(), clock.monotonic())


def test_only_epochs_really_ignored_count_as_rejected() -> None:
    """The epochs that confirm a time are adopted, not rejected: STATUS said
    gnss_time_rejected 2 after every normal start."""
    clock = FakeClock(start=TRUE - 86400.0, monotonic_start=500.0)
    tb = TimeBase()
    epochs(tb, clock, TRUE, CONFIRM_EPOCHS)
    assert tb.rejected == 0
    clock.advance(1.0)
    tb.observe(fix(clock, TRUE + 40 * 365.25 * 86400))  # a lone outlier
    epochs(tb, clock, TRUE, 2)  # good epochs again
    assert tb.rejected == 1


def test_a_car_answering_while_epochs_confirm_a_clock_that_is_off_waits_for_them() -> None:
    """A Pi without a real-time clock boots a day behind; its receiver has a fix at once
    (a hot start) and the car answers while the first epochs are being confirmed: its
    rows wait for GNSS time (a few seconds) instead of opening a trip on the wrong date
    that the adoption ends a row later (found: every start made a one-second trip of two
    rows, three days back, with its own file, summary and date partition)."""
    clock = FakeClock(start=TRUE - 86_400.0, monotonic_start=500.0)
    hub = Hub(clock, 2.0, Layout(("RPM",), (), gps=True))
    events = Events()
    hub.add_listener(events)
    publisher = Publisher(hub, clock, 1.0)
    hub.update_fix(fix(clock, TRUE))  # the receiver's first epoch comes first
    for _ in range(4 * CONFIRM_EPOCHS):  # rows every 0.5 s, epochs every 1 s
        clock.advance(0.5)
        if clock.monotonic() % 1.0 == 0.0:
            hub.update_fix(fix(clock, TRUE + clock.monotonic() - 500.0))
        publisher.row(
            {"RPM": Reading(800.0, "revolutions_per_minute", clock.monotonic())}, Bounds(1.0, 3.0)
        )
        if hub.trip is None:
            assert hub.latest_values()["RPM"].value == 800.0  # GET answers meanwhile
    assert events.ends == []
    trips = {s.trip_id for s in events.samples}
    assert len(trips) == 1 and trips.pop().startswith("20261118"), trips
    assert all(s.time_source == "gnss" for s in events.samples)
    assert len(events.samples) >= 2 * CONFIRM_EPOCHS  # rows waited a few seconds only
