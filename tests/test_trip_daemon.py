"""End to end: the daemon on the ELM327 emulator drives a trip; its summary file must agree
with the rows of its data files, its trouble-code events with what the car said, and the
TRIP command with the live trip computer."""

from __future__ import annotations

import csv
import gzip
import io
import itertools
import json
import math
import socket
from collections import defaultdict
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from eccm.app import Daemon
from eccm.config import Config, parse
from eccm.store.names import summary_name
from eccm.trip.computer import maf_from_map
from eccm.trip.minutes import summarize
from tests.control_fakes import SECRET, Client
from tests.emulator import stored_dtcs
from tests.waiting import wait_until

WAIT = 60.0  # generous: a loaded 2-core machine
CAR = "trip-car"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def config(pty: str, records: Path, **extra: str) -> Config:
    return parse(
        {
            "CAR_IDENTIFIER": CAR,
            "OBD_INTERFACE": pty,
            "OBD_PROTOCOL": "6",
            "RECORD_DIRECTORY_LOCATION": str(records),
            "SAMPLE_INTERVAL": "0.2",
            "FILE_ROTATION_SECONDS": "4",
            **extra,
        }
    )


def epoch(iso: str) -> float:
    return datetime.fromisoformat(iso).timestamp()


def rows_of(records: Path, trip: str) -> list[dict[str, str]]:
    """Every row of the trip's closed data files, oldest file first."""
    out: list[dict[str, str]] = []
    for path in sorted(records.glob(f"{CAR}_{trip}_*.tsv.gz")):
        assert Path(f"{path}.json").exists(), f"{path.name} has no sidecar"
        text = gzip.decompress(path.read_bytes()).decode()
        out.extend(csv.DictReader(io.StringIO(text), delimiter="\t"))
    return out


def number(cell: str) -> float | None:
    return float(cell) if cell else None


def integrate(rows: list[dict[str, str]], rate: Any, max_gap: float = 5.0) -> float:
    """∫ rate dt over the rows (trapezoids), from their own TIME_UTC cells."""
    total = 0.0
    for a, b in itertools.pairwise(rows):
        ra, rb = rate(a), rate(b)
        dt = epoch(b["TIME_UTC"]) - epoch(a["TIME_UTC"])
        if ra is None or rb is None or dt <= 0 or dt > max_gap:
            continue
        total += (ra + rb) / 2 * dt
    return total


def run_trip(cfg: Config, min_rows: int, during: Any = None) -> tuple[Daemon, dict[str, Any]]:
    """Run the daemon until ``min_rows`` rows, call ``during(daemon)``, stop; the summary."""
    daemon = Daemon(cfg)
    daemon.start()
    try:
        wait_until(lambda: daemon.hub.rows >= min_rows, timeout=WAIT, what=f"{min_rows} rows")
        if during is not None:
            during(daemon)
        trip = daemon.hub.trip
        assert trip is not None
    finally:
        daemon.stop()
    path = cfg.record_dir / summary_name(CAR, trip)
    assert path.is_file(), sorted(p.name for p in cfg.record_dir.iterdir())
    assert not list(cfg.record_dir.glob("*.part")), "a checkpoint or .part was left"
    return daemon, json.loads(path.read_text())


