"""NMEA 0183 byte stream → :class:`~eccm.gnss.fix.Fix` (pure: no I/O, no threads).

pynmea2 parses and checks each sentence; this module owns what pynmea2 does not do:
finding sentences in a raw byte stream (receivers such as u-blox mix binary UBX frames into
it), merging the RMC, GGA and VTG sentences of one epoch into one fix, and moving a date
that a GPS week rollover sent 1024 weeks back to where it belongs.
"""

from __future__ import annotations

import datetime as dt
import logging
import math
from dataclasses import dataclass, field
from decimal import Decimal

import pynmea2

from eccm.clock import Clock
from eccm.gnss.fix import (
    ALTITUDE_RANGE,
    DATE_HORIZON,
    GPS_ROLLOVER,
    MAX_HDOP,
    MAX_QUALITY,
    MAX_SATELLITES,
    MAX_SPEED,
    RELEASE_PIVOT,
    DropCounter,
    Fix,
    bounded,
)

log = logging.getLogger(__name__)

KNOT = 1852.0 / 3600.0  # m/s
KMH = 1000.0 / 3600.0  # m/s

# NMEA 0183 allows 82 characters; proprietary sentences (Skytraq $PSTI, SiRF) run longer.
# Anything beyond this cannot be a sentence, and holding it would let a receiver spewing
# bytes without a newline grow memory without bound.
MAX_SENTENCE = 512
# GGA sentences in a row without an RMC before saying the date (and GNSS time) is missing.
NO_DATE_AFTER = 10
# Epochs in a row that must end incomplete before the decoder learns anew which kinds of
# sentence the receiver sends (one lost sentence is not a change of its output).
RELEARN_AFTER = 2

# Seconds a GSA's fix mode stands for the epochs after it: receivers send GSA every epoch
# or every few (the Haicom HI-305N every third); one that stopped saying 2D is not held to.
GSA_VALID = 5.0
# GSA fix mode of a 2D fix: no altitude solved (the receiver repeats an old or assumed one).
MODE_2D = 2

# GPS_ROLLOVER, RELEASE_PIVOT and DATE_HORIZON live in eccm.gnss.fix (gpsd's reports are
# held to the same horizon); imported above and kept as names of this module.

# A bound on the loop: from the pivot, three rollovers reach back to 1966, before GPS; a
# date still early after them is not a rollover, and stays as the receiver said it.
MAX_ROLLOVERS = 3
# A date moved forward by rollovers is a guess, believed only if it lands within this long
# after the pivot. Ten years covers the life of a release (the pivot moves with each one)
# and rejects 1980-01-06, the GPS epoch a receiver reports before it knows the week
# number, which three rollovers would otherwise carry to 2038-11-21.
ROLLOVER_HORIZON = dt.timedelta(days=3652)

_TERMINATORS = b"\r\n$"
_WHITESPACE = frozenset(b" \t\r\n\x00")


# Well-formed sentences without a checksum in a row after which a receiver is taken to send
# none (a second of a 5-sentence receiver).
UNCHECKED_TO_TRUST = 5
_said = {"unchecked": False}


@dataclass
class _Epoch:
    """What the sentences of one epoch (one time of day) said so far."""

    tod: dt.time | None
    valid: bool = True  # cleared by RMC status V or GGA quality 0
    timeless: bool = False  # its RMC's date was rejected: the epoch carries no time
    latitude: float | None = None
    longitude: float | None = None
    altitude: float | None = None
    speed: float | None = None
    track: float | None = None
    quality: int | None = None
    satellites: dict[str, int] = field(default_factory=dict)  # per talker id
    hdop: float | None = None
    kinds: set[str] = field(default_factory=set)  # RMC, GGA seen in this epoch
    emitted: bool = False


