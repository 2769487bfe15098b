"""The trip computer on synthetic samples whose answers are known analytically."""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Iterator
from typing import Any

import pytest

from eccm.config import parse
from eccm.gnss.fix import Fix
from eccm.sample import Layout, Reading, Sample
from eccm.trip.computer import (
    Trip,
    TripComputer,
    TripSettings,
    fuel_lph_from_maf,
    haversine_m,
    maf_from_map,
)
from tests.trip_helpers import trip_settings

T0 = 1_700_000_040.0  # 2023-11-14T22:14:00Z, a minute boundary
LAYOUT = Layout(fast=("RPM", "SPEED", "MAF"), slow=(), gps=True)
UNITS = {
    "SPEED": "kilometer_per_hour",
    "RPM": "revolutions_per_minute",
    "MAF": "gps",
    "INTAKE_PRESSURE": "kilopascal",
    "INTAKE_TEMP": "degree_Celsius",
    "FUEL_RATE": "lph",
    "COOLANT_TEMP": "degree_Celsius",
}
GASOLINE_G_PER_L = 745.0  # 0.745 kg/L
DIESEL_G_PER_L = 832.0
US_GALLON_L = 3.785411784
MILE_KM = 1.609344


def sample(
    t: float,
    *,
    trip: str = "20231114T221400Z",
    engine: bool = True,
    fix: Fix | None = None,
    source: str = "system",
    units: dict[str, str | None] | None = None,
    **values: float | str | None,
) -> Sample:
    u: dict[str, str | None] = {**UNITS, **(units or {})}
    return Sample(
        time=t,
        trip_id=trip,
        values={k: Reading(v, u.get(k), t) for k, v in values.items()},
        fix=fix,
        layout=LAYOUT,
        time_source=source,
        engine=engine,
    )


def fix_at(lat: float, lon: float, received: float, speed: float = 10.0) -> Fix:
    return Fix(received, lat, lon, 200.0, speed, 0.0, 1, 9, 0.8, received, received)


def rows(seconds: float, step: float = 0.2, start: float = T0) -> Iterator[float]:
    n = round(seconds / step)
    for i in range(n + 1):
        yield start + i * step


def drive(settings: TripSettings, samples: Iterator[Sample] | list[Sample]) -> dict[str, Any]:
    trip = Trip("T", settings)
    for s in samples:
        trip.add(s)
    totals = trip.totals()
    json.dumps(totals, allow_nan=False)
    return totals


GAS = trip_settings()


# -- distance and time -----------------------------------------------------------------
def test_constant_speed_for_a_known_time_gives_the_distance() -> None:
    t = drive(GAS, [sample(x, SPEED=72, RPM=2000) for x in rows(100.0)])
    assert t["distance_km"] == pytest.approx(2.0, abs=1e-4)  # 20 m/s for 100 s
    assert t["duration_s"] == pytest.approx(100.0)
    assert t["moving_s"] == pytest.approx(100.0)
    assert t["idle_s"] == 0.0
    assert t["avg_speed_kmh"] == pytest.approx(72.0)
    assert t["avg_moving_speed_kmh"] == pytest.approx(72.0)
    assert t["max_speed_kmh"] == 72.0
    assert t["max_rpm"] == 2000.0
    assert t["gaps"] == 0


def test_speed_is_integrated_as_trapezoids() -> None:
    # 0 → 36 km/h linearly over 10 s (1 m/s²): 50 m.
    t = drive(GAS, [sample(x, SPEED=(x - T0) * 3.6) for x in rows(10.0, 0.5)])
    assert t["distance_km"] == pytest.approx(0.05, abs=1e-6)


def test_speed_in_other_units_is_converted() -> None:
    mph = drive(GAS, [sample(x, SPEED=45, units={"SPEED": "mile_per_hour"}) for x in rows(60.0)])
    mps = drive(GAS, [sample(x, SPEED=20, units={"SPEED": "meter_per_second"}) for x in rows(60.0)])
    assert mph["distance_km"] == pytest.approx(45 * MILE_KM / 60, abs=1e-4)
    assert mps["distance_km"] == pytest.approx(1.2, abs=1e-4)


