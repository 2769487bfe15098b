"""GPS week rollover: a receiver whose firmware predates a rollover reports dates 1024 weeks
(19.6 years) early. NmeaDecoder moves them forward from a pivot (no fix is older than this
release), once; gpsd's times are already resolved by gpsd and are taken as they are.
"""

from __future__ import annotations

import datetime as dt
import json
import logging

import pynmea2
import pytest

from eccm.clock import FakeClock
from eccm.gnss.fix import Fix
from eccm.gnss.gpsd import GpsdDecoder
from eccm.gnss.nmea import (
    DATE_HORIZON,
    MAX_ROLLOVERS,
    RELEASE_PIVOT,
    ROLLOVER_HORIZON,
    NmeaDecoder,
    unroll_gps_week,
)
from eccm.hub import Hub
from eccm.sample import Layout, Reading
from eccm.timebase import CONFIRM_EPOCHS, TimeBase
from tests.nmea_sentences import epoch, gga, rmc

WEEKS_1024 = dt.timedelta(weeks=1024)
TRUE = dt.datetime(2026, 11, 18, 11, 6, 40, tzinfo=dt.UTC)  # 1_795_000_000
ROLLED = TRUE - WEEKS_1024  # what a receiver with the bug says: 2007-04-04
LAYOUT = Layout(fast=("RPM",), slow=(), gps=True)


def warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]


def test_the_sentences_are_real_nmea() -> None:
    line = rmc(ROLLED).decode().strip()
    msg = pynmea2.parse(line, check=True)  # raises on a wrong checksum
    assert isinstance(msg, pynmea2.RMC)
    assert line == "$GPRMC,110640.00,A,4807.038,N,01131.000,E,022.4,084.4,040407,,,A*55"
    assert pynmea2.NMEASentence.checksum(line[1:-3]) == 0x55
    assert msg.datestamp == dt.date(2007, 4, 4)


def test_a_rolled_over_rmc_date_is_moved_forward_1024_weeks_and_said_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    decoder = NmeaDecoder(FakeClock())
    with caplog.at_level(logging.WARNING, logger="eccm.gnss.nmea"):
        fixes = decoder.feed(epoch(ROLLED))
        fixes += decoder.feed(epoch(ROLLED + dt.timedelta(seconds=1)))
    assert [f.time_utc for f in fixes] == [TRUE.timestamp()] * 2 + [TRUE.timestamp() + 1]
    assert all(f.has_position for f in fixes)
    (warning,) = warnings(caplog)  # once, not at every sentence
    assert "reports 2007-04-04" in warning
    assert "GPS week rollover; corrected by 1024 weeks to 2026-11-18" in warning


def test_a_date_two_rollovers_back_is_moved_forward_twice(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING, logger="eccm.gnss.nmea"):
        fixes = NmeaDecoder(FakeClock()).feed(epoch(TRUE - 2 * WEEKS_1024))  # 1987
    assert fixes[-1].time_utc == TRUE.timestamp()
    (warning,) = warnings(caplog)
    assert "reports 1987-08-19" in warning and "corrected by 2048 weeks" in warning


def test_a_normal_date_is_unchanged_and_not_logged(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG, logger="eccm.gnss.nmea"):
        fixes = NmeaDecoder(FakeClock()).feed(epoch(TRUE))
    assert [f.time_utc for f in fixes] == [TRUE.timestamp()] * 2
    assert warnings(caplog) == []


PIVOT = dt.datetime.combine(RELEASE_PIVOT, dt.time(), dt.UTC)


@pytest.mark.parametrize(
    ("when", "expected"),
    [
        (PIVOT, PIVOT),  # exactly at the pivot: a real date
        (PIVOT + dt.timedelta(seconds=1), PIVOT + dt.timedelta(seconds=1)),
        (PIVOT + dt.timedelta(days=400), PIVOT + dt.timedelta(days=400)),
        # the last second before it would be a rollover, but one that lands 19.6 years on,
        # past ROLLOVER_HORIZON: no time rather than a guess
        (PIVOT - dt.timedelta(seconds=1), None),
        # the earliest date that a rollover moves to within the horizon
        (
            PIVOT + ROLLOVER_HORIZON - WEEKS_1024,
            PIVOT + ROLLOVER_HORIZON,
        ),
    ],
    ids=["at-pivot", "second-after", "year-after", "second-before", "horizon"],
)
def test_the_pivot_is_the_first_real_instant(
    when: dt.datetime, expected: dt.datetime | None
) -> None:
    (fix,) = NmeaDecoder(FakeClock()).feed(rmc(when))
    assert fix.time_utc == (None if expected is None else expected.timestamp())


