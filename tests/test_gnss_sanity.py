"""Issue 10 item 5: impossible GNSS values never reach the files.

Every field a fix is made of is range-checked where it is decoded (NMEA and gpsd); a value
out of range is left empty and counted, the rest of the fix is kept. A position that jumps
further than the elapsed time allows is dropped until consecutive fixes confirm the place.
"""

from __future__ import annotations

import functools
import json
import logging
import operator
import random

import pytest

from eccm.clock import FakeClock
from eccm.gnss.fix import (
    CONFIRM_FIXES,
    JUMP_MARGIN,
    MAX_SPEED,
    DropCounter,
    Fix,
    PositionFilter,
)
from eccm.gnss.gpsd import GpsdDecoder
from eccm.gnss.nmea import NmeaDecoder


def sentence(body: str) -> bytes:
    checksum = functools.reduce(operator.xor, body.encode("ascii"), 0)
    return f"${body}*{checksum:02X}\r\n".encode("ascii")


def rmc(lat: str = "4807.038", lon: str = "01131.000", knots: str = "022.4") -> bytes:
    return sentence(f"GPRMC,110640.00,A,{lat},N,{lon},E,{knots},084.4,181126,,,A")


def gga(quality: str = "1", sats: str = "08", hdop: str = "0.9", alt: str = "545.4") -> bytes:
    return sentence(
        f"GPGGA,110640.00,4807.038,N,01131.000,E,{quality},{sats},{hdop},{alt},M,46.9,M,,"
    )


def decode(data: bytes) -> tuple[Fix, NmeaDecoder]:
    decoder = NmeaDecoder(FakeClock())
    fixes = decoder.feed(data)
    return fixes[-1], decoder


@pytest.mark.parametrize(
    ("lat", "lon"),
    [("4699.9999", "01131.000"), ("4807.038", "01160.000"), ("9100.000", "01131.000")],
    ids=["99-minutes", "60-minutes", "latitude-91"],
)
def test_a_position_with_impossible_minutes_or_degrees_is_left_empty(lat: str, lon: str) -> None:
    fix, decoder = decode(rmc(lat=lat, lon=lon))
    assert not fix.has_position
    assert fix.speed == pytest.approx(22.4 * 1852 / 3600)  # the rest of the fix is kept
    assert decoder.dropped == 1


def test_a_longitude_beyond_180_is_left_empty() -> None:
    fix, decoder = decode(rmc(lon="18100.000"))
    assert not fix.has_position and decoder.dropped == 1


def test_minutes_just_under_60_are_a_position() -> None:
    fix, decoder = decode(rmc(lat="4759.9999"))
    assert fix.latitude == pytest.approx(47 + 59.9999 / 60) and decoder.dropped == 0


@pytest.mark.parametrize(
    "knots",
    ["-5.0", "9.9e299", "400.0", "nan", "inf"],
    ids=["negative", "huge", "400kn", "nan", "inf"],  # nan, inf: the whole RMC was skipped
)
def test_an_impossible_speed_is_left_empty(knots: str) -> None:
    fix, decoder = decode(rmc(knots=knots))
    assert fix.speed is None and fix.has_position and decoder.dropped == 1


@pytest.mark.parametrize(
    ("field", "kwargs"),
    [
        ("satellites", {"sats": "1000000000"}),
        ("altitude", {"alt": "nan"}),
        ("hdop", {"hdop": "inf"}),
        ("quality", {"quality": "9"}),
        ("altitude", {"alt": "-99999"}),
        ("altitude", {"alt": "1e300"}),
        ("hdop", {"hdop": "150.0"}),
    ],
)
def test_impossible_gga_fields_are_left_empty_and_the_position_kept(
    field: str, kwargs: dict[str, str]
) -> None:
    fix, decoder = decode(rmc() + gga(**kwargs))
    assert getattr(fix, field) is None
    assert fix.has_position and fix.time_utc is not None
    assert decoder.dropped == 1


def test_satellites_summed_over_talkers_are_bounded_too() -> None:
    """Found (audit of issue 10 item 5): GPGGA, GLGGA and GAGGA of one epoch with 99
    satellites each (each within its field) wrote GPS_SATELLITES 297."""
    per_talker = b"".join(
        sentence(f"{talker}GGA,110640.00,4807.038,N,01131.000,E,1,99,0.9,545.4,M,46.9,M,,")
        for talker in ("GP", "GL", "GA")
    )
    decoder = NmeaDecoder(FakeClock())
    fixes = decoder.feed(rmc() + per_talker)
    assert fixes and all(f.satellites in (None, 99) for f in fixes), [f.satellites for f in fixes]
    assert fixes[-1].satellites is None and fixes[-1].has_position
    assert decoder.dropped >= 1


def test_plausible_extremes_are_kept() -> None:
    fix, decoder = decode(
        rmc(knots="290.0") + gga(quality="8", sats="99", hdop="99.99", alt="-430")
    )
    assert (fix.quality, fix.satellites, fix.hdop, fix.altitude) == (8, 99, 99.99, -430.0)
    assert fix.speed == pytest.approx(290 * 1852 / 3600) and decoder.dropped == 0