def test_a_unit_not_known_is_left_out_with_one_warning(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="eccm.trip.computer"):
        t = drive(
            GAS, [sample(x, SPEED=3, units={"SPEED": "furlong_per_fortnight"}) for x in rows(5)]
        )
    assert t["distance_km"] is None and t["max_speed_kmh"] is None
    warnings = [r for r in caplog.records if "furlong_per_fortnight" in r.getMessage()]
    assert len(warnings) == 1


def test_a_long_outage_is_a_gap_not_distance() -> None:
    before = [sample(x, SPEED=60, MAF=10) for x in rows(10.0)]
    after = [sample(x, SPEED=60, MAF=10) for x in rows(10.0, start=T0 + 10 + 600)]
    t = drive(GAS, before + after)
    assert t["distance_km"] == pytest.approx(20 * 60 / 3600, abs=1e-4)  # 20 s at 60 km/h
    assert t["gaps"] == 1
    assert t["gap_s"] == pytest.approx(600.0)
    assert t["duration_s"] == pytest.approx(620.0)
    assert t["moving_s"] == pytest.approx(20.0)
    assert t["fuel_s"]["MAF"] == pytest.approx(20.0)


def test_the_gap_cap_follows_the_sample_interval() -> None:
    cfg = parse({"CAR_IDENTIFIER": "c", "SAMPLE_INTERVAL": "4"})
    assert TripSettings.from_config(cfg).max_gap == 12.0
    assert TripSettings.from_config(parse({"CAR_IDENTIFIER": "c"})).max_gap == 5.0


def test_idle_is_engine_running_at_standstill() -> None:
    stopped = [sample(x, SPEED=0, RPM=800) for x in rows(30.0)]
    moving = [sample(x, SPEED=30, RPM=1500) for x in rows(30.0, start=T0 + 30.2)]
    off = [sample(x, SPEED=0, RPM=0) for x in rows(30.0, start=T0 + 60.4)]  # key on, engine off
    t = drive(GAS, stopped + moving + off)
    assert t["idle_s"] == pytest.approx(30.0)
    assert t["moving_s"] == pytest.approx(30.0 + 0.2 + 0.2)  # the two edges move too
    assert t["duration_s"] == pytest.approx(90.4)
    assert t["avg_moving_speed_kmh"] is not None


def test_a_clock_step_is_not_time_that_passed() -> None:
    system = [sample(x, SPEED=36) for x in rows(10.0)]
    # the GNSS correction moves the wall clock by a day between two rows
    gnss = [sample(x, SPEED=36, source="gnss") for x in rows(10.0, start=T0 + 86_400 + 10.2)]
    t = drive(GAS, system + gnss)
    assert t["clock_steps"] == 1
    assert t["duration_s"] == pytest.approx(20.0)
    assert t["distance_km"] == pytest.approx(0.2, abs=1e-4)
    assert t["gaps"] == 0


def test_a_trip_of_one_row() -> None:
    t = drive(GAS, [sample(T0, SPEED=50, RPM=1800, MAF=12)])
    assert t["duration_s"] == 0.0
    assert t["distance_km"] == 0.0
    assert t["max_speed_kmh"] == 50.0 and t["max_rpm"] == 1800.0
    assert t["fuel_l"] == 0.0 and t["fuel_method"] == "MAF"
    assert t["avg_speed_kmh"] is None and t["avg_fuel_rate_lph"] is None
    assert t["l_per_100km"] is None and t["mpg_us"] is None


# -- GNSS cross-check ------------------------------------------------------------------
def test_no_gnss_means_no_gnss_distance() -> None:
    t = drive(GAS, [sample(x, SPEED=40) for x in rows(10.0)])
    assert t["gnss_distance_km"] is None


