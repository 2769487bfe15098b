"""Time series of one trip for the report's plots, from the rows of its data files.

Pure. Fuel rate per row as the trip computer takes it (``FUEL_RATE``, else from ``MAF``,
else speed-density from ``INTAKE_PRESSURE``), with the summary's own settings (air-fuel
ratio, density, displacement, VE), and cumulative fuel by trapezoids that skip the
summary's gaps, so the curve ends at the summary's ``fuel_l`` (up to the rows a power cut
took from the summary's last checkpoint).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from eccm.report.datafile import Row, number
from eccm.report.logbook import parse_time
from eccm.trip.computer import fuel_lph_from_maf, maf_from_map

PLOTTED = ("SPEED", "RPM", "COOLANT_TEMP", "THROTTLE_POS", "ENGINE_LOAD", "GPS_SPEED")


@dataclass
class Series:
    times: list[datetime] = field(default_factory=list)
    values: dict[str, list[float | None]] = field(default_factory=dict)
    fuel_lph: list[float | None] = field(default_factory=list)
    fuel_cum_l: list[float] = field(default_factory=list)
    track: list[tuple[float, float, float | None]] = field(default_factory=list)  # lat, lon, km/h

    def has(self, column: str) -> bool:
        return any(v is not None for v in self.values.get(column, []))


def fuel_rate(row: Row, settings: Mapping[str, Any]) -> float | None:
    """L/h of one row, by the trip computer's order of sources."""
    rate = number(row, "FUEL_RATE")
    if rate is not None and rate >= 0:
        return rate
    afr = float(settings.get("air_fuel_ratio") or 14.7)
    density = float(settings.get("fuel_density_kg_per_l") or 0.745)
    maf = number(row, "MAF")
    if maf is not None and maf >= 0:
        return fuel_lph_from_maf(maf, afr, density)
    disp = settings.get("engine_displacement_l")
    rpm, map_kpa, iat = (
        number(row, "RPM"),
        number(row, "INTAKE_PRESSURE"),
        number(row, "INTAKE_TEMP"),
    )
    if disp and rpm is not None and map_kpa is not None and iat is not None and iat > -273.15:
        ve = float(settings.get("volumetric_efficiency") or 0.85)
        return fuel_lph_from_maf(maf_from_map(map_kpa, rpm, iat, float(disp), ve), afr, density)
    return None


def series(rows: Sequence[Row], settings: Mapping[str, Any]) -> Series:
    out = Series(values={c: [] for c in PLOTTED})
    max_gap = float(settings.get("max_gap_s") or 5.0)
    total = 0.0
    prev: tuple[datetime, float | None] | None = None
    for row in rows:
        try:
            t = parse_time(row["TIME_UTC"])
        except ValueError:
            continue
        out.times.append(t)
        for c in PLOTTED:
            out.values[c].append(number(row, c))
        rate = fuel_rate(row, settings)
        out.fuel_lph.append(rate)
        if prev is not None and prev[1] is not None and rate is not None:
            dt = (t - prev[0]).total_seconds()
            if 0 < dt <= max_gap:
                total += (prev[1] + rate) / 2 * dt / 3600.0
        out.fuel_cum_l.append(total)
        prev = (t, rate)
        lat, lon = number(row, "GPS_LATITUDE"), number(row, "GPS_LONGITUDE")
        if lat is not None and lon is not None:
            gps = number(row, "GPS_SPEED")
            speed = number(row, "SPEED")
            out.track.append(
                (lat, lon, speed if speed is not None else (gps * 3.6 if gps else None))
            )
    return out