def test_gpsd_fields_are_range_checked_too() -> None:
    report = {
        "class": "TPV",
        "mode": 3,
        "time": "2026-11-18T11:06:40Z",
        "lat": 48.1,
        "lon": 11.5,
        "speed": -2.57,
        "altMSL": -99999.0,
        "track": 400.0,
    }
    sky = {"class": "SKY", "uSat": 1_000_000_000, "hdop": 500.0}
    decoder = GpsdDecoder(FakeClock())
    (fix,) = decoder.feed((json.dumps(sky) + "\n" + json.dumps(report) + "\n").encode())
    assert fix.has_position
    assert (fix.speed, fix.altitude, fix.track, fix.satellites, fix.hdop) == (None,) * 5
    assert decoder.dropped == 5


def test_drops_are_logged_at_most_once_a_minute_with_the_count(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = FakeClock()
    decoder = NmeaDecoder(clock)
    with caplog.at_level(logging.INFO, logger="eccm.gnss"):
        for _ in range(100):
            decoder.feed(rmc(knots="-5.0"))
            clock.advance(1.0)
    lines = [r.getMessage() for r in caplog.records if "impossible" in r.getMessage()]
    assert len(lines) == 2, lines  # the first at once, then one for the next minute
    assert "1 " in lines[0] and "60 " in lines[1]
    assert decoder.dropped == 100


# ---------------------------------------------------------------- jumps
def at(clock: FakeClock, lat: float, lon: float = 7.0) -> Fix:
    return Fix(
        time_utc=None,
        latitude=lat,
        longitude=lon,
        altitude=None,
        speed=None,
        track=None,
        quality=1,
        satellites=8,
        hdop=1.0,
        received=clock.monotonic(),
        received_wall=clock.time(),
    )


KM_PER_DEG = 111.2


def test_a_1000_km_jump_between_two_epochs_is_dropped_and_counted() -> None:
    clock = FakeClock()
    drops = DropCounter(clock)
    flt = PositionFilter(drops)
    assert flt.check(at(clock, 45.0)).has_position
    clock.advance(1.0)
    jumped = flt.check(at(clock, 45.0 + 1000 / KM_PER_DEG))
    assert not jumped.has_position and jumped.quality == 1
    assert drops.total == 1
    clock.advance(1.0)
    assert flt.check(at(clock, 45.0 + 0.0002)).has_position  # back on the road


def test_moving_as_fast_as_allowed_is_not_a_jump() -> None:
    clock = FakeClock()
    flt = PositionFilter(DropCounter(clock))
    lat = 45.0
    for _ in range(10):
        flt.check(at(clock, lat))
        clock.advance(1.0)
        lat += 0.9 * MAX_SPEED / 1000 / KM_PER_DEG  # 90 % of MAX_SPEED
        assert flt.check(at(clock, lat)).has_position


def test_a_far_first_fix_after_a_long_outage_is_accepted() -> None:
    clock = FakeClock()
    flt = PositionFilter(DropCounter(clock))
    flt.check(at(clock, 45.0))
    clock.advance(3600.0)  # an hour in a garage or a tunnel network: 100 km is possible
    assert flt.check(at(clock, 45.0 + 100 / KM_PER_DEG)).has_position


def test_a_new_place_is_accepted_once_consecutive_fixes_confirm_it() -> None:
    clock = FakeClock()
    drops = DropCounter(clock)
    flt = PositionFilter(drops)
    flt.check(at(clock, 45.0))  # perhaps the bad one: a first fix from a cold start
    there = 45.0 + 50 / KM_PER_DEG
    results = []
    for i in range(CONFIRM_FIXES + 2):
        clock.advance(1.0)
        results.append(flt.check(at(clock, there + i * 1e-4)).has_position)
    assert results == [False] * (CONFIRM_FIXES - 1) + [True] * 3
    assert drops.total == CONFIRM_FIXES - 1
    assert JUMP_MARGIN < 50_000


@pytest.mark.parametrize("step_km", [1.0, 0.1], ids=["18000kmh", "1800kmh"])
def test_a_position_walked_away_in_small_steps_is_dropped(step_km: float) -> None:
    """Found (audit of issue 10 item 5): each fix 1 km on from the last was within reach of
    it (MAX_SPEED x 0.2 s + JUMP_MARGIN), so 5 Hz of them wrote a track of 300 km in a
    minute, none dropped: the 1,000 km jump of the issue, taken in steps. The margin is a
    fix's error, not a distance each fix may add."""
    clock = FakeClock()
    drops = DropCounter(clock)
    flt = PositionFilter(drops)
    lat, written = 45.0, []
    for _ in range(300):  # a minute at 5 Hz
        clock.advance(0.2)
        lat += step_km / KM_PER_DEG
        fix = flt.check(at(clock, lat))
        if fix.has_position:
            assert fix.latitude is not None
            written.append(fix.latitude)
    assert len(written) <= 30, len(written)
    assert (max(written) - 45.0) * KM_PER_DEG < 5.0  # not 300 km, not 30 km
    assert drops.total == 300 - len(written)


def test_a_fast_noisy_car_at_5_hz_loses_no_position() -> None:
    """What the anchors must not do: a car at 90 % of MAX_SPEED whose fixes scatter by
    +-150 m (a street canyon) keeps every position."""
    clock = FakeClock()
    flt = PositionFilter(DropCounter(clock))
    rng = random.Random(3)
    for i in range(3000):  # ten minutes at 5 Hz
        clock.advance(0.2)
        lat = 45.0 + (0.9 * MAX_SPEED * 0.2 * i / 1000 + rng.uniform(-0.15, 0.15)) / KM_PER_DEG
        assert flt.check(at(clock, lat)).has_position, i