def test_gnss_distance_agrees_with_obd_distance() -> None:
    # Due north along a meridian, 1e-4 degree of latitude per second.
    metres_per_s = 6_371_008.8 * math.radians(1e-4)
    kmh = metres_per_s * 3.6
    samples = []
    for x in rows(60.0):  # 5 rows per second, a new fix each second
        second = math.floor(x - T0 + 1e-9)
        fix = fix_at(45.0 + second * 1e-4, 7.0, received=1000.0 + second, speed=metres_per_s)
        samples.append(sample(x, SPEED=kmh, fix=fix))
    t = drive(GAS, samples)
    assert t["gnss_distance_km"] == pytest.approx(60 * metres_per_s / 1000, abs=1e-4)
    assert t["distance_km"] == pytest.approx(t["gnss_distance_km"], rel=1e-3)


def test_gnss_jitter_at_standstill_is_not_distance() -> None:
    samples = [
        sample(T0 + i, SPEED=0, fix=fix_at(45.0 + (i % 2) * 2e-5, 7.0, 1000.0 + i, speed=0.1))
        for i in range(30)
    ]
    assert drive(GAS, samples)["gnss_distance_km"] == 0.0


def test_gnss_only_rows_give_gnss_distance_but_no_obd_figures() -> None:
    samples = [
        sample(T0 + i, engine=False, fix=fix_at(45.0 + i * 1e-4, 7.0, 1000.0 + i))
        for i in range(11)
    ]
    t = drive(GAS, samples)
    assert t["distance_km"] is None and t["fuel_l"] is None
    assert t["gnss_distance_km"] == pytest.approx(
        haversine_m(45.0, 7.0, 45.001, 7.0) / 1000, abs=1e-4
    )
    assert t["idle_s"] == 0.0 and t["moving_s"] == 0.0


# -- fuel --------------------------------------------------------------------------------
def test_constant_maf_gives_the_fuel_economy_and_cost() -> None:
    settings = trip_settings(fuel_price=1.80)
    t = drive(settings, [sample(x, SPEED=60, RPM=2000, MAF=10.0) for x in rows(360.0)])
    # 10 g/s of air at 14.7:1 for 360 s is 244.9 g of gasoline; at 745 g/L, 0.3287 L.
    litres = 10.0 / 14.7 * 360 / GASOLINE_G_PER_L
    assert t["fuel_l"] == pytest.approx(litres, abs=1e-4)
    assert t["fuel_method"] == "MAF"
    assert t["avg_fuel_rate_lph"] == pytest.approx(litres * 10, abs=1e-3)  # 0.1 h
    assert t["distance_km"] == pytest.approx(6.0, abs=1e-4)
    assert t["l_per_100km"] == pytest.approx(litres / 6.0 * 100, abs=0.01)
    assert t["mpg_us"] == pytest.approx((6.0 / MILE_KM) / (litres / US_GALLON_L), abs=0.01)
    assert t["fuel_cost"] == pytest.approx(litres * 1.80, abs=0.01)


def test_diesel_uses_its_own_ratio_and_density() -> None:
    t = drive(trip_settings(fuel_type="diesel"), [sample(x, MAF=29.0) for x in rows(3600.0, 1.0)])
    assert t["fuel_l"] == pytest.approx(29.0 / 14.5 * 3600 / DIESEL_G_PER_L, abs=1e-4)
    assert t["distance_km"] is None and t["l_per_100km"] is None
    assert t["fuel_cost"] is None  # no FUEL_PRICE


def test_fuel_rate_wins_over_maf() -> None:
    t = drive(GAS, [sample(x, FUEL_RATE=7.2, MAF=50.0, SPEED=90) for x in rows(600.0, 1.0)])
    assert t["fuel_method"] == "FUEL_RATE"
    assert t["fuel_l"] == pytest.approx(1.2)  # 7.2 L/h for 10 minutes
    assert t["l_per_100km"] == pytest.approx(8.0)  # 1.2 L over 15 km