def test_a_trip_gives_a_summary_that_matches_its_rows(car: str, tmp_path: Path) -> None:
    records = tmp_path / "records"
    port = free_port()
    cfg = config(
        car,
        records,
        OBD_SLOW_COMMANDS="COOLANT_TEMP,INTAKE_TEMP",
        FUEL_PRICE="1.90",
        OBD_DTC_INTERVAL="5",
        ENABLE_SOCKET_SERVER="yes",
        SOCKET_SERVER_PORT=str(port),
        SOCKET_SERVER_SECRET=SECRET,
    )
    seen: dict[str, Any] = {}

    def during(daemon: Daemon) -> None:
        trip = daemon.trip
        assert trip is not None
        wait_until(lambda: trip.live()["diagnostics"]["reads"] >= 1, WAIT, "a first DTC read")
        with stored_dtcs(["0143"]):

            def added() -> bool:
                s = trip.summary()
                return s is not None and any(
                    e["event"] == "dtc_added" for e in s["diagnostics"]["events"]
                )

            wait_until(added, WAIT, "the new stored code in the timeline")
        # L/100 km needs MIN_ECONOMY_KM of road: the code above may show up at any row
        # (the poller's second read lands near the 30th row), so wait for the distance.
        wait_until(
            lambda: trip.live()["totals"]["l_per_100km"] is not None, WAIT, "an L/100 km figure"
        )
        client = Client(("127.0.0.1", port), timeout=WAIT).auth()
        try:
            seen["trip"] = client.ask("TRIP")
            seen["help"] = client.ask("HELP")
            seen["bad"] = client.ask("TRIP NOW")
        finally:
            client.close()

    daemon, summary = run_trip(cfg, 30, during)

    # TRIP over the socket: the live trip computer
    reply = seen["trip"]
    assert reply["class"] == "TRIP" and reply["active"] is True
    assert reply["trip"] == summary["trip"]
    assert reply["totals"]["fuel_method"] == "MAF"
    assert reply["now"]["speed_kmh"] is not None
    assert "TRIP" in seen["help"]["commands"]
    assert seen["bad"]["class"] == "ERROR" and seen["bad"]["code"] == "bad_request"

    # the summary against the rows of the trip's data files
    rows = rows_of(records, summary["trip"])
    assert summary["complete"] is True and summary["car"] == CAR
    assert summary["file"] == summary_name(CAR, summary["trip"])
    # hub.rows counts the rows of every trip: it matches this trip's files when the drive
    # is one trip (an adapter lost under load would split it; the log then says why)
    trips = sorted({p.name.split("_")[1] for p in records.glob("*.tsv.gz")})
    assert trips == [summary["trip"]], "the drive was split into several trips"
    assert summary["rows"] == len(rows) == daemon.hub.rows
    assert summary["first_time"] == rows[0]["TIME_UTC"]
    assert summary["last_time"] == rows[-1]["TIME_UTC"]
    assert summary["time_source"] == "system"
    totals = summary["totals"]
    duration = epoch(rows[-1]["TIME_UTC"]) - epoch(rows[0]["TIME_UTC"])
    assert totals["duration_s"] == pytest.approx(duration, abs=0.01)
    speeds = [number(r["SPEED"]) for r in rows]
    assert totals["max_speed_kmh"] == max(s for s in speeds if s is not None)
    assert totals["max_rpm"] == max(float(r["RPM"]) for r in rows if r["RPM"])
    # TIME_UTC keeps milliseconds: the integrals agree to well under a percent
    km = integrate(rows, lambda r: number(r["SPEED"])) / 3600
    assert totals["distance_km"] == pytest.approx(km, rel=0.01, abs=1e-3)
    assert totals["distance_km"] > 0

    def lph(r: dict[str, str]) -> float | None:
        return None if not r["MAF"] else float(r["MAF"]) / 14.7 * 3.6 / 0.745

    def both(r: dict[str, str]) -> dict[str, str] | None:
        return r if r["MAF"] and r["SPEED"] else None

    litres = integrate(rows, lph) / 3600
    assert totals["fuel_method"] == "MAF"
    assert totals["fuel_l"] == pytest.approx(litres, rel=0.01)
    assert totals["fuel_cost"] == pytest.approx(litres * 1.90, abs=0.01)
    # L/100 km over the stretches where both fuel and distance are known
    l_both = integrate(rows, lambda r: both(r) and lph(r)) / 3600
    km_both = integrate(rows, lambda r: both(r) and number(r["SPEED"])) / 3600
    assert totals["l_per_100km"] == pytest.approx(l_both / km_both * 100, rel=0.02)
    assert totals["gnss_distance_km"] is None  # no receiver in this test
    assert totals["gaps"] == 0

    # the per-minute table against the rows, minute by minute
    by_minute: dict[str, list[dict[str, str]]] = defaultdict(list)
    for r in rows:
        by_minute[r["TIME_UTC"][:16] + ":00Z"].append(r)
    assert [m["minute"] for m in summary["minutes"]] == sorted(by_minute)
    assert summary["summary_commands"] == [
        "RPM",
        "SPEED",
        "ENGINE_LOAD",
        "THROTTLE_POS",
        "COOLANT_TEMP",
        "MAF",
    ]
    for minute in summary["minutes"]:
        its_rows = by_minute[minute["minute"]]
        assert minute["rows"] == len(its_rows)
        for name in ("RPM", "SPEED", "MAF", "COOLANT_TEMP"):
            values = [float(r[name]) for r in its_rows if r[name]]
            expected = summarize(values)
            got = minute["values"][name]
            assert got["count"] == expected["count"]
            for field in ("mean", "median", "mode", "stdev", "variance", "min", "max"):
                assert got[field] == pytest.approx(expected[field], abs=1e-6), (name, field)

    # the trouble-code timeline: the initial state, then the code the car began to report
    events = summary["diagnostics"]["events"]
    assert events[0]["event"] == "initial" and events[0]["stored"] == []
    added = [e for e in events if e["event"] == "dtc_added"]
    assert added[0]["code"] == "P0143" and added[0]["kind"] == "stored"
    # stamped when the car answered: after the first row, and at most a moment after the last
    assert summary["first_time"] <= added[0]["time"]
    assert epoch(added[0]["time"]) <= epoch(summary["last_time"]) + 5
    assert summary["protocol"]


def test_a_car_without_maf_is_computed_from_map(car: str, tmp_path: Path) -> None:
    records = tmp_path / "records"
    cfg = config(
        car,
        records,
        OBD_FAST_COMMANDS="RPM,SPEED,INTAKE_PRESSURE",
        OBD_SLOW_COMMANDS="INTAKE_TEMP",
        ENGINE_DISPLACEMENT_L="1.6",
        VOLUMETRIC_EFFICIENCY="0.8",
        SUMMARY_COMMANDS="RPM,INTAKE_PRESSURE",
    )
    _, summary = run_trip(cfg, 20)
    rows = rows_of(records, summary["trip"])
    assert summary["rows"] == len(rows)

    def lph(r: dict[str, str]) -> float | None:
        if not (r["RPM"] and r["INTAKE_PRESSURE"] and r["INTAKE_TEMP"]):
            return None
        air = maf_from_map(
            float(r["INTAKE_PRESSURE"]), float(r["RPM"]), float(r["INTAKE_TEMP"]), 1.6, 0.8
        )
        return air / 14.7 * 3.6 / 0.745

    litres = integrate(rows, lph) / 3600
    totals = summary["totals"]
    assert totals["fuel_method"] == "MAP"
    assert totals["fuel_l"] == pytest.approx(litres, rel=0.01)
    assert totals["fuel_cost"] is None  # no FUEL_PRICE
    assert summary["settings"]["engine_displacement_l"] == 1.6
    assert set(summary["minutes"][0]["values"]) == {"RPM", "INTAKE_PRESSURE"}
    assert not math.isnan(totals["fuel_l"])
