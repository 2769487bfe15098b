"""`eccm run` as a real subprocess against the ELM327 emulator and an NMEA pseudo-terminal."""

from __future__ import annotations

import csv
import gzip
import io
import json
import re
import signal
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import pandas as pd
import pytest

from eccm.sample import GPS_COLUMNS
from eccm.sim.gnss import NmeaPty, Route
from tests.waiting import wait_until

ISO_MS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
ROUTE = Route(latitude=45.0, longitude=7.0, radius=200.0, speed=12.0)


def daemon(config: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "eccm.cli", "run", "--config", str(config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def closed(records: Path) -> list[Path]:
    """Closed data files: those whose sidecar exists."""
    return sorted(p for p in records.glob("*.tsv.gz") if Path(f"{p}.json").exists())


def stop(proc: subprocess.Popen[bytes]) -> tuple[int, str]:
    proc.send_signal(signal.SIGTERM)
    t0 = time.monotonic()
    _, err = proc.communicate(timeout=40)
    assert time.monotonic() - t0 < 20, "SIGTERM must end the daemon within 20 s"
    return proc.returncode, err.decode(errors="replace")


def test_a_drive_is_recorded_into_rotating_closed_files(car: str, tmp_path: Path) -> None:
    records = tmp_path / "records"
    config = tmp_path / "config.ini"
    with NmeaPty(ROUTE, rate_hz=2.0) as gnss:
        config.write_text(
            "[DEFAULT]\n"
            "CAR_IDENTIFIER=e2e-car\n"
            f"OBD_INTERFACE={car}\n"
            "GPS_POSITION_MONITORING=yes\n"
            f"GPS_INTERFACE={gnss.path}\n"
            f"RECORD_DIRECTORY_LOCATION={records}\n"
            "OBD_PROTOCOL=6\n"
            "FILE_ROTATION_SECONDS=4\n"
            "SAMPLE_INTERVAL=0.2\n"
            "OBD_SLOW_COMMANDS=COOLANT_TEMP,INTAKE_TEMP,FUEL_LEVEL\n"
            "LOG_LEVEL=INFO\n"
        )
        proc = daemon(config)
        try:
            wait_until(lambda: len(closed(records)) >= 2, timeout=90, what="two closed files")
        finally:
            code, err = stop(proc)
    assert code == 0, err
    assert "Traceback" not in err, err
    assert not list(records.glob("*.part")), "a .part was left after SIGTERM"

    files = closed(records)
    assert len(files) >= 2
    header_expected = [
        "TIME_UTC",
        "CAR_ID",
        "TRIP_ID",
        "RPM",
        "SPEED",
        "THROTTLE_POS",
        "ENGINE_LOAD",
        "MAF",
        "INTAKE_PRESSURE",
        "COOLANT_TEMP",
        "INTAKE_TEMP",
        "FUEL_LEVEL",
        *GPS_COLUMNS,
    ]
    trips = set()
    positions = 0
    engine_files = 0
    for path in files:
        name = path.name
        assert re.fullmatch(r"e2e-car_\d{8}T\d{6}Z_\d{4}\.tsv\.gz", name), name
        text = gzip.decompress(path.read_bytes()).decode()
        rows = list(csv.reader(io.StringIO(text), delimiter="\t"))
        assert rows[0] == header_expected
        side = json.loads(Path(f"{path}.json").read_text())
        assert side["rows"] == len(rows) - 1
        assert [c["name"] for c in side["columns"]] == header_expected
        units = {c["name"]: c["unit"] for c in side["columns"]}
        assert units["RPM"] == "revolutions_per_minute"
        assert units["SPEED"] == "kilometer_per_hour"
        assert units["GPS_SPEED"] == "meter_per_second"
        for row in rows[1:]:
            assert len(row) == len(header_expected)
            assert ISO_MS.match(row[0]), row[0]
            assert row[1] == "e2e-car"
            trips.add(row[2])
            assert "None" not in row and "nan" not in row
            if row[header_expected.index("GPS_LATITUDE")]:
                fix_time = datetime.fromisoformat(row[header_expected.index("GPS_TIME_UTC")])
                lat, lon = ROUTE.position_at(fix_time.timestamp())
                assert float(row[header_expected.index("GPS_LATITUDE")]) == pytest.approx(
                    lat, abs=2e-6
                )
                assert float(row[header_expected.index("GPS_LONGITUDE")]) == pytest.approx(
                    lon, abs=2e-6
                )
                positions += 1
        df = pd.read_csv(path, sep="\t", compression="gzip")
        assert df["RPM"].dtype.kind in "if"
        assert df["SPEED"].dtype.kind in "if"
        assert df["GPS_LATITUDE"].dtype.kind == "f"
        engine_files += bool(df["RPM"].notna().any())
    assert positions > 5
    # the first file may hold only GNSS rows written while the adapter connected
    assert engine_files >= len(files) - 1
    # GNSS rows written while the adapter connects open the trip that the engine continues:
    # one trip across the rotations.
    assert len(trips) == 1, trips


def test_config_errors_end_with_one_clear_line(tmp_path: Path) -> None:
    config = tmp_path / "config.ini"
    config.write_text("[DEFAULT]\nCAR_IDENTIFIER=x\nSAMPLE_INTERVAL=fast\n")
    proc = subprocess.run(
        [sys.executable, "-m", "eccm.cli", "run", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    assert "SAMPLE_INTERVAL='fast'" in proc.stderr
    assert "expected a number" in proc.stderr


def test_a_power_cut_loses_at_most_the_flush_interval_and_the_next_start_recovers(
    car: str, tmp_path: Path
) -> None:
    records = tmp_path / "records"
    config = tmp_path / "config.ini"
    config.write_text(
        "[DEFAULT]\n"
        "CAR_IDENTIFIER=cut-car\n"
        f"OBD_INTERFACE={car}\n"
        "OBD_PROTOCOL=6\n"
        f"RECORD_DIRECTORY_LOCATION={records}\n"
        "FILE_ROTATION_SECONDS=3600\n"
        "FILE_FLUSH_INTERVAL=0.5\n"
        "SAMPLE_INTERVAL=0.1\n"
        "OBD_SLOW_COMMANDS=COOLANT_TEMP\n"
        "FILE_COMPRESSION=none\n"
    )

    def lines_on_disk() -> int:
        parts = list(records.glob("*.tsv.part"))
        return parts[0].read_bytes().count(b"\n") if parts else 0

    proc = daemon(config)
    try:
        wait_until(lambda: lines_on_disk() > 20, timeout=90, what="rows flushed to the .part")
    finally:
        proc.kill()  # SIGKILL: as the ignition cutting the power
        proc.wait(timeout=30)
    flushed = lines_on_disk()
    assert list(records.glob("*.tsv.part")), "the open file should be left behind by a power cut"

    # The next start recovers the leftover file before recording anew.
    proc = daemon(config)
    try:
        wait_until(lambda: list(records.glob("*.tsv.json")), timeout=60, what="the recovered file")
    finally:
        code, err = stop(proc)
    assert code == 0, err
    recovered = [
        p for p in records.glob("*.tsv") if json.loads(Path(f"{p}.json").read_text())["recovered"]
    ]
    assert len(recovered) == 1
    text = recovered[0].read_text()
    assert text.endswith("\n")
    rows = list(csv.reader(io.StringIO(text), delimiter="\t"))
    assert rows[0][:4] == ["TIME_UTC", "CAR_ID", "TRIP_ID", "RPM"]
    assert all(len(r) == len(rows[0]) for r in rows)
    assert len(rows) >= flushed  # nothing that was on disk at the cut is lost
    assert not list(records.glob("*.part"))