def test_speed_density_from_map_with_known_inputs() -> None:
    settings = trip_settings(displacement_l=2.0, volumetric_efficiency=0.85)
    # The same physics in SI units step by step: air density at MAP and IAT (ideal gas),
    # the volume a four-stroke engine draws per second (half its displacement per turn).
    pa, kelvin, rpm = 100_000.0, 298.15, 3000.0
    density = pa / (287.05 * kelvin)  # kg/m³
    volume = 0.002 * 0.85 * rpm / 60 / 2  # m³/s
    air_g_per_s = density * volume * 1000
    assert maf_from_map(100.0, rpm, 25.0, 2.0, 0.85) == pytest.approx(air_g_per_s, rel=1e-12)
    assert air_g_per_s == pytest.approx(49.66, abs=0.01)

    samples = [
        sample(x, RPM=rpm, INTAKE_PRESSURE=100.0, INTAKE_TEMP=25.0, SPEED=100) for x in rows(60.0)
    ]
    t = drive(settings, samples)
    assert t["fuel_method"] == "MAP"
    litres = air_g_per_s / 14.7 * 60 / GASOLINE_G_PER_L
    assert t["fuel_l"] == pytest.approx(litres, abs=1e-4)
    # the same inputs in pascal and kelvin
    other = [
        sample(
            x,
            RPM=rpm,
            INTAKE_PRESSURE=100_000.0,
            INTAKE_TEMP=298.15,
            units={"INTAKE_PRESSURE": "pascal", "INTAKE_TEMP": "kelvin"},
        )
        for x in rows(60.0)
    ]
    assert drive(settings, other)["fuel_l"] == pytest.approx(litres, abs=1e-4)


def test_map_needs_the_displacement_and_the_intake_temperature() -> None:
    no_disp = drive(
        GAS, [sample(x, RPM=2000, INTAKE_PRESSURE=60.0, INTAKE_TEMP=20.0) for x in rows(10)]
    )
    assert no_disp["fuel_l"] is None and no_disp["fuel_method"] is None
    settings = trip_settings(displacement_l=1.6)
    no_iat = drive(settings, [sample(x, RPM=2000, INTAKE_PRESSURE=60.0) for x in rows(10)])
    assert no_iat["fuel_l"] is None


def test_no_maf_and_no_map_means_no_fuel_but_the_rest() -> None:
    t = drive(trip_settings(fuel_price=2.0), [sample(x, SPEED=50, RPM=1900) for x in rows(36.0)])
    assert t["distance_km"] == pytest.approx(0.5, abs=1e-4)
    for key in ("fuel_l", "fuel_method", "avg_fuel_rate_lph", "l_per_100km", "mpg_us", "fuel_cost"):
        assert t[key] is None, key


def test_economy_counts_only_where_both_speed_and_fuel_are_known() -> None:
    # 60 s with speed and MAF, then 60 s with MAF only (SPEED not answered)
    first = [sample(x, SPEED=72, MAF=20.0) for x in rows(60.0)]
    second = [sample(x, MAF=20.0) for x in rows(60.0, start=T0 + 60.2)]
    t = drive(GAS, first + second)
    litres_first = fuel_lph_from_maf(20.0, 14.7, 0.745) * 60 / 3600
    assert t["distance_km"] == pytest.approx(1.2, abs=1e-4)
    assert t["fuel_l"] == pytest.approx(litres_first * 120.2 / 60, abs=1e-4)
    assert t["l_per_100km"] == pytest.approx(litres_first / 1.2 * 100, abs=0.01)


def test_formulas_units() -> None:
    # 1 g/s of fuel (14.7 g/s of air) is 3.6 kg/h: 4.832 L/h of gasoline
    assert fuel_lph_from_maf(14.7, 14.7, 0.745) == pytest.approx(3.6 / 0.745)
    assert haversine_m(0.0, 0.0, 0.0, 1.0) == pytest.approx(111_195.08, abs=0.1)


