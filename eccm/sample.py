"""Samples (a time plus the latest named values) and how they become rows of a data file."""

from __future__ import annotations

import functools
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
    if 0 <= epoch < _ISO_FAST_LIMIT:
        # What datetime.fromtimestamp does (the fraction rounded half-even to whole
        # microseconds, a carry into the next second), without formatting the date and
        # time of day again for every row of the same second: strftime was a tenth of a
        # row's cost. tests/test_sample.py compares it with the datetime way.
        second = math.floor(epoch)
        micro = round((epoch - second) * 1e6)
        if micro >= 1_000_000:
            second += 1
            micro -= 1_000_000
        prefix = _ISO_SECONDS.get(second)
        if prefix is None:
            if len(_ISO_SECONDS) >= _ISO_SECONDS_MAX:
                _ISO_SECONDS.clear()
            prefix = _ISO_SECONDS[second] = _iso_second(second)
        return f"{prefix}{micro // 1000:03d}Z"
    return _iso_utc_datetime(epoch)


def _iso_utc_datetime(epoch: float) -> str:
    dt = datetime.fromtimestamp(epoch, tz=UTC)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"


def _iso_second(second: int) -> str:
    return datetime.fromtimestamp(second, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S.")


# Up to the year 9999 (beyond, datetime raises as before); negative times take the
# datetime way (a fraction below zero is not exact after floor).
_ISO_FAST_LIMIT = 253_402_300_799
# Seconds whose text is kept: the rows' and the fixes' seconds of the last minute or so.
_ISO_SECONDS: dict[int, str] = {}
_ISO_SECONDS_MAX = 128


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

    @functools.cached_property
    def obd(self) -> tuple[str, ...]:
        # Cached: a row's cells are taken in this order, for every row.
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


def clean_cell(cell: str, separator: str = "\t") -> str:
    """A cell without line breaks, without ``separator`` and without double quotes, so that
    the csv module never has to quote it."""
    # One row is one line: recovery cuts a file back to its last newline, which is only
    # safe if no cell carries a newline of its own.
    if "\n" in cell or "\r" in cell:
        cell = cell.replace("\r\n", " ").replace("\n", " ").replace("\r", " ")
    # A quoted cell ("Closed loop, using oxygen sensor feedback ..." of FUEL_STATUS in a
    # .csv file) splits in two in every reader that does not unquote: Athena's and Trino's
    # TEXTFILE tables, Hive, cut, awk. Every later column of the row then holds its
    # neighbour's value. Text cells are words for people: ';' (or ',') reads the same.
    if separator in cell:
        cell = cell.replace(separator, "," if separator == ";" else ";")
    if '"' in cell:
        cell = cell.replace('"', "'")
    return cell


_UNSET = object()


class RowCells:
    """The cells of rows, as ``[clean_cell(c, separator) for c in layout.row(sample, car_id)]``
    gives them, for one writer.

    Each column remembers its last value and cell: a value that is the very object of
    the row before (python-OBD's decoding is cached per distinct answer, so an unchanged
    answer hands out the same object) is not formatted again, nor is the same fix.
    tests/test_sample.py checks the cells against ``Layout.row``.
    """

    def __init__(self, separator: str = "\t") -> None:
        self._sep = separator
        self._layout: Layout | None = None
        self._names: tuple[str, ...] = ()
        self._last: list[tuple[object, str]] = []
        self._fix: object = _UNSET
        self._fix_cells: list[str] = []

    def row(self, sample: Sample, car_id: str) -> list[str]:
        layout = sample.layout
        if layout is not self._layout:
            self._layout = layout
            self._names = layout.obd
            self._last = [(_UNSET, "")] * len(self._names)
        sep = self._sep
        cells = [iso_utc(sample.time), clean_cell(car_id, sep), clean_cell(sample.trip_id, sep)]
        append = cells.append
        values = sample.values
        last = self._last
        for i, name in enumerate(self._names):
            reading = values.get(name)
            if reading is None:
                append("")
                continue
            value = reading.value
            seen, cell = last[i]
            if value is not seen:
                cell = clean_cell(format_value(value), sep)
                last[i] = (value, cell)
            append(cell)
        if layout.gps:
            fix = sample.fix
            if fix is not self._fix:
                self._fix = fix
                self._fix_cells = [clean_cell(c, sep) for c in gps_cells(fix)]
            cells.extend(self._fix_cells)
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
