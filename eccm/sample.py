"""Samples (a time plus the latest named values) and how they become rows of a data file."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from eccm.gnss.fix import Fix

Plain = float | int | str | None

GPS_COLUMNS: tuple[str, ...] = (
    "GPS_TIME_UTC",
    "GPS_LATITUDE",
    "GPS_LONGITUDE",
    "GPS_ALTITUDE",
    "GPS_SPEED",
    "GPS_TRACK",
    "GPS_FIX_QUALITY",
    "GPS_SATELLITES",
    "GPS_HDOP",
)
GPS_UNITS: dict[str, tuple[str, str]] = {
    "GPS_TIME_UTC": ("", "UTC time of the fix from the receiver, GPS week rollover corrected"),
    "GPS_LATITUDE": ("degree", "latitude, WGS84, north positive"),
    "GPS_LONGITUDE": ("degree", "longitude, WGS84, east positive"),
    "GPS_ALTITUDE": ("meter", "altitude above mean sea level"),
    "GPS_SPEED": ("meter_per_second", "speed over ground"),
    "GPS_TRACK": ("degree", "course over ground, true north"),
    "GPS_FIX_QUALITY": (
        "",
        "GGA fix quality: 1 GPS, 2 DGPS, 4 RTK fixed, 5 RTK float, 6 dead reckoning",
    ),
    "GPS_SATELLITES": ("count", "satellites used in the fix"),
    "GPS_HDOP": ("", "horizontal dilution of precision"),
}
BASE_COLUMNS: tuple[str, ...] = ("TIME_UTC", "CAR_ID", "TRIP_ID")
BASE_UNITS: dict[str, tuple[str, str]] = {
    "TIME_UTC": ("", "UTC time of the row, ISO 8601 with milliseconds"),
    "CAR_ID": ("", "CAR_IDENTIFIER of the car"),
    "TRIP_ID": ("", "UTC start of the trip, YYYYMMDDTHHMMSSZ"),
}


# Oldest a fast engine value may be in a row or a GET, whatever the cycle: as a position
# older than GPS_MAX_FIX_AGE, an older value is left empty (the adapter is in trouble).
FAST_AGE_CAP = 1.0


@dataclass(frozen=True, slots=True)
class Reading:
    """One value read from the car: a plain number or text, never a pint Quantity."""

    value: Plain
    unit: str | None
    at: float  # monotonic time of the read


@dataclass(frozen=True, slots=True)
class Sample:
    time: float  # seconds since the epoch, GNSS-corrected when the system clock is off
    trip_id: str
    values: Mapping[str, Reading]
    fix: Fix | None  # only a fresh fix; None when stale or absent
    layout: Layout
    time_source: str = "system"  # "system" or "gnss"
    engine: bool = True  # False for GNSS-only rows written while the car does not answer
    meta: Mapping[str, str] = field(default_factory=dict)
    # Monotonic time of the row: durations between rows, immune to steps of the wall clock.
    mono: float | None = None


def iso_utc(epoch: float) -> str:
    """2026-11-22T02:20:05.123Z (milliseconds, always UTC)."""
    dt = datetime.fromtimestamp(epoch, tz=UTC)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"


def trip_id_for(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, tz=UTC).strftime("%Y%m%dT%H%M%SZ")


def format_value(value: Plain) -> str:
    """A cell: plain number without unit, text, or empty. Never 'None', 'nan' or 'inf'."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        cell = _FLOAT_CELLS.get(value)
        if cell is None:
            cell = _float_cell(value)
            # Zero is left out (-0.0 == 0.0 would share one cell, "-0" or "0"), and so
            # are NaN and infinities (an empty cell; NaN never finds itself).
            if value and cell and len(_FLOAT_CELLS) < _FLOAT_CELLS_MAX:
                _FLOAT_CELLS[value] = cell
        return cell
    return value


# A row's values repeat from row to row (the same answers decode to the same floats):
# each distinct float is formatted once. Bounded: past the bound, new floats are
# formatted each time.
_FLOAT_CELLS: dict[float, str] = {}
_FLOAT_CELLS_MAX = 4096


def _float_cell(value: float) -> str:
    if not math.isfinite(value):
        return ""
    # Rounded to 7 decimals: beyond the resolution of any OBD scaling or of a fix
    # (1 cm), and it keeps 16.862745098039216 from bloating every row.
    text = repr(round(value, 7))
    return text[:-2] if text.endswith(".0") else text


@dataclass(frozen=True)
class Layout:
    """The columns of a data file, in SPEC order.

    ``info`` maps an OBD column to (unit, description) for the sidecar; it does not take
    part in equality, so a file rotates only when the columns themselves change.
    """

    fast: tuple[str, ...]
    slow: tuple[str, ...]
    gps: bool
    info: Mapping[str, tuple[str, str]] = field(default_factory=dict, compare=False, hash=False)

    def describe(self, column: str) -> tuple[str, str]:
        """(unit, description) of any column of this layout."""
        if column in BASE_UNITS:
            return BASE_UNITS[column]
        if column in GPS_UNITS:
            return GPS_UNITS[column]
        return self.info.get(column, ("", ""))

    @property
    def described(self) -> bool:
        """:meth:`describe` answers without waiting: the units of the OBD columns are at
        hand. The first layout's come from python-OBD, looked up once it is imported."""
        return bool(getattr(self.info, "ready", True))

    @property
    def obd(self) -> tuple[str, ...]:
        return self.fast + tuple(n for n in self.slow if n not in self.fast)

    @property
    def header(self) -> list[str]:
        return [*BASE_COLUMNS, *self.obd, *(GPS_COLUMNS if self.gps else ())]

    def row(self, sample: Sample, car_id: str) -> list[str]:
        cells = [iso_utc(sample.time), car_id, sample.trip_id]
        values = sample.values
        for name in self.obd:
            reading = values.get(name)
            cells.append("" if reading is None else format_value(reading.value))
        if self.gps:
            cells.extend(gps_cells(sample.fix))
        return cells


def gps_cells(fix: Fix | None) -> Sequence[str]:
    if fix is None or not fix.has_position:
        return [""] * len(GPS_COLUMNS)
    return [
        "" if fix.time_utc is None else iso_utc(fix.time_utc),
        format_value(fix.latitude),
        format_value(fix.longitude),
        format_value(fix.altitude),
        format_value(fix.speed),
        format_value(fix.track),
        format_value(fix.quality),
        format_value(fix.satellites),
        format_value(fix.hdop),
    ]
