"""The trip computer: distance, time, speed, fuel and cost of a trip, live and at its end.

A hub listener fed with samples; no I/O (the summary file is written by tripsummary.py
from the document built here). Everything is integrated over time between consecutive
rows (trapezoids), and an interval longer than ``max_gap`` seconds (an outage, a stall of
the adapter) is not integrated at all: it is counted as a gap, never as ten minutes at
the last known speed.

Units inside: km/h, rpm, g/s of air, kPa, degrees Celsius, L/h of fuel, seconds, metres.
Readings in other units python-OBD may use are converted; a unit that is not known here
is not guessed at (the value is left out and a warning logged once).

Fuel flow, best source first, for each row:

1. FUEL_RATE (PID 5E, L/h), when the car gives it;
2. MAF (g/s of air): fuel mass = MAF / AFR (stoichiometric air-fuel ratio, 14.7 for
   gasoline, 14.5 for diesel), volume = mass / density (0.745 kg/L gasoline, 0.832 diesel):
   L/h = MAF / AFR * 3600 / (1000 * density);
3. speed-density from INTAKE_PRESSURE (MAP), RPM and INTAKE_TEMP (IAT), with
   ENGINE_DISPLACEMENT_L and VOLUMETRIC_EFFICIENCY: see :func:`maf_from_map`.

A diesel runs lean (far above 14.5:1 except under full load), so MAF / 14.5 is an upper
bound for a diesel; FUEL_RATE is the better source where the car has it.
"""

from __future__ import annotations

import copy
import logging
import math
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any

from eccm import __version__
from eccm.sample import Sample, iso_utc
from eccm.trip.dtc import DtcTimeline
from eccm.trip.minutes import MinuteTable

if TYPE_CHECKING:
    from eccm.config import Config

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
AFR = {"gasoline": 14.7, "diesel": 14.5}  # stoichiometric air-fuel ratio, by mass
DENSITY_KG_PER_L = {"gasoline": 0.745, "diesel": 0.832}
R_AIR = 287.05  # J/(kg·K): specific gas constant of dry air
ZERO_CELSIUS_K = 273.15
KM_PER_MILE = 1.609344
L_PER_US_GALLON = 3.785411784
EARTH_RADIUS_M = 6_371_008.8  # mean radius (IUGG)
DEFAULT_MAX_GAP = 5.0  # seconds: a longer interval between two rows is a gap
GNSS_STILL_MPS = 0.5  # below this a receiver's speed is jitter: position noise is not distance
MIN_ECONOMY_KM = 0.1  # no L/100 km or MPG over less than this: 20 m at 1 L/h reads 5000 L/100 km

# Unit of each quantity we read, as python-OBD names it, → (scale, offset) to ours.
# ``None``: a plain number without unit is taken in python-OBD's own unit.
_CONVERSIONS: dict[str, dict[str | None, tuple[float, float]]] = {
    "SPEED": {  # → km/h
        None: (1.0, 0.0),
        "kilometer_per_hour": (1.0, 0.0),
        "meter_per_second": (3.6, 0.0),
        "mile_per_hour": (KM_PER_MILE, 0.0),
    },
    "RPM": {None: (1.0, 0.0), "revolutions_per_minute": (1.0, 0.0)},  # → rpm
    "MAF": {  # → g/s
        None: (1.0, 0.0),
        "gps": (1.0, 0.0),  # python-OBD's own name for grams per second
        "gram_per_second": (1.0, 0.0),
        "kilogram_per_hour": (1000.0 / 3600.0, 0.0),
    },
    "INTAKE_PRESSURE": {  # → kPa
        None: (1.0, 0.0),
        "kilopascal": (1.0, 0.0),
        "pascal": (0.001, 0.0),
    },
    "INTAKE_TEMP": {  # → °C
        None: (1.0, 0.0),
        "degree_Celsius": (1.0, 0.0),
        "kelvin": (1.0, -ZERO_CELSIUS_K),
    },
    "FUEL_RATE": {  # → L/h
        None: (1.0, 0.0),
        "lph": (1.0, 0.0),  # python-OBD's own name for litres per hour
        "liter_per_hour": (1.0, 0.0),
    },
}

FUEL_RATE, MAF, MAP = "FUEL_RATE", "MAF", "MAP"
FUEL_METHODS = (FUEL_RATE, MAF, MAP)


