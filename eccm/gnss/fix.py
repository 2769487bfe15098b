"""A position fix, as the rest of ECCM sees it (whatever the receiver or gpsd said)."""

from __future__ import annotations

import datetime as dt
import logging
import math
from collections import deque
from dataclasses import dataclass, replace

from eccm.clock import Clock

# GPS counts weeks modulo 1024. A receiver whose firmware predates a rollover (some u-blox
# 6/7, SiRF) reports a date 1024 weeks (19.6 years) early, e.g. 2007 in 2026; its RMC date
# says nothing else about it. As gpsd does, a pivot from the build date tells the two apart.
GPS_ROLLOVER = dt.timedelta(weeks=1024)
# No receiver fix can be older than this release: an earlier date is a rolled-over week.
RELEASE_PIVOT = dt.date(2025, 1, 1)
# Any date, corrected or not, must fall before the pivot plus one rollover period: beyond
# it a receiver's 10-bit week is ambiguous anyway (gpsd believes the same window from its
# build date), and pynmea2 reads a two-digit year up to 2068 ("311268").
DATE_HORIZON = GPS_ROLLOVER

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Fix:
    """One GNSS solution. Units: degrees, metres, m/s, degrees true.

    ``received`` is the monotonic time it arrived (for staleness) and ``received_wall`` the
    system clock at that moment (to measure how far off the system clock is).
    """

    # Seconds since the epoch from the receiver's date and time, GPS week rollover already
    # resolved (by NmeaDecoder, or by gpsd itself): consumers take it as is.
    time_utc: float | None
    latitude: float | None
    longitude: float | None
    altitude: float | None
    speed: float | None  # m/s over ground
    track: float | None  # degrees true
    quality: int | None  # GGA fix quality: 0 invalid, 1 GPS, 2 DGPS, ...
    satellites: int | None
    hdop: float | None
    received: float
    received_wall: float

    @property
    def has_position(self) -> bool:
        return self.latitude is not None and self.longitude is not None


# Physical bounds of a car's fix; a value outside is a receiver's (or an attacker's) error,
# left empty rather than written to the files.
# Faster than any road car (the record is about 136 m/s); GNSS chips stop at 515 m/s.
MAX_SPEED = 150.0  # m/s, 540 km/h
# Below the Dead Sea shore (-430 m) and above any road (5,800 m) with a wide margin.
ALTITUDE_RANGE = (-1000.0, 10_000.0)  # metres
# NMEA's satellites-used field has two digits; no receiver solves with more today.
MAX_SATELLITES = 99
# GGA fix quality: 0 invalid, 1 GPS, 2 DGPS, 3 PPS, 4 RTK, 5 float RTK, 6 estimated,
# 7 manual input, 8 simulation (NMEA 0183 v4.10).
MAX_QUALITY = 8
# HDOP is a x.x field; receivers (u-blox) send 99.99 when they have no fix.
MAX_HDOP = 99.99
# A position may move MAX_SPEED times the time since the last accepted one, plus this
# much: a fix's own error (multipath in a street canyon, a cold start) is hundreds of
# metres at worst.
JUMP_MARGIN = 1000.0  # metres
# Fixes in a row at a new place, each within reach of the one before, that make it the
# accepted place although it is too far from the last one (a car towed or carried on a
# ferry, or a first fix that was itself the wrong one).
CONFIRM_FIXES = 3
# The fixes that confirm a new place agree with its first one to within this (plus
# MAX_SPEED): fixes of one receiver a second apart differ by metres, tens in a canyon.
CONFIRM_MARGIN = 200.0  # metres
# ...over at least this long: a walk faster than MAX_SPEED + CONFIRM_MARGIN / CONFIRM_SPAN
# never agrees with its own first fix (at 5 Hz, three fixes span only 0.4 s).
CONFIRM_SPAN = 2.0  # seconds
# A position must be within reach of the accepted ones of the last ANCHOR_WINDOW seconds
# (one kept every ANCHOR_EVERY s), so that a walk of steps each within JUMP_MARGIN of the
# last cannot outrun MAX_SPEED by more than JUMP_MARGIN / ANCHOR_WINDOW for long.
ANCHOR_WINDOW = 60.0  # seconds
ANCHOR_EVERY = 5.0  # seconds
# Drops are logged at most this often, with their counts.
DROP_LOG_SECONDS = 60.0

EARTH_RADIUS = 6_371_000.0  # metres


