"""The driver's logbook: one line per trip, from its summary and the ends of its data.

Pure: the figures (duration, distance, fuel, L/100 km, cost) are the trip summary's own,
so the logbook and the report never disagree with it; what a summary does not hold
(positions and odometer at start and end) comes from the first and last rows of the trip's
data files that carry them. Formatting as a table, CSV (SPEC §9's columns) or JSON.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, fields
from datetime import date, datetime, tzinfo
from typing import Any

from eccm.report.datafile import Row, first_with, number

COLUMNS = [
    "car",
    "trip",
    "start",
    "end",
    "duration_s",
    "distance_km",
    "start_lat",
    "start_lon",
    "end_lat",
    "end_lon",
    "odometer_start_km",
    "odometer_end_km",
    "fuel_l",
    "l_per_100km",
    "fuel_cost",
    "mil",
    "new_dtcs",
    "complete",
]


@dataclass(frozen=True)
class Ends:
    """What the first and last rows of a trip tell: position and odometer."""

    start_lat: float | None = None
    start_lon: float | None = None
    end_lat: float | None = None
    end_lon: float | None = None
    odometer_start_km: float | None = None
    odometer_end_km: float | None = None


@dataclass(frozen=True)
class Span:
    """The times of a trip's first and last rows in its data files (None: no row), and
    the earliest and latest of every row's when they were read (a clock stepped back
    during the trip: its rows are not in time order)."""

    first: datetime | None = None
    last: datetime | None = None
    earliest: datetime | None = None
    latest: datetime | None = None


def span_of(first_rows: Sequence[Row], last_rows: Sequence[Row]) -> Span:
    """First and last row times of a trip from the rows of its first and last data file."""

    def at(rows: Iterable[Row]) -> datetime | None:
        for row in rows:
            try:
                return parse_time(row["TIME_UTC"])
            except (KeyError, ValueError):
                continue
        return None

    return Span(at(first_rows), at(reversed(last_rows)))


def row_times(rows: Iterable[Row]) -> list[datetime]:
    """The TIME_UTC of each row that has a readable one."""
    out = []
    for row in rows:
        try:
            out.append(parse_time(row["TIME_UTC"]))
        except (KeyError, ValueError):
            continue
    return out


def ends_of(first_rows: Sequence[Row], last_rows: Sequence[Row]) -> Ends:
    """Ends of a trip from the rows of its first and of its last data file."""
    lat, lon = "GPS_LATITUDE", "GPS_LONGITUDE"
    start = first_with(first_rows, lat, lon)
    end = first_with(reversed(last_rows), lat, lon)
    odo_start = first_with(first_rows, "ODOMETER")
    odo_end = first_with(reversed(last_rows), "ODOMETER")
    return Ends(
        start_lat=number(start, lat) if start else None,
        start_lon=number(start, lon) if start else None,
        end_lat=number(end, lat) if end else None,
        end_lon=number(end, lon) if end else None,
        odometer_start_km=number(odo_start, "ODOMETER") if odo_start else None,
        odometer_end_km=number(odo_end, "ODOMETER") if odo_end else None,
    )


@dataclass(frozen=True)
class Entry:
    car: str
    trip: str
    start: datetime
    end: datetime
    duration_s: float | None
    distance_km: float | None
    start_lat: float | None
    start_lon: float | None
    end_lat: float | None
    end_lon: float | None
    odometer_start_km: float | None
    odometer_end_km: float | None
    fuel_l: float | None
    l_per_100km: float | None
    fuel_cost: float | None
    mil: bool
    new_dtcs: tuple[str, ...]
    # False: the summary was recovered after a power cut (its figures stop at its last
    # checkpoint, at most 10 s before the rows do), or the trip has rows but no summary.
    complete: bool = True


def parse_time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def _float(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def mil_and_new_codes(summary: dict[str, Any]) -> tuple[bool, tuple[str, ...]]:
    """Whether the MIL was on at any read of the trip, and the codes that appeared during it
    (``dtc_added`` events; codes already there at the first read are not new)."""
    diag = summary.get("diagnostics") or {}
    events = diag.get("events") or []
    mil = bool((diag.get("state") or {}).get("mil"))
    codes: list[str] = []
    for ev in events:
        if ev.get("mil") is True or ev.get("event") == "mil_on":
            mil = True
        if ev.get("event") == "dtc_added" and ev.get("code") and ev["code"] not in codes:
            codes.append(str(ev["code"]))
    return mil, tuple(codes)


def entry(summary: dict[str, Any], ends: Ends, span: Span | None = None) -> Entry:
    totals = summary.get("totals") or {}
    mil, codes = mil_and_new_codes(summary)
    complete = summary.get("complete") is not False
    start = parse_time(summary["first_time"])
    end = parse_time(summary["last_time"])
    if not complete and span is not None and span.last is not None and span.last > end:
        # A summary recovered from its last checkpoint ends before the rows the files kept:
        # the logbook's end is the last row's, so TIME_UTC BETWEEN start AND end holds them.
        end = span.last
    if span is not None and span.earliest is not None and span.latest is not None:
        # The clock stepped back during the trip (a correction of a clock that was ahead):
        # rows before the first one's time, or after the last one's.
        start, end = min(start, span.earliest), max(end, span.latest)
    return Entry(
        complete=complete,
        car=str(summary["car"]),
        trip=str(summary["trip"]),
        start=start,
        end=end,
        duration_s=_float(totals.get("duration_s")),
        distance_km=_float(totals.get("distance_km")),
        fuel_l=_float(totals.get("fuel_l")),
        l_per_100km=_float(totals.get("l_per_100km")),
        fuel_cost=_float(totals.get("fuel_cost")),
        mil=mil,
        new_dtcs=codes,
        **asdict(ends),
    )


def without_summary(car: str, trip: str, ends: Ends, span: Span) -> Entry | None:
    """A trip whose rows are in the files but that has no summary (cut by a power cut in
    its first seconds, or its summary lost): its times and ends, no figures."""
    if span.first is None or span.last is None:
        return None
    return Entry(
        car=car,
        trip=trip,
        start=span.first,
        end=span.last,
        duration_s=None,
        distance_km=None,
        fuel_l=None,
        l_per_100km=None,
        fuel_cost=None,
        mil=False,
        new_dtcs=(),
        complete=False,
        **asdict(ends),
    )


def selected(
    entries: Iterable[Entry], since: date | None, until: date | None, zone: tzinfo
) -> list[Entry]:
    """Trips that start on or after ``since`` and on or before ``until`` (dates in ``zone``),
    oldest first."""
    out = []
    for e in entries:
        day = e.start.astimezone(zone).date()
        if (since is None or day >= since) and (until is None or day <= until):
            out.append(e)
    return sorted(out, key=lambda e: (e.start, e.car))


def _cell(value: Any, zone: tzinfo) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, datetime):
        # Milliseconds, as TIME_UTC and the JSON logbook: cut to the second, the end fell
        # before the trip's last rows (a join on TIME_UTC BETWEEN start AND end lost them).
        return value.astimezone(zone).isoformat(timespec="milliseconds")
    if isinstance(value, tuple):
        return " ".join(value)
    if isinstance(value, float):
        return repr(value)
    return str(value)


def as_csv(entries: Sequence[Entry], zone: tzinfo) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(COLUMNS)
    for e in entries:
        w.writerow([_cell(getattr(e, c), zone) for c in COLUMNS])
    return buf.getvalue()


def as_json(entries: Sequence[Entry], zone: tzinfo) -> str:
    docs = []
    for e in entries:
        doc: dict[str, Any] = {}
        for f in fields(e):
            v = getattr(e, f.name)
            if isinstance(v, datetime):
                v = v.astimezone(zone).isoformat(timespec="milliseconds")
            elif isinstance(v, tuple):
                v = list(v)
            doc[f.name] = v
        docs.append(doc)
    return json.dumps(docs, indent=1) + "\n"


def _end(start: datetime, end: datetime) -> str:
    """The end's time of day, with its date when that is not the start's (a drive past
    midnight read as ending before it began)."""
    if end.date() == start.date():
        return end.strftime("%H:%M")
    return end.strftime("%Y-%m-%d %H:%M")


def _km(v: float | None, digits: int = 1) -> str:
    return "" if v is None else f"{v:.{digits}f}"


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return ""
    s = round(seconds)
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


def _place(lat: float | None, lon: float | None) -> str:
    return "" if lat is None or lon is None else f"{lat:.5f},{lon:.5f}"


def as_table(entries: Sequence[Entry], zone: tzinfo) -> str:
    """A table for a terminal: aligned columns, a total line."""
    head = [
        "car",
        "start",
        "end",
        "time",
        "km",
        "from",
        "to",
        "odometer",
        "fuel L",
        "L/100km",
        "cost",
        "MIL",
        "new codes",
    ]
    rows: list[list[str]] = []
    cut = CUT_MARK if any(not e.complete for e in entries) else ""
    for e in entries:
        odo = ""
        if e.odometer_start_km is not None and e.odometer_end_km is not None:
            odo = f"{e.odometer_start_km:.0f}-{e.odometer_end_km:.0f}"
        rows.append(
            [
                e.car,
                e.start.astimezone(zone).strftime("%Y-%m-%d %H:%M"),
                _end(e.start.astimezone(zone), e.end.astimezone(zone)),
                _duration(e.duration_s),
                _km(e.distance_km, 2) + ("" if e.complete else CUT_MARK).rjust(len(cut)),
                _place(e.start_lat, e.start_lon),
                _place(e.end_lat, e.end_lon),
                odo,
                _km(e.fuel_l, 2),
                _km(e.l_per_100km),
                _km(e.fuel_cost, 2),
                "on" if e.mil else "",
                " ".join(e.new_dtcs),
            ]
        )
    # The sum of the known figures; empty when no trip knows it (GNSS-only trips have no
    # distance from SPEED and no fuel: a total of 0.00 claimed what no row said).
    kms = [e.distance_km for e in entries if e.distance_km is not None]
    fuels = [e.fuel_l for e in entries if e.fuel_l is not None]
    # A trip without a summary (still running, or cut in its first seconds) has no time.
    durations = [e.duration_s for e in entries if e.duration_s is not None]
    costs = [e.fuel_cost for e in entries if e.fuel_cost is not None]
    rows.append(
        [
            f"{len(entries)} trip(s)",
            "",
            "",
            _duration(sum(durations)) if durations else "",
            f"{sum(kms):.2f}" if kms else "",
            "",
            "",
            "",
            f"{sum(fuels):.2f}" if fuels else "",
            "",
            f"{sum(costs):.2f}" if costs else "",
            "",
            "",
        ]
    )
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    numeric = {3, 4, 7, 8, 9, 10}

    def line(cells: list[str]) -> str:
        parts = [
            c.rjust(w) if i in numeric else c.ljust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        ]
        return "  ".join(parts).rstrip()

    out = [line(head), line(["-" * w for w in widths])]
    out += [line(r) for r in rows[:-1]]
    out += [line(["-" * w for w in widths]), line(rows[-1])]
    if cut:
        out.append(CUT_NOTE)
    return "\n".join(out) + "\n"


CUT_MARK = "*"
CUT_NOTE = (
    "* cut by a power cut: the figures stop at the summary's last checkpoint (at most 10 s "
    "before the rows do); none: the trip has rows but no summary yet (still running: its "
    "summary is written when it ends; or cut in its first 2 s, or its summary lost)"
)
