"""gpsd JSON reports → :class:`~eccm.gnss.fix.Fix` (pure: no I/O, no threads).

gpsd speaks one JSON object per line. TPV reports carry the solution; SKY reports carry the
satellites used and the HDOP, which are merged into the following TPV fixes.
See https://gpsd.gitlab.io/gpsd/gpsd_json.html.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import math
from typing import Any

from eccm.clock import Clock
from eccm.gnss.fix import (
    ALTITUDE_RANGE,
    DATE_HORIZON,
    MAX_HDOP,
    MAX_SATELLITES,
    MAX_SPEED,
    RELEASE_PIVOT,
    DropCounter,
    Fix,
    bounded,
)

log = logging.getLogger(__name__)

WATCH_COMMAND: bytes = b'?WATCH={"enable":true,"json":true};\n'

# A SKY report with every satellite of four constellations runs to a few KiB; this bound
# only keeps a peer that never sends a newline from growing memory.
MAX_LINE = 64 * 1024

# gpsd's TPV "status" → the GGA fix quality used in the data files.
_QUALITY_OF_STATUS = {2: 2, 3: 4, 4: 5, 5: 6, 6: 6, 8: 8}


class GpsdDecoder:
    """Feed gpsd's bytes in any chunking; get one :class:`Fix` per TPV report.

    Lines that are not JSON objects are skipped and counted in :attr:`skipped`;
    :meth:`feed` never raises.
    """

    def __init__(
        self, clock: Clock, drops: DropCounter | None = None, pivot: dt.date = RELEASE_PIVOT
    ) -> None:
        self._clock = clock
        self._drops = drops or DropCounter(clock)  # values out of physical range
        # gpsd resolved the week rollover against its own build date, so its time is not
        # moved here; but a time at or after pivot + DATE_HORIZON is no time (as an RMC
        # date there is): found, gpsd's 2068 was adopted once three epochs agreed.
        self._horizon = dt.datetime.combine(pivot + DATE_HORIZON, dt.time(), dt.UTC).timestamp()
        self._warned_time = False
        self.rejected_times = 0  # TPV times past the horizon: no time from them
        self.sentences = 0  # JSON reports understood (any class)
        self.skipped = 0
        self._buffer = bytearray()
        self._discarding = False  # inside a line that overflowed MAX_LINE
        self._satellites: int | None = None
        self._hdop: float | None = None

    @property
    def dropped(self) -> int:
        """Values dropped as impossible (left empty) so far."""
        return self._drops.total

    def feed(self, data: bytes) -> list[Fix]:
        received = self._clock.monotonic()
        received_wall = self._clock.time()
        fixes: list[Fix] = []
        self._buffer += data
        while True:
            nl = self._buffer.find(b"\n")
            if nl < 0:
                break
            line = bytes(self._buffer[:nl])
            del self._buffer[: nl + 1]
            if self._discarding:
                self._discarding = False
                continue
            if len(line) > MAX_LINE:
                self._skip(f"line longer than {MAX_LINE} bytes")
                continue
            fix = self._line(line, received, received_wall)
            if fix is not None:
                fixes.append(fix)
        if len(self._buffer) > MAX_LINE:
            self._buffer.clear()
            if not self._discarding:
                self._discarding = True
                self._skip(f"line longer than {MAX_LINE} bytes")
        return fixes

    def _skip(self, why: str, detail: object = "") -> None:
        self.skipped += 1
        log.debug("gpsd: skipped %s %s", why, detail)

    def _line(self, line: bytes, received: float, received_wall: float) -> Fix | None:
        if not line.strip():
            return None
        try:
            report = json.loads(line)
        except (ValueError, RecursionError) as e:
            self._skip("line that is not JSON", f"{line[:100]!r}: {e}")
            return None
        if not isinstance(report, dict):
            self._skip("JSON that is not an object", repr(line[:100]))
            return None
        try:
            cls = report.get("class")
            if cls == "SKY":
                self._sky(report)
            fix = self._tpv(report, received, received_wall) if cls == "TPV" else None
        except (ValueError, TypeError, OverflowError) as e:
            self._skip("report with bad fields", f"{line[:100]!r}: {e}")
            return None
        self.sentences += 1
        return fix

    def _sky(self, report: dict[str, Any]) -> None:
        used = _integer(report.get("uSat"))
        if used is None and isinstance(report.get("satellites"), list):
            used = sum(
                1 for s in report["satellites"] if isinstance(s, dict) and s.get("used") is True
            )
        hdop = bounded(_number(report.get("hdop")), 0.0, MAX_HDOP, "HDOP", self._drops)
        if used is not None and not 0 <= used <= MAX_SATELLITES:
            self._drops.drop("satellites", used)
            used = None
        # gpsd sends SKY reports that carry only some fields; keep what the last one said.
        if used is not None:
            self._satellites = used
        if hdop is not None:
            self._hdop = hdop

    def _tpv(self, report: dict[str, Any], received: float, received_wall: float) -> Fix:
        mode = _integer(report.get("mode")) or 0
        time_utc = self._plausible(_time(report.get("time")))
        lat = _number(report.get("lat"))
        lon = _number(report.get("lon"))
        positioned = mode >= 2 and lat is not None and lon is not None
        if positioned and not (abs(lat or 0.0) <= 90 and abs(lon or 0.0) <= 180):
            self._drops.drop("position", (lat, lon))
            positioned = False
        altitude = _number(report.get("altMSL"))
        if altitude is None:
            altitude = _number(report.get("alt"))  # gpsd before 3.20 has only "alt"
        if mode >= 3:
            altitude = bounded(altitude, *ALTITUDE_RANGE, "altitude", self._drops)
        status = _integer(report.get("status"))
        quality = (_QUALITY_OF_STATUS.get(status or 0, 1)) if positioned else 0
        return Fix(
            time_utc=time_utc,
            latitude=lat if positioned else None,
            longitude=lon if positioned else None,
            altitude=altitude if mode >= 3 else None,
            speed=bounded(_number(report.get("speed")), 0.0, MAX_SPEED, "speed", self._drops),
            track=bounded(_number(report.get("track")), 0.0, 360.0, "track", self._drops),
            quality=quality,
            satellites=self._satellites,
            hdop=self._hdop,
            received=received,
            received_wall=received_wall,
        )

    def _plausible(self, time_utc: float | None) -> float | None:
        if time_utc is None or time_utc < self._horizon:
            return time_utc
        self.rejected_times += 1
        when = dt.datetime.fromtimestamp(time_utc, dt.UTC).isoformat()
        if not self._warned_time:
            self._warned_time = True  # once: gpsd says it at every report
            log.warning(
                "gpsd reports the time %s, which is no plausible time for this release "
                "(not on or after %s): its time is ignored; the position is kept",
                when,
                dt.datetime.fromtimestamp(self._horizon, dt.UTC).date().isoformat(),
            )
        else:
            log.debug("gpsd: implausible time %s ignored", when)
        return None


def _number(value: object) -> float | None:
    # bool is an int in Python but never a measurement in gpsd's reports.
    if value is None or isinstance(value, bool):
        return None
    if not isinstance(value, int | float):
        raise ValueError(f"bad number {value!r}")
    v = float(value)
    return v if math.isfinite(v) else None


def _integer(value: object) -> int | None:
    v = _number(value)
    return None if v is None else int(v)


def _time(value: object) -> float | None:
    # Taken as is: gpsd already moved a GPS week rollover date forward (against its own
    # build date), and a second correction here could only push a right time 19.6 years on.
    if value is None:
        return None
    if not isinstance(value, str):
        raise ValueError(f"bad time {value!r}")
    t = dt.datetime.fromisoformat(value)
    if t.tzinfo is None:
        t = t.replace(tzinfo=dt.UTC)
    return t.timestamp()