class NmeaDecoder:
    """Feed raw receiver bytes in any chunking; get a :class:`Fix` once an epoch is complete.

    An epoch is complete when it holds every kind of sentence (RMC, GGA) the receiver sent
    in the last epoch that was: a fix is not handed out between the RMC and the GGA of one
    epoch, half made (no altitude, quality, satellites, HDOP). The first sentence ever, and
    the first after the receiver changed what it sends (RELEARN_AFTER incomplete epochs in
    a row), give a fix at once; an epoch that lost a sentence gives none.

    Bad input (garbage, binary frames, bad checksums, truncated or unknown sentences) is
    skipped and counted in :attr:`skipped`; :meth:`feed` never raises.
    """

    def __init__(
        self, clock: Clock, pivot: dt.date = RELEASE_PIVOT, drops: DropCounter | None = None
    ) -> None:
        self._clock = clock
        # Values out of physical range are left empty and counted here (shared with the
        # source's position filter, for one log line a minute).
        self._drops = drops or DropCounter(clock)
        # Replaying an old capture needs the pivot of its time (gpsd's regression tests
        # take it from the capture's header); a live receiver always uses the default.
        self._pivot = pivot
        self._warned_rollover = False
        self._warned_date = False
        self.rejected_times = 0  # RMC sentences whose date was implausible: no time from them
        self.sentences = 0  # sentences pynmea2 parsed
        self.skipped = 0  # garbage runs and sentences that could not be used
        self._sentence: bytearray | None = None  # the sentence being framed, from its '$'
        self._in_garbage = False
        self._epoch = _Epoch(tod=None)
        self._date: dt.date | None = None
        self._date_tod: dt.time | None = None  # time of day of the RMC that gave the date
        self._expected: frozenset[str] = frozenset()  # kinds of the last complete epoch
        self._incomplete = 0  # epochs in a row that ended without completing
        self._gga_without_date = 0
        self._warned_no_date = False
        self._mode: int | None = None  # fix mode of the last GSA (1 none, 2 2D, 3 3D)
        self._mode_at = 0.0  # monotonic time it came
        # A receiver that sends no checksums at all (some older or configured ones; gpsd
        # takes them): its sentences are taken once UNCHECKED_TO_TRUST in a row parsed.
        self._unchecked_run = 0
        self.trusts_unchecked = False

    @property
    def dropped(self) -> int:
        """Values dropped as impossible (left empty) so far."""
        return self._drops.total

    # ------------------------------------------------------------------ framing
    def feed(self, data: bytes) -> list[Fix]:
        fixes: list[Fix] = []
        received = self._clock.monotonic()
        received_wall = self._clock.time()
        for line in self._frame(data):
            fix = self._handle(line, received, received_wall)
            if fix is not None:
                fixes.append(fix)
        return fixes

    def _frame(self, data: bytes) -> list[bytes]:
        # Hand-written because pyserial's LineReader assumes a clean text stream; here a
        # sentence starts at '$' and ends at CR, LF or the next '$', and whatever lies
        # between sentences (UBX frames, line noise) is counted once per run and dropped.
        out: list[bytes] = []
        i, n = 0, len(data)
        while i < n:
            if self._sentence is None:
                j = data.find(b"$", i)
                end = n if j < 0 else j
                for b in data[i:end]:
                    if b in (0x0A, 0x0D):
                        self._in_garbage = False
                    elif b not in _WHITESPACE and not self._in_garbage:
                        self._in_garbage = True
                        self._skip("garbage outside a sentence")
                if j < 0:
                    return out
                self._in_garbage = False
                self._sentence = bytearray(b"$")
                i = j + 1
                continue
            j = _find_any(data, i)
            if j < 0:
                self._sentence += data[i:]
                if len(self._sentence) > MAX_SENTENCE:
                    self._sentence = None
                    self._in_garbage = True  # the rest of this line is part of the same skip
                    self._skip(f"line longer than {MAX_SENTENCE} bytes")
                return out
            self._sentence += data[i:j]
            if len(self._sentence) > MAX_SENTENCE:
                self._skip(f"line longer than {MAX_SENTENCE} bytes")
            else:
                out.append(bytes(self._sentence))
            self._sentence = None
            i = j  # a terminator is handled by the 'outside' branch; '$' starts the next one
        return out

    def _skip(self, why: str, detail: object = "") -> None:
        self.skipped += 1
        log.debug("NMEA: skipped %s %s", why, detail)

    # ------------------------------------------------------------------ sentences
    def _handle(self, raw: bytes, received: float, received_wall: float) -> Fix | None:
        unchecked = b"*" not in raw
        try:
            line = raw.decode("ascii")
            # A sentence with a checksum is always checked; one without is taken only from
            # a receiver that never sends one (line noise seldom parses, and the values
            # then pass the same range and jump checks as any other).
            msg = pynmea2.parse(line, check=not unchecked)
        except Exception as e:  # a third-party parser fed hostile bytes: nothing may escape
            self._unchecked_run = 0
            self._skip("unusable sentence", f"{raw[:100]!r}: {e}")
            return None
        if not unchecked:
            self._unchecked_run = 0
        elif not self.trusts_unchecked:
            self._unchecked_run += 1
            if self._unchecked_run < UNCHECKED_TO_TRUST:
                self._skip("sentence without a checksum", repr(raw[:100]))
                return None
            self.trusts_unchecked = True
            # INFO once per process (a receiver that is reopened says the same again).
            log.log(
                logging.DEBUG if _said["unchecked"] else logging.INFO,
                "NMEA: the receiver sends its sentences without checksums; they are taken "
                "as they come (a sentence with a checksum is still checked)",
            )
            _said["unchecked"] = True
        self.sentences += 1
        try:
            if isinstance(msg, pynmea2.RMC):
                self._rmc(msg)
                kind = "RMC"
            elif isinstance(msg, pynmea2.GGA):
                self._gga(msg)
                kind = "GGA"
            elif isinstance(msg, pynmea2.VTG):
                self._vtg(msg)
                return None
            elif isinstance(msg, pynmea2.GNS):
                self._gns(msg)
                return None
            elif isinstance(msg, pynmea2.GSA):
                self._mode, self._mode_at = _integer(msg.mode_fix_type), received
                return None
            else:
                return None
        except Exception as e:
            # pynmea2 hands back the raw text when a field does not convert; a sentence
            # with a valid checksum can still carry nonsense.
            self.sentences -= 1
            self._skip("sentence with bad fields", f"{line.strip()!r}: {e}")
            return None
        self._watch_date(kind)
        ep = self._epoch
        ep.kinds.add(kind)
        if not ep.kinds >= self._expected:
            return None  # the rest of this epoch is on its way
        self._expected = frozenset(ep.kinds)
        self._incomplete = 0
        ep.emitted = True
        return self._fix(received, received_wall)

    def _watch_date(self, kind: str) -> None:
        # GGA has the time of day but no date: without RMC there is no GNSS time at all.
        if kind == "RMC":
            self._gga_without_date = 0
            return
        self._gga_without_date += 1
        if self._gga_without_date == NO_DATE_AFTER and not self._warned_no_date:
            self._warned_no_date = True
            log.warning(
                "GNSS: the receiver sends GGA but no RMC sentence, which carries the date: "
                "GPS_TIME_UTC stays empty and the system clock cannot be checked against "
                "GNSS time; turn on RMC output in the receiver's settings"
            )

    def _start_epoch(self, tod: dt.time | None) -> _Epoch:
        if tod is None or tod != self._epoch.tod:
            if self._epoch.kinds and not self._epoch.emitted:
                # The last epoch never completed. Once is a sentence lost on the line
                # (noise, a full buffer): the next epoch still waits for both kinds, or
                # its RMC would give a fix without altitude and quality, then its GGA a
                # second one. Twice in a row, the receiver stopped sending one kind of
                # sentence: learn again what it sends.
                self._incomplete += 1
                if self._incomplete >= RELEARN_AFTER:
                    self._expected = frozenset()
            self._epoch = _Epoch(tod=tod)
        return self._epoch

    def _rmc(self, msg: pynmea2.RMC) -> None:
        tod = _time_field(msg.timestamp)
        date = msg.datestamp
        if date is not None and not isinstance(date, dt.date):
            raise ValueError(f"bad date {date!r}")
        status = msg.status
        lat, lon = self._position(msg)
        speed = self._speed(_number(msg.spd_over_grnd), KNOT)
        track = self._angle(msg.true_course)
        ep = self._start_epoch(tod)
        if date is not None and tod is not None:
            unrolled = self._unroll(date)
            if unrolled is None:
                # No time from this epoch at all: the last good date with this sentence's
                # time of day would be just as much a guess.
                ep.timeless = True
            else:
                self._date, self._date_tod = unrolled, tod
        if status != "A":
            ep.valid = False
        _set_position(ep, lat, lon)
        if speed is not None:
            ep.speed = speed
        if track is not None:
            ep.track = track

    def _unroll(self, date: dt.date) -> dt.date | None:
        # The date, not the datetime: the pivot is a midnight and a rollover is whole days,
        # so the time of day and the GGA dating around midnight (_epoch_seconds) stay as is.
        unrolled = unroll_gps_week(date, self._pivot)
        if unrolled is None:
            self.rejected_times += 1
            if not self._warned_date:
                # Once: a receiver that goes mad says it at every sentence.
                self._warned_date = True
                log.warning(
                    "GNSS: the receiver reports the date %s, which is no plausible date "
                    "for this release (%s to %s, GPS week rollovers corrected up to %s): "
                    "its time is ignored; the position is kept",
                    date.isoformat(),
                    self._pivot.isoformat(),
                    (self._pivot + DATE_HORIZON).isoformat(),
                    (self._pivot + ROLLOVER_HORIZON).isoformat(),
                )
            else:
                log.debug("GNSS: implausible date %s ignored", date.isoformat())
            return None
        corrected, rollovers = unrolled
        if rollovers and not self._warned_rollover:
            # Once: the receiver does it at every sentence, and the fix is right after this.
            self._warned_rollover = True
            log.warning(
                "GNSS: the receiver reports %s, before %s (no fix can be older than this "
                "release): GPS week rollover; corrected by %d weeks to %s. Update the "
                "receiver's firmware if you can",
                date.isoformat(),
                self._pivot.isoformat(),
                rollovers * 1024,
                corrected.isoformat(),
            )
        return corrected

    def _gga(self, msg: pynmea2.GGA) -> None:
        tod = _time_field(msg.timestamp)
        quality = _integer(msg.gps_qual)
        satellites = self._count(_integer(msg.num_sats), MAX_SATELLITES, "satellites")
        hdop = bounded(_number(msg.horizontal_dil), 0.0, MAX_HDOP, "HDOP", self._drops)
        altitude = bounded(_number(msg.altitude), *ALTITUDE_RANGE, "altitude", self._drops)
        lat, lon = self._position(msg)
        ep = self._start_epoch(tod)
        if quality == 0 or (quality is None and not msg.gps_qual):
            ep.valid = False
        # A quality beyond the table says nothing: left empty, and the epoch's validity
        # rests on its RMC status.
        ep.quality = self._count(quality, MAX_QUALITY, "fix quality")
        if satellites is not None:
            ep.satellites[msg.talker] = satellites
        if hdop is not None:
            ep.hdop = hdop
        if altitude is not None:
            ep.altitude = altitude
        _set_position(ep, lat, lon)

    def _gns(self, msg: pynmea2.GNS) -> None:
        # Receivers that send a GGA per constellation's talker also send GNS, whose count
        # is the satellites used by every constellation: the SiRF-TriG's GPGGA says 6, its
        # GNGNS 7 (6 GPS and 1 BeiDou, as its two GNGSA list). Only the count is taken: the
        # GGA of the epoch has the rest, and the epoch completes on GGA and RMC as before.
        satellites = self._count(_integer(msg.num_sats), MAX_SATELLITES, "satellites")
        tod = _time_field(msg.timestamp)
        # Without a time it cannot start an epoch: it would cut the one under way in two.
        ep = self._epoch if tod is None else self._start_epoch(tod)
        if satellites is not None and msg.talker == "GN":
            ep.satellites["GN"] = satellites

    def _vtg(self, msg: pynmea2.VTG) -> None:
        # VTG carries no time: it belongs to the epoch of the sentences just before it.
        track = self._angle(msg.true_track)
        knots = _number(msg.spd_over_grnd_kts)
        kmh = _number(msg.spd_over_grnd_kmph)
        if track is not None:
            self._epoch.track = track
        speed = self._speed(knots, KNOT) if knots is not None else self._speed(kmh, KMH)
        if speed is not None:
            self._epoch.speed = speed

    # ------------------------------------------------------------------ ranges
    def _speed(self, value: float | None, unit: float) -> float | None:
        if value is None:
            return None
        return bounded(value * unit, 0.0, MAX_SPEED, "speed", self._drops)

    def _angle(self, value: object) -> float | None:
        return bounded(_number(value), 0.0, 360.0, "track", self._drops)

    def _count(self, value: int | None, high: int, what: str) -> int | None:
        if value is not None and value > high:
            self._drops.drop(what, value)
            return None
        return value

    def _position(self, msg: pynmea2.RMC | pynmea2.GGA) -> tuple[float | None, float | None]:
        # pynmea2 turns an empty coordinate into 0.0, which is a real place (off Africa).
        if (
            not msg.lat
            or not msg.lon
            or msg.lat_dir not in ("N", "S")
            or msg.lon_dir not in ("E", "W")
        ):
            return None, None
        # pynmea2 reads 4699.9999 as 46 degrees and 99.9999 minutes, 47.6667: minutes
        # must be below 60, as the degrees within their range.
        lat = _coordinate(msg.lat, 90, msg.lat_dir == "S")
        lon = _coordinate(msg.lon, 180, msg.lon_dir == "W")
        if lat is None or lon is None:
            self._drops.drop("position", f"{msg.lat}{msg.lat_dir} {msg.lon}{msg.lon_dir}")
            return None, None
        return lat, lon

    def _fix(self, received: float, received_wall: float) -> Fix:
        ep = self._epoch
        positioned = ep.valid and ep.latitude is not None and ep.longitude is not None
        # A 2D fix solves no altitude, yet GGA still carries one (the Haicom HI-305N
        # repeats 3.0 m until its first 3D fix): it is unknown, as gpsd reports it (no
        # altitude below mode 3). The last GSA says; it may come after the sentence that
        # completes the epoch (u-blox), then the mode is one epoch late.
        two_d = self._mode == MODE_2D and received - self._mode_at <= GSA_VALID
        return Fix(
            time_utc=None if ep.timeless else self._epoch_seconds(ep.tod),
            latitude=ep.latitude if positioned else None,
            longitude=ep.longitude if positioned else None,
            altitude=None if two_d else ep.altitude,
            speed=ep.speed,
            track=ep.track,
            quality=ep.quality,
            # Summed over the talkers of the epoch: bounded as a whole too.
            satellites=self._count(_satellites(ep.satellites), MAX_SATELLITES, "satellites"),
            hdop=ep.hdop,
            received=received,
            received_wall=received_wall,
        )

    def _epoch_seconds(self, tod: dt.time | None) -> float | None:
        if tod is None or self._date is None or self._date_tod is None:
            return None
        date = self._date
        # A GGA just after midnight may arrive before the RMC that brings the new date.
        gap = _seconds(tod) - _seconds(self._date_tod)
        if gap < -43_200:
            date += dt.timedelta(days=1)
        elif gap > 43_200:
            date -= dt.timedelta(days=1)
        return dt.datetime.combine(date, tod.replace(tzinfo=dt.UTC)).timestamp()