# -- formulas ------------------------------------------------------------------------------
def maf_from_map(
    map_kpa: float, rpm: float, iat_c: float, displacement_l: float, ve: float
) -> float:
    """Air mass flow (g/s) of a four-stroke engine by speed-density.

    MAF [g/s] = MAP [Pa] · RPM [1/min] · VE · Vd [L] / (120 · R [J/(kg·K)] · IAT [K])

    By the ideal gas law one displacement of air at MAP and IAT weighs MAP·Vd/(R·IAT)
    (kg, with Vd in m³); a four-stroke engine draws its displacement once every two
    revolutions, RPM/120 times a second; VE says how full the cylinders really get. Vd in
    litres (10⁻³ m³) and the result in grams (10³ g/kg): the two factors cancel.
    """
    iat_k = iat_c + ZERO_CELSIUS_K
    return (map_kpa * 1000.0) * rpm * ve * displacement_l / (120.0 * R_AIR * iat_k)


def fuel_lph_from_maf(maf_gps: float, afr: float, density_kg_per_l: float) -> float:
    """Fuel volume flow (L/h) from air mass flow (g/s): g/s of fuel = MAF / AFR."""
    return maf_gps / afr * 3600.0 / (density_kg_per_l * 1000.0)


def l_per_100km(fuel_l: float, distance_km: float) -> float | None:
    if distance_km < MIN_ECONOMY_KM:
        return None
    return fuel_l / distance_km * 100.0


def us_mpg(fuel_l: float, distance_km: float) -> float | None:
    """Miles per US gallon; None when no fuel was used or the distance is too short."""
    if distance_km < MIN_ECONOMY_KM or fuel_l <= 0:
        return None
    return (distance_km / KM_PER_MILE) / (fuel_l / L_PER_US_GALLON)