class DropCounter:
    """Counts values dropped as impossible, by field; logs at most once a minute.

    Shared by the decoder and the position filter of one receiver, so that a receiver that
    goes mad makes one log line a minute, not one per sentence.
    """

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self.total = 0
        self._pending: dict[str, int] = {}
        self._logged_at: float | None = None

    def drop(self, what: str, value: object) -> None:
        self.total += 1
        self._pending[what] = self._pending.get(what, 0) + 1
        log.debug("GNSS: dropped %s %r", what, value)
        now = self._clock.monotonic()
        if self._logged_at is None or now - self._logged_at >= DROP_LOG_SECONDS:
            count = sum(self._pending.values())
            detail = ", ".join(f"{k} {v}" for k, v in sorted(self._pending.items()))
            log.warning(
                "GNSS: dropped %d impossible value(s) %s(%s); the fields are left empty "
                "(%d since start)",
                count,
                "" if self._logged_at is None else f"in the last {DROP_LOG_SECONDS:.0f} s ",
                detail,
                self.total,
            )
            self._pending.clear()
            self._logged_at = now


def bounded(
    value: float | None, low: float, high: float, what: str, drops: DropCounter
) -> float | None:
    """``value`` if within [low, high]; else None, counted in ``drops``."""
    if value is None:
        return None
    if not (math.isfinite(value) and low <= value <= high):
        drops.drop(what, value)
        return None
    return value


def distance(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Great-circle distance in metres (haversine)."""
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * EARTH_RADIUS * math.asin(min(1.0, math.sqrt(a)))


class PositionFilter:
    """Drops a position that jumps further than the time since the last accepted one allows.

    Pure: judged on the fixes' monotonic ``received`` times, never on their GNSS time (which
    may be what is wrong). A place too far away becomes the accepted one once
    :data:`CONFIRM_FIXES` fixes in a row agree on it, so a car moved while the logger was
    blind, or a wrong first fix, is not rejected for ever.

    JUMP_MARGIN is a fix's own error, not a distance each fix may add: a position must also
    be within reach of the accepted ones of the last :data:`ANCHOR_WINDOW` seconds (one kept
    every :data:`ANCHOR_EVERY` s), and a new place's fixes within reach of its first one
    with :data:`CONFIRM_MARGIN`. Found: fixes each 1 km on from the last were all within
    reach of it, and 5 Hz of them wrote 300 km in a minute (18,000 km/h), none dropped.
    """

    def __init__(self, drops: DropCounter) -> None:
        self._drops = drops
        self._last: Fix | None = None
        self._anchors: deque[Fix] = deque()  # accepted fixes, oldest first
        self._first: Fix | None = None  # the first fix at a new place
        self._candidate: Fix | None = None
        self._confirmations = 0

    def check(self, fix: Fix) -> Fix:
        if fix.latitude is None or fix.longitude is None:
            return fix
        last = self._last
        if last is None or (
            _reachable(last, fix) and all(_reachable(a, fix) for a in self._anchors)
        ):
            self._accept(fix)
            return fix
        first, cand = self._first, self._candidate
        if (
            first is not None
            and cand is not None
            and _reachable(cand, fix, CONFIRM_MARGIN)
            and _reachable(first, fix, CONFIRM_MARGIN)
        ):
            self._confirmations += 1
        else:
            self._first, self._confirmations = fix, 1
        self._candidate = fix
        assert self._first is not None
        if (
            self._confirmations >= CONFIRM_FIXES
            and fix.received - self._first.received >= CONFIRM_SPAN
        ):
            assert last.latitude is not None and last.longitude is not None
            log.info(
                "GNSS: the position moved %.1f km in %.0f s; %d fixes in a row confirm it",
                distance(last.latitude, last.longitude, fix.latitude, fix.longitude) / 1000,
                fix.received - last.received,
                CONFIRM_FIXES,
            )
            self._anchors.clear()  # a new place: the old track says nothing about it
            self._accept(fix)
            return fix
        self._drops.drop("position jump", (fix.latitude, fix.longitude))
        return replace(fix, latitude=None, longitude=None)

    def _accept(self, fix: Fix) -> None:
        self._last = fix
        self._first = self._candidate = None
        self._confirmations = 0
        anchors = self._anchors
        while anchors and fix.received - anchors[0].received > ANCHOR_WINDOW:
            anchors.popleft()
        if not anchors or fix.received - anchors[-1].received >= ANCHOR_EVERY:
            anchors.append(fix)


def _reachable(a: Fix, b: Fix, margin: float = JUMP_MARGIN) -> bool:
    assert a.latitude is not None and a.longitude is not None
    assert b.latitude is not None and b.longitude is not None
    elapsed = max(0.0, b.received - a.received)
    return distance(a.latitude, a.longitude, b.latitude, b.longitude) <= (
        MAX_SPEED * elapsed + margin
    )