def unroll_gps_week(date: dt.date, pivot: dt.date = RELEASE_PIVOT) -> tuple[dt.date, int] | None:
    """``date`` moved forward by whole GPS week rollovers until it is not before ``pivot``.

    Returns the date and the number of rollovers added (0: the date is kept), or None for
    a date that is no plausible time: still before the pivot after :data:`MAX_ROLLOVERS`,
    moved past ``pivot + ROLLOVER_HORIZON``, or at or after ``pivot + DATE_HORIZON``.
    """
    corrected, rollovers = date, 0
    while corrected < pivot:
        if rollovers == MAX_ROLLOVERS:
            return None
        corrected += GPS_ROLLOVER
        rollovers += 1
    if rollovers and corrected > pivot + ROLLOVER_HORIZON:
        return None
    if corrected >= pivot + DATE_HORIZON:
        return None
    return corrected, rollovers


def _find_any(data: bytes, start: int) -> int:
    best = -1
    for t in _TERMINATORS:
        j = data.find(t, start)
        if j >= 0 and (best < 0 or j < best):
            best = j
    return best


def _seconds(t: dt.time) -> float:
    return t.hour * 3600 + t.minute * 60 + t.second + t.microsecond / 1e6


def _time_field(value: object) -> dt.time | None:
    if value is None:
        return None
    if not isinstance(value, dt.time):
        raise ValueError(f"bad time {value!r}")
    return value