def test_a_gga_after_midnight_is_dated_from_the_corrected_rmc() -> None:
    before_midnight = dt.datetime(2007, 4, 4, 23, 59, 59, tzinfo=dt.UTC)
    after_midnight = before_midnight + dt.timedelta(seconds=3)
    second = dt.timedelta(seconds=1)
    # The receiver sends no RMC after midnight: its GGA takes the day after the new date
    # (a fix again from the third GGA epoch, once the decoder knows only GGA comes).
    fixes = NmeaDecoder(FakeClock()).feed(
        rmc(before_midnight)
        + gga(after_midnight - 2 * second)
        + gga(after_midnight - second)
        + gga(after_midnight)
    )
    assert fixes[0].time_utc == (before_midnight + WEEKS_1024).timestamp()
    assert fixes[-1].time_utc == (after_midnight + WEEKS_1024).timestamp()
    assert (after_midnight + WEEKS_1024).isoformat() == "2026-11-19T00:00:02+00:00"


def test_unroll_gps_week_is_bounded() -> None:
    assert unroll_gps_week(dt.date(2007, 4, 4)) == (dt.date(2026, 11, 18), 1)
    assert unroll_gps_week(dt.date(2026, 11, 18)) == (dt.date(2026, 11, 18), 0)
    assert unroll_gps_week(RELEASE_PIVOT) == (RELEASE_PIVOT, 0)
    # further back than MAX_ROLLOVERS rollovers is no rollover and no date either
    far = RELEASE_PIVOT - (MAX_ROLLOVERS * WEEKS_1024) - dt.timedelta(days=1)
    assert unroll_gps_week(far) is None
    near = RELEASE_PIVOT - (MAX_ROLLOVERS * WEEKS_1024)
    assert unroll_gps_week(near) == (RELEASE_PIVOT, MAX_ROLLOVERS)
    # a correction is believed up to ROLLOVER_HORIZON after the pivot: the GPS epoch
    # 1980-01-06 is not moved to 2038-11-21
    assert unroll_gps_week(dt.date(1980, 1, 6)) is None
    assert dt.date(2038, 11, 21) > RELEASE_PIVOT + ROLLOVER_HORIZON
    # any date, corrected or not, before the pivot plus one rollover period
    last = RELEASE_PIVOT + DATE_HORIZON - dt.timedelta(days=1)
    assert unroll_gps_week(last) == (last, 0)
    assert unroll_gps_week(last + dt.timedelta(days=1)) is None
    assert unroll_gps_week(dt.date(2068, 12, 31)) is None
    # a replay of an old capture is decoded against a pivot of its time
    assert unroll_gps_week(dt.date(2007, 4, 4), pivot=dt.date(2000, 1, 1)) == (
        dt.date(2007, 4, 4),
        0,
    )


def test_the_corrected_fix_is_gps_time_utc_and_corrects_a_pi_without_a_clock() -> None:
    clock = FakeClock(start=TRUE.timestamp() - 10 * 365.25 * 86400, monotonic_start=500.0)
    hub = Hub(clock, max_fix_age=2.0, layout=LAYOUT)
    decoder = NmeaDecoder(clock)
    # GNSS time is adopted once CONFIRM_EPOCHS consecutive epochs agree.
    for second in range(-CONFIRM_EPOCHS + 1, 1):
        clock.advance(1.0)
        for fix in decoder.feed(epoch(ROLLED + dt.timedelta(seconds=second))):
            hub.update_fix(fix)
    assert hub.timebase.source == "gnss"
    assert hub.now() == pytest.approx(TRUE.timestamp(), abs=1e-6)
    clock.advance(0.5)
    hub.begin_trip()
    hub.update_values({"RPM": Reading(800.0, "revolutions_per_minute", clock.monotonic())})
    sample = hub.emit()
    assert sample is not None
    row = dict(zip(LAYOUT.header, LAYOUT.row(sample, "car"), strict=True))
    assert row["GPS_TIME_UTC"] == "2026-11-18T11:06:40.000Z"
    assert row["TIME_UTC"] == "2026-11-18T11:06:40.500Z"
    assert row["TRIP_ID"].startswith("20261118T110640")
    assert sample.time_source == "gnss"


def tpv(when: dt.datetime) -> bytes:
    report = {"class": "TPV", "mode": 3, "time": when.isoformat().replace("+00:00", "Z")}
    return (json.dumps(report | {"lat": 48.1, "lon": 11.5, "status": 1}) + "\n").encode()


@pytest.mark.parametrize("when", [TRUE, ROLLED], ids=["right", "before-the-pivot"])
def test_a_gpsd_time_is_not_corrected_a_second_time(
    when: dt.datetime, caplog: pytest.LogCaptureFixture
) -> None:
    # gpsd already resolved the rollover against its own build date: its word is final,
    # in the fix (GPS_TIME_UTC) and in the time base.
    clock = FakeClock(start=0.0, monotonic_start=500.0)
    decoder = GpsdDecoder(clock)
    timebase = TimeBase()
    with caplog.at_level(logging.WARNING):
        for second in range(CONFIRM_EPOCHS):
            (fix,) = decoder.feed(tpv(when + dt.timedelta(seconds=second)))
            timebase.observe(fix)
            clock.advance(1.0)
    assert isinstance(fix, Fix) and fix.time_utc == when.timestamp() + CONFIRM_EPOCHS - 1
    assert timebase.correct(0.0) == pytest.approx(when.timestamp(), abs=1e-6)
    assert not any("rollover" in m for m in warnings(caplog))