# -- the hub listener --------------------------------------------------------------------
def test_the_listener_writes_a_summary_when_the_trip_ends() -> None:
    finished: list[dict[str, Any]] = []
    checkpoints: list[dict[str, Any]] = []
    computer = TripComputer(
        trip_settings(fuel_price=1.5, summary_commands=("RPM", "SPEED")),
        car="car-1",
        facts=lambda: {"vin": "VIN123", "obd": "connected"},
        on_checkpoint=checkpoints.append,
        on_finished=finished.append,
    )
    assert computer.live() == {"active": False, "trip": None, "previous": None}
    trip = "20231114T221400Z"
    for x in rows(150.0, 1.0):  # 2.5 minutes at 1 Hz: two minutes close during the trip
        computer.on_sample(sample(x, trip=trip, SPEED=36, RPM=1000 + (x - T0), MAF=5.0))
    assert len(checkpoints) == 2
    assert [m["minute"] for m in checkpoints[-1]["minutes"]] == [
        "2023-11-14T22:14:00Z",
        "2023-11-14T22:15:00Z",
    ]
    assert checkpoints[-1]["complete"] is False
    live = computer.live()
    assert live["active"] is True and live["trip"] == trip
    assert live["now"]["speed_kmh"] == 36.0
    assert live["now"]["l_per_100km"] == pytest.approx(
        fuel_lph_from_maf(5.0, 14.7, 0.745) / 36 * 100, abs=0.01
    )
    assert live["minute"]["minute"] == "2023-11-14T22:16:00Z"
    computer.on_dtcs(trip, T0 + 10, {"mil": False, "stored": [], "pending": []})
    computer.on_dtcs("another-trip", T0 + 11, {"mil": True, "stored": [], "pending": []})
    computer.on_dtcs(
        trip,
        T0 + 70,
        {"mil": True, "stored": [{"code": "P0143", "description": "O2 sensor"}], "pending": []},
    )
    computer.on_dtcs_failed(trip, "obd_timeout: the car did not answer")
    computer.on_trip_end("not-this-trip")
    assert finished == []
    computer.on_trip_end(trip)
    assert len(finished) == 1
    doc = finished[0]
    json.dumps(doc, allow_nan=False)
    assert doc["trip"] == trip and doc["car"] == "car-1" and doc["complete"] is True
    assert doc["vin"] == "VIN123" and "obd" not in doc
    assert doc["rows"] == 151 and doc["engine_rows"] == 151
    assert doc["first_time"] == "2023-11-14T22:14:00.000Z"
    assert doc["last_time"] == "2023-11-14T22:16:30.000Z"
    assert doc["time_source"] == "system"
    assert doc["totals"]["distance_km"] == pytest.approx(1.5, abs=1e-4)
    assert doc["totals"]["max_rpm"] == 1150.0
    assert [m["rows"] for m in doc["minutes"]] == [60, 60, 31]
    assert doc["minutes"][0]["values"]["RPM"]["mean"] == pytest.approx(1029.5)
    assert set(doc["minutes"][0]["values"]) == {"RPM", "SPEED"}
    events = doc["diagnostics"]["events"]
    assert [e["event"] for e in events] == ["initial", "mil_on", "dtc_added"]
    assert events[2]["code"] == "P0143" and events[2]["time"] == "2023-11-14T22:15:10.000Z"
    assert doc["diagnostics"]["failed_reads"] == 1
    assert doc["settings"]["fuel_price_per_l"] == 1.5
    after = computer.live()
    assert after["active"] is False
    assert after["previous"]["trip"] == trip
    assert after["previous"]["totals"] == doc["totals"]