def _number(value: object) -> float | None:
    # "nan" and "inf" come back as they are: the range checks (bounded) leave the field
    # empty and count it, and the rest of the sentence is kept.
    if value is None or value == "":
        return None
    if isinstance(value, str | int | float | Decimal):
        return float(value)
    raise ValueError(f"bad number {value!r}")


def _integer(value: object) -> int | None:
    v = _number(value)
    if v is None:
        return None
    if not math.isfinite(v) or v != int(v) or v < 0:
        raise ValueError(f"bad count {value!r}")
    return int(v)


def _coordinate(text: str, max_degrees: int, negative: bool) -> float | None:
    """NMEA ``[d]ddmm.mmmm`` in decimal degrees, None when it is out of range."""
    # Split on the text, as pynmea2 does, so the value is the very float it computes.
    point = text.find(".")
    point = len(text) if point < 0 else point
    if point < 2 or not text[:point].isdigit():
        return None
    try:
        degrees = float(text[: point - 2] or 0)
        minutes = float(text[point - 2 :])
    except ValueError:
        return None
    if not (math.isfinite(minutes) and 0.0 <= minutes < 60.0):
        return None
    result = degrees + minutes / 60.0
    if result > max_degrees:
        return None
    return -result if negative else result


def _set_position(ep: _Epoch, lat: float | None, lon: float | None) -> None:
    if lat is not None and lon is not None:
        ep.latitude, ep.longitude = lat, lon


def _satellites(per_talker: dict[str, int]) -> int | None:
    # A combined (GN) GGA counts every constellation. Receivers that send one GGA per
    # constellation instead (SiRFstarV: GPGGA and GLGGA of the same epoch) count only
    # their own, so the satellites used are the sum.
    if not per_talker:
        return None
    if "GN" in per_talker:
        return per_talker["GN"]
    return sum(per_talker.values())