def haversine_m(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Great-circle distance in metres on a spherical Earth.

    Hand-written: five lines, and no geodesy package is a dependency; between two fixes
    a fraction of a second apart the sphere is off by far less than the fixes themselves.
    """
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * EARTH_RADIUS_M * math.asin(min(1.0, math.sqrt(a)))


# -- settings --------------------------------------------------------------------------
@dataclass(frozen=True)
class TripSettings:
    """What the trip computer is configured with (the keys' names in the comments; the
    defaults are config.py's alone)."""

    fuel_type: str  # FUEL_TYPE
    fuel_price: float | None  # FUEL_PRICE, per litre; None: no cost
    displacement_l: float | None  # ENGINE_DISPLACEMENT_L; None: no estimate from MAP
    volumetric_efficiency: float  # VOLUMETRIC_EFFICIENCY
    max_gap: float  # from SAMPLE_INTERVAL: a longer interval between two rows is a gap
    summary_commands: tuple[str, ...]  # SUMMARY_COMMANDS

    @property
    def afr(self) -> float:
        return AFR[self.fuel_type]

    @property
    def density(self) -> float:
        return DENSITY_KG_PER_L[self.fuel_type]

    @classmethod
    def from_config(cls, cfg: Config) -> TripSettings:
        # Rows come every SAMPLE_INTERVAL at best; a few missed rows are not an outage.
        return cls(
            fuel_type=cfg.fuel_type,
            fuel_price=cfg.fuel_price,
            displacement_l=cfg.engine_displacement_l,
            volumetric_efficiency=cfg.volumetric_efficiency,
            max_gap=max(DEFAULT_MAX_GAP, 3.0 * cfg.sample_interval),
            summary_commands=cfg.summary_commands,
        )

    def to_json(self) -> dict[str, object]:
        return {
            "fuel_type": self.fuel_type,
            "air_fuel_ratio": self.afr,
            "fuel_density_kg_per_l": self.density,
            "fuel_price_per_l": self.fuel_price,
            "engine_displacement_l": self.displacement_l,
            "volumetric_efficiency": self.volumetric_efficiency,
            "max_gap_s": self.max_gap,
        }


# -- one row as the trip computer sees it ----------------------------------------------------
@dataclass(frozen=True, slots=True)
class Point:
    time: float
    time_source: str
    engine: bool
    speed_kmh: float | None
    rpm: float | None
    fuel_lph: float | None
    fuel_method: str | None
    lat: float | None = None
    lon: float | None = None
    gnss_speed: float | None = None
    fix_id: tuple[float, float | None] | None = None  # (received, time_utc) of the fix
    mono: float | None = None  # monotonic time of the row, when the hub gave it


# Seconds by which the row times may disagree with the monotonic clock between two rows
# before the difference counts as a step of the clock (NTP, the GNSS correction).
CLOCK_STEP = 1.0


def elapsed(a: Point, b: Point) -> tuple[float | None, bool]:
    """(seconds from row a to row b, whether the clock stepped between them).

    On the monotonic clock when both rows carry it, so that a wall clock set by NTP or by
    the GNSS correction mid-trip neither adds years to a trip nor loses the interval.
    Without it, an interval across a change of time source is unknown (None).
    """
    wall = b.time - a.time
    if a.mono is not None and b.mono is not None:
        dt = b.mono - a.mono
        return dt, abs(wall - dt) > CLOCK_STEP
    if a.time_source != b.time_source:
        return None, True
    return wall, False


class Units:
    """Converts readings to the trip computer's units; warns once per unknown unit."""

    def __init__(self) -> None:
        self._warned: set[tuple[str, str | None]] = set()

    def get(self, sample: Sample, name: str) -> float | None:
        reading = sample.values.get(name)
        if reading is None:
            return None
        value = reading.value
        if isinstance(value, bool) or not isinstance(value, int | float):
            return None
        if not math.isfinite(value):
            return None
        conv = _CONVERSIONS[name].get(reading.unit)
        if conv is None:
            if (name, reading.unit) not in self._warned:
                self._warned.add((name, reading.unit))
                log.warning(
                    "%s is in %r, a unit the trip computer does not know: it is left out "
                    "of the trip figures",
                    name,
                    reading.unit,
                )
            return None
        scale, offset = conv
        return float(value) * scale + offset


def point_of(sample: Sample, settings: TripSettings, units: Units) -> Point:
    speed = units.get(sample, "SPEED")
    rpm = units.get(sample, "RPM")
    fuel: float | None = None
    method: str | None = None
    rate = units.get(sample, "FUEL_RATE")
    if rate is not None and rate >= 0:
        fuel, method = rate, FUEL_RATE
    else:
        maf = units.get(sample, "MAF")
        if maf is not None and maf >= 0:
            fuel, method = fuel_lph_from_maf(maf, settings.afr, settings.density), MAF
        elif settings.displacement_l is not None and rpm is not None:
            map_kpa = units.get(sample, "INTAKE_PRESSURE")
            iat = units.get(sample, "INTAKE_TEMP")
            if map_kpa is not None and iat is not None and iat > -ZERO_CELSIUS_K:
                air = maf_from_map(
                    map_kpa, rpm, iat, settings.displacement_l, settings.volumetric_efficiency
                )
                fuel = fuel_lph_from_maf(air, settings.afr, settings.density)
                method = MAP
    fix = sample.fix
    if fix is not None and fix.has_position:
        assert fix.latitude is not None and fix.longitude is not None
        return Point(
            sample.time,
            sample.time_source,
            sample.engine,
            speed,
            rpm,
            fuel,
            method,
            fix.latitude,
            fix.longitude,
            fix.speed,
            (fix.received, fix.time_utc),
            sample.mono,
        )
    return Point(
        sample.time, sample.time_source, sample.engine, speed, rpm, fuel, method, mono=sample.mono
    )


def _r(value: float | None, digits: int) -> float | None:
    if value is None or not math.isfinite(value):
        return None
    r = round(value, digits)
    return 0.0 if r == 0 else r


# -- one trip ------------------------------------------------------------------------------
@dataclass
class Trip:
    """The running totals of one trip. Not thread-safe: :class:`TripComputer` locks."""

    trip_id: str
    settings: TripSettings
    units: Units = field(default_factory=Units)
    rows: int = 0
    engine_rows: int = 0
    speed_rows: int = 0  # rows with an OBD speed
    fuel_rows: dict[str, int] = field(default_factory=lambda: dict.fromkeys(FUEL_METHODS, 0))
    first: Point | None = None
    last: Point | None = None
    time_sources: set[str] = field(default_factory=set)
    duration_s: float = 0.0
    moving_s: float = 0.0
    idle_s: float = 0.0
    gap_s: float = 0.0
    gaps: int = 0
    clock_steps: int = 0
    distance_m: float = 0.0
    fuel_l: float = 0.0
    fuel_s: dict[str, float] = field(default_factory=lambda: dict.fromkeys(FUEL_METHODS, 0.0))
    # Fuel and distance over the intervals where both are known, for L/100 km and MPG: a
    # stretch without speed must not make the car look frugal, nor one without fuel.
    economy_l: float = 0.0
    economy_m: float = 0.0
    gnss_distance_m: float = 0.0
    last_fix: Point | None = None
    max_speed_kmh: float | None = None
    max_rpm: float | None = None
    # The totals at the last engine row, while position rows follow it (the car went
    # silent): a trip that ends there ends at its last engine row (see drop_silent_tail).
    _at_last_engine: Trip | None = field(default=None, repr=False, compare=False)

    def add(self, sample: Sample) -> Point:
        p = point_of(sample, self.settings, self.units)
        if p.engine:
            self._at_last_engine = None
        elif self.engine_rows and self._at_last_engine is None:
            self._at_last_engine = self._copy()
        self.rows += 1
        self.engine_rows += p.engine
        self.time_sources.add(p.time_source)
        if p.speed_kmh is not None:
            self.speed_rows += 1
            self.max_speed_kmh = max(p.speed_kmh, self.max_speed_kmh or 0.0)
        if p.rpm is not None:
            self.max_rpm = max(p.rpm, self.max_rpm or 0.0)
        if p.fuel_method is not None:
            self.fuel_rows[p.fuel_method] += 1
        if self.first is None:
            self.first = p
        if self.last is not None:
            self._interval(self.last, p)
        if p.fix_id is not None:
            self._gnss(p)
        self.last = p
        return p

    def _copy(self) -> Trip:
        snap = copy.copy(self)
        snap.fuel_rows, snap.fuel_s = dict(self.fuel_rows), dict(self.fuel_s)
        snap.time_sources = set(self.time_sources)
        return snap

    def drop_silent_tail(self) -> None:
        """Forget the position rows after the last engine row: the car stopped answering
        there (ignition off), and the TRIP_END_TIMEOUT of position rows that the hub writes
        until the trip ends must not lengthen its duration. Rows between engine rows (a
        car silent for a while mid-drive) stay counted."""
        snap = self._at_last_engine
        if snap is None:
            return
        for f in fields(self):
            setattr(self, f.name, getattr(snap, f.name))
        self._at_last_engine = None

    def _interval(self, a: Point, b: Point) -> None:
        dt, stepped = elapsed(a, b)
        if stepped:
            # The wall clock was stepped between these rows (GNSS correction, NTP): their
            # time difference is the step, not time that passed.
            self.clock_steps += 1
        if dt is None or dt <= 0:
            return
        self.duration_s += dt
        if dt > self.settings.max_gap:
            self.gaps += 1
            self.gap_s += dt
            return
        metres: float | None = None
        if a.speed_kmh is not None and b.speed_kmh is not None:
            v = (a.speed_kmh + b.speed_kmh) / 2.0
            metres = v / 3.6 * dt
            self.distance_m += metres
            if v > 0:
                self.moving_s += dt
            elif self._running(a) and self._running(b):
                self.idle_s += dt
        if a.fuel_lph is not None and b.fuel_lph is not None:
            litres = (a.fuel_lph + b.fuel_lph) / 2.0 * dt / 3600.0
            self.fuel_l += litres
            self.fuel_s[b.fuel_method or MAF] += dt
            if metres is not None:
                self.economy_l += litres
                self.economy_m += metres

    @staticmethod
    def _running(p: Point) -> bool:
        """Engine running: it turns (RPM > 0), or it answers when RPM is not read."""
        return p.engine and (p.rpm is None or p.rpm > 0)

    def _gnss(self, p: Point) -> None:
        prev = self.last_fix
        if prev is not None and prev.fix_id == p.fix_id:
            return  # the same fix on another row
        self.last_fix = p
        if prev is None:
            return
        dt, _stepped = elapsed(prev, p)
        if dt is None or dt <= 0 or dt > self.settings.max_gap:
            return
        still = (
            prev.gnss_speed is not None
            and p.gnss_speed is not None
            and max(prev.gnss_speed, p.gnss_speed) < GNSS_STILL_MPS
        )
        if still:
            return
        assert prev.lat is not None and prev.lon is not None
        assert p.lat is not None and p.lon is not None
        self.gnss_distance_m += haversine_m(prev.lat, prev.lon, p.lat, p.lon)

    # -- figures -------------------------------------------------------------------------
    @property
    def fuel_method(self) -> str | None:
        """The source of most of the fuel figure (by time, then by rows), or None."""
        best = max(FUEL_METHODS, key=lambda m: (self.fuel_s[m], self.fuel_rows[m]))
        return best if self.fuel_rows[best] > 0 else None

    def totals(self) -> dict[str, object]:
        """The trip's figures, JSON-ready; None where a figure is unknown."""
        price = self.settings.fuel_price
        has_speed = self.speed_rows > 0
        km = self.distance_m / 1000.0
        running = self.moving_s + self.idle_s
        fuel_time = sum(self.fuel_s.values())
        fuel_known = any(self.fuel_rows.values())
        economy_km = self.economy_m / 1000.0
        return {
            "duration_s": _r(self.duration_s, 3),
            "moving_s": _r(self.moving_s, 3),
            "idle_s": _r(self.idle_s, 3),
            "gap_s": _r(self.gap_s, 3),
            "gaps": self.gaps,
            "clock_steps": self.clock_steps,
            "distance_km": _r(km, 4) if has_speed else None,
            "gnss_distance_km": _r(self.gnss_distance_m / 1000.0, 4)
            if self.last_fix is not None
            else None,
            "avg_speed_kmh": _r(km / (running / 3600.0), 2) if running > 0 else None,
            "avg_moving_speed_kmh": _r(km / (self.moving_s / 3600.0), 2)
            if self.moving_s > 0
            else None,
            "max_speed_kmh": _r(self.max_speed_kmh, 2),
            "max_rpm": _r(self.max_rpm, 2),
            "fuel_l": _r(self.fuel_l, 4) if fuel_known else None,
            "fuel_method": self.fuel_method,
            "fuel_s": {m: _r(v, 3) for m, v in self.fuel_s.items()},
            "avg_fuel_rate_lph": _r(self.fuel_l / (fuel_time / 3600.0), 3)
            if fuel_time > 0
            else None,
            "l_per_100km": _r(l_per_100km(self.economy_l, economy_km), 2),
            "mpg_us": _r(us_mpg(self.economy_l, economy_km), 2),
            "fuel_cost": _r(self.fuel_l * price, 2) if fuel_known and price is not None else None,
        }

    def now(self) -> dict[str, object]:
        """Instant figures of the last row."""
        p = self.last
        if p is None:
            return {}
        inst: float | None = None
        if p.fuel_lph is not None and p.speed_kmh is not None and p.speed_kmh > 0:
            inst = p.fuel_lph / p.speed_kmh * 100.0
        return {
            "time": iso_utc(p.time),
            "speed_kmh": _r(p.speed_kmh, 2),
            "rpm": _r(p.rpm, 2),
            "fuel_rate_lph": _r(p.fuel_lph, 3),
            "fuel_method": p.fuel_method,
            "l_per_100km": _r(inst, 2),
        }

    @property
    def time_source(self) -> str:
        if len(self.time_sources) > 1:
            return "mixed"
        return next(iter(self.time_sources), "unknown")


# -- the hub listener --------------------------------------------------------------------
SummarySink = Callable[[dict[str, Any]], None]


def _finite(text: str | None) -> float | None:
    try:
        value = float(text) if text else None
    except ValueError:
        return None
    return value if value is not None and math.isfinite(value) else None


def _no_facts() -> Mapping[str, str]:
    return {}


# Seconds into a trip of its first checkpoint (later ones come every ``checkpoint_every``):
# a car moved a few metres and switched off (the power cut ends the trip) still leaves a
# summary, so the logbook lists every trip whose rows are in the files. Not at the first
# row: a daemon killed as it starts leaves no one-row trip in the logbook.
FIRST_CHECKPOINT = 2.0


class _Running:
    """One trip with its minute table and trouble-code timeline."""

    def __init__(self, trip_id: str, settings: TripSettings) -> None:
        self.trip = Trip(trip_id, settings)
        self.minutes = MinuteTable(settings.summary_commands)
        self.dtc = DtcTimeline()
        self.checkpointed: float | None = None  # when the last checkpoint was handed out
        self.checkpoints = 0  # handed out so far


class TripComputer:
    """The trip computer as a hub listener: one :class:`Trip` per trip id.

    ``on_checkpoint(doc)`` gets the summary so far each time a minute closes (so that a
    power cut loses at most a minute of it) and, with ``checkpoint_every``, also once the
    trip has run that many seconds since the last checkpoint (the first one sooner, after
    :data:`FIRST_CHECKPOINT`), the minute in progress included: in a car the power cut at
    ignition off *is* the usual end of a trip, and a trip shorter than a minute would
    otherwise leave no summary at all.
    ``on_finished(doc)`` gets the final summary when
    the trip ends. Both run in the thread that published (the OBD link's): they must only
    hand the document over, never write it themselves. ``facts()`` gives VIN, protocol and
    adapter for the summary.
    """

    def __init__(
        self,
        settings: TripSettings,
        *,
        car: str = "",
        facts: Callable[[], Mapping[str, str]] | None = None,
        on_checkpoint: SummarySink | None = None,
        on_finished: SummarySink | None = None,
        checkpoint_every: float | None = None,
    ) -> None:
        self.settings = settings
        self._checkpoint_every = checkpoint_every
        self._car = car
        self._facts = facts or _no_facts
        self._on_checkpoint = on_checkpoint
        self._on_finished = on_finished
        self._lock = threading.Lock()
        self._run: _Running | None = None
        self._previous: dict[str, Any] | None = None
        self.trips_finished = 0

    # -- hub listener ----------------------------------------------------------------
    def on_sample(self, sample: Sample) -> None:
        checkpoint: dict[str, Any] | None = None
        finished: dict[str, Any] | None = None
        with self._lock:
            run = self._run
            if run is not None and run.trip.trip_id != sample.trip_id:
                # The hub ends a trip before the next begins; this only guards the order.
                finished = self._finish_locked()
                run = None
            if run is None:
                run = self._run = _Running(sample.trip_id, self.settings)
            minutes = run.minutes
            closed_before = minutes.closed_count
            run.trip.add(sample)
            values = sample.values
            # Only the summarised names: a row carries every logged value.
            minutes.add(
                sample.time,
                {name: r.value for name in minutes.names if (r := values.get(name)) is not None},
            )
            at = sample.time if sample.mono is None else sample.mono
            if run.checkpointed is None:
                run.checkpointed = at
            if minutes.closed_count != closed_before:
                checkpoint = self._document(run, complete=False)
                run.checkpointed = at
            elif self._checkpoint_every is not None and at - run.checkpointed >= (
                min(FIRST_CHECKPOINT, self._checkpoint_every)
                if run.checkpoints == 0
                else self._checkpoint_every
            ):
                checkpoint = self._document(run, complete=False, open_minute=True)
                run.checkpointed = at
            if checkpoint is not None:
                run.checkpoints += 1
        if finished is not None:
            self._hand(self._on_finished, finished)
        if checkpoint is not None:
            self._hand(self._on_checkpoint, checkpoint)

    def on_trip_end(self, trip_id: str) -> None:
        with self._lock:
            if self._run is None or self._run.trip.trip_id != trip_id:
                return
            finished = self._finish_locked()
        self._hand(self._on_finished, finished)

    def stop(self) -> None:
        """The hub stops: a trip still open ends here."""
        with self._lock:
            if self._run is None:
                return
            finished = self._finish_locked()
        self._hand(self._on_finished, finished)

    # -- diagnostics (DtcPoller's sink) ------------------------------------------------
    def on_dtcs(self, trip_id: str, time: float, report: Mapping[str, object]) -> None:
        with self._lock:
            run = self._run
            if run is None or run.trip.trip_id != trip_id:
                return
            events = run.dtc.observe(time, report)
        for event in events:
            if event["event"] != "initial":
                log.warning("trip %s: trouble codes changed: %s", trip_id, _event_text(event))

    def on_dtcs_failed(self, trip_id: str, reason: str) -> None:
        with self._lock:
            run = self._run
            if run is not None and run.trip.trip_id == trip_id:
                run.dtc.failed(reason)

    # -- readers -------------------------------------------------------------------------
    @property
    def trip_id(self) -> str | None:
        with self._lock:
            return None if self._run is None else self._run.trip.trip_id

    def live(self) -> dict[str, Any]:
        """The TRIP reply: the running trip's figures, and the last finished trip's."""
        with self._lock:
            run = self._run
            previous = self._previous
            if run is None:
                return {"active": False, "trip": None, "previous": previous}
            trip = run.trip
            dtc = run.dtc.to_json()
            return {
                "active": True,
                "trip": trip.trip_id,
                "start": None if trip.first is None else iso_utc(trip.first.time),
                "last_time": None if trip.last is None else iso_utc(trip.last.time),
                "rows": trip.rows,
                "time_source": trip.time_source,
                "totals": trip.totals(),
                "now": trip.now(),
                "minute": run.minutes.current(),
                "minutes": len(run.minutes.closed),
                "diagnostics": {
                    "reads": dtc["reads"],
                    "state": dtc["state"],
                    "events": len(run.dtc.events),
                },
                "previous": previous,
            }

    def summary(self) -> dict[str, Any] | None:
        """The summary of the running trip so far (open minute included), or None."""
        with self._lock:
            if self._run is None:
                return None
            return self._document(self._run, complete=False, open_minute=True)

    # -- internals -----------------------------------------------------------------------
    def _finish_locked(self) -> dict[str, Any]:
        run = self._run
        assert run is not None
        self._run = None
        run.trip.drop_silent_tail()
        run.minutes.close()
        doc = self._document(run, complete=True)
        self._previous = {
            "trip": doc["trip"],
            "start": doc["first_time"],
            "end": doc["last_time"],
            "totals": doc["totals"],
        }
        self.trips_finished += 1
        log.info("trip %s: %s", run.trip.trip_id, _totals_text(doc["totals"]))
        return doc

    def _document(
        self, run: _Running, *, complete: bool, open_minute: bool = False
    ) -> dict[str, Any]:
        trip = run.trip
        minutes = run.minutes.closed
        if open_minute:
            current = run.minutes.current()
            if current is not None:
                minutes.append(current)
        facts = self._facts()
        doc: dict[str, Any] = {
            "schema_version": SCHEMA_VERSION,
            "kind": "trip_summary",
            "car": self._car,
            "trip": trip.trip_id,
            "complete": complete,
            "first_time": None if trip.first is None else iso_utc(trip.first.time),
            "last_time": None if trip.last is None else iso_utc(trip.last.time),
            "time_source": trip.time_source,
            "rows": trip.rows,
            "engine_rows": trip.engine_rows,
            "totals": trip.totals(),
            "settings": self.settings.to_json(),
            "summary_commands": list(run.minutes.names),
            "minutes": minutes,
            "diagnostics": run.dtc.to_json(),
        }
        for key in ("vin", "protocol", "adapter"):
            if facts.get(key):
                doc[key] = facts[key]
        # A number, as in STATUS and the sidecars (the hub keeps every fact as text).
        volts = _finite(facts.get("elm_voltage"))
        if volts is not None:
            doc["elm_voltage"] = volts
        doc["eccm_version"] = __version__
        return doc

    @staticmethod
    def _hand(sink: SummarySink | None, doc: dict[str, Any]) -> None:
        if sink is None:
            return
        try:
            sink(doc)
        except Exception:
            log.exception("trip summary of %s not handed over", doc.get("trip"))


def _event_text(event: Mapping[str, object]) -> str:
    if event["event"] in ("mil_on", "mil_off"):
        return "MIL " + ("on" if event["event"] == "mil_on" else "off")
    verb = "new" if event["event"] == "dtc_added" else "gone"
    return f"{verb} {event.get('kind')} code {event.get('code')} ({event.get('description')})"


def _totals_text(t: Mapping[str, object]) -> str:
    parts = [f"{t['duration_s']} s"]
    if t.get("distance_km") is not None:
        parts.append(f"{t['distance_km']} km")
    if t.get("fuel_l") is not None:
        parts.append(f"{t['fuel_l']} L ({t['fuel_method']})")
    if t.get("l_per_100km") is not None:
        parts.append(f"{t['l_per_100km']} L/100 km")
    if t.get("fuel_cost") is not None:
        parts.append(f"cost {t['fuel_cost']}")
    return ", ".join(parts)


__all__ = [
    "AFR",
    "DENSITY_KG_PER_L",
    "R_AIR",
    "Trip",
    "TripComputer",
    "TripSettings",
    "fuel_lph_from_maf",
    "haversine_m",
    "l_per_100km",
    "maf_from_map",
    "us_mpg",
]