def test_position_rows_after_the_last_engine_row_do_not_lengthen_the_trip() -> None:
    """With GNSS on, position rows fill in an engine trip once the car goes silent, until
    TRIP_END_TIMEOUT ends it: at ignition off that is 30 s of a parked car, which must
    not be counted in its duration. A silence mid-drive stays counted."""
    finished: list[dict[str, Any]] = []
    computer = TripComputer(GAS, on_finished=finished.append)
    trip = "20231114T221400Z"
    for x in rows(10.0, 1.0):
        computer.on_sample(sample(x, trip=trip, SPEED=36, RPM=1500, MAF=5.0))
    for x in rows(4.0, 1.0, start=T0 + 11):  # silent mid-drive: positions only
        computer.on_sample(sample(x, trip=trip, engine=False, fix=fix_at(45.0, 7.0, x)))
    for x in rows(5.0, 1.0, start=T0 + 16):
        computer.on_sample(sample(x, trip=trip, SPEED=36, RPM=1500, MAF=5.0))
    last_engine = T0 + 21
    for x in rows(30.0, 1.0, start=last_engine + 1):  # ignition off: parked positions
        computer.on_sample(sample(x, trip=trip, engine=False, fix=fix_at(45.1, 7.0, x)))
    computer.on_trip_end(trip)
    doc = finished[0]
    assert doc["last_time"] == "2023-11-14T22:14:21.000Z"
    assert doc["totals"]["duration_s"] == pytest.approx(21.0)
    assert doc["rows"] == 11 + 5 + 6 and doc["engine_rows"] == 17
    assert doc["totals"]["fuel_l"] == pytest.approx(
        fuel_lph_from_maf(5.0, 14.7, 0.745) * 15 / 3600, abs=1e-4
    )


def test_a_sample_of_a_new_trip_finishes_the_old_one() -> None:
    finished: list[dict[str, Any]] = []
    computer = TripComputer(GAS, on_finished=finished.append)
    computer.on_sample(sample(T0, trip="A", SPEED=10))
    computer.on_sample(sample(T0 + 1, trip="B", SPEED=10))
    assert [d["trip"] for d in finished] == ["A"]
    computer.stop()
    assert [d["trip"] for d in finished] == ["A", "B"]
    assert finished[1]["rows"] == 1


def test_the_summary_carries_the_car_battery_at_the_adapter() -> None:
    """ELM_VOLTAGE (the adapter's ATRV) is in trip summaries."""
    finished: list[dict[str, Any]] = []
    facts = {"vin": "WP0ZZZ99ZTS390000", "elm_voltage": "12.6"}
    computer = TripComputer(GAS, facts=lambda: facts, on_finished=finished.append)
    computer.on_sample(sample(T0, trip="A", SPEED=10))
    computer.stop()
    # A number, as STATUS and the sidecars give it (it was the hub's text, "12.6").
    assert finished[0]["elm_voltage"] == 12.6 and finished[0]["vin"] == "WP0ZZZ99ZTS390000"


def test_a_failing_sink_does_not_break_the_listener(caplog: pytest.LogCaptureFixture) -> None:
    def boom(doc: dict[str, Any]) -> None:
        raise RuntimeError("disk on fire")

    computer = TripComputer(GAS, on_finished=boom)
    computer.on_sample(sample(T0, trip="A", SPEED=10))
    with caplog.at_level(logging.ERROR):
        computer.on_trip_end("A")
    assert "not handed over" in caplog.text
    assert computer.live()["previous"]["trip"] == "A"


def test_the_socket_backend_hands_out_the_live_trip_computer() -> None:
    from eccm.backend import DaemonBackend
    from eccm.clock import FakeClock
    from eccm.hub import Hub

    hub = Hub(FakeClock(), 2.0, LAYOUT)
    assert DaemonBackend(hub=hub, link=None).trip() == {
        "active": False,
        "trip": None,
        "previous": None,
    }
    computer = TripComputer(GAS)
    hub.add_listener(computer)
    hub.update_values({"SPEED": Reading(36, "kilometer_per_hour", 0.0)})
    hub.begin_trip()
    hub.emit()
    live = DaemonBackend(hub=hub, link=None, trip=computer).trip()
    assert live["active"] is True and live["trip"] == hub.trip and live["rows"] == 1
