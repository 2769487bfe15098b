"""The first file of a trip has the columns the car gave last time (eccm/store/columns.py).

Without it, GNSS rows written while the adapter connects open the trip's first file with
the configured fast commands only; Athena, Trino and Spark, which match CSV columns by
position, then misread every trip's first file.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from eccm.sim.gnss import NmeaPty
from eccm.store.columns import FILE_NAME, recall, remember
from tests.test_end_to_end import ROUTE, daemon, stop
from tests.waiting import wait_until

FAST = ("RPM", "SPEED", "MAF")
SLOW = ("ALL",)


def test_remembered_columns_come_back_for_the_same_car_and_keys(tmp_path: Path) -> None:
    remember(tmp_path, "car", FAST, SLOW, ("RPM", "SPEED"), ("COOLANT_TEMP", "FUEL_LEVEL"))
    assert recall(tmp_path, "car", FAST, SLOW) == (("RPM", "SPEED"), ("COOLANT_TEMP", "FUEL_LEVEL"))
    assert recall(tmp_path, "other-car", FAST, SLOW) is None
    assert recall(tmp_path, "car", ("RPM",), SLOW) is None
    assert recall(tmp_path, "car", FAST, ("COOLANT_TEMP",)) is None
    assert recall(tmp_path / "missing", "car", FAST, SLOW) is None


def test_a_damaged_or_odd_memory_is_ignored(tmp_path: Path) -> None:
    path = tmp_path / FILE_NAME
    good = {"car": "car", "fast_config": list(FAST), "slow_config": list(SLOW)}
    for text in (
        "",  # a power cut between the write and the rename's data
        '{"car": "car", "fast_co',
        "[]",
        json.dumps({**good, "fast": ["RPM"], "slow": ["NOT_A_COMMAND"]}),
        json.dumps({**good, "fast": ["RPM"], "slow": ["RPM"]}),
        json.dumps({**good, "fast": "RPM", "slow": []}),
        json.dumps({**good, "fast": [1], "slow": []}),
    ):
        path.write_text(text)
        assert recall(tmp_path, "car", FAST, SLOW) is None, text
    path.write_text(json.dumps({**good, "fast": ["RPM"], "slow": []}))
    assert recall(tmp_path, "car", FAST, SLOW) == (("RPM",), ())


def test_an_unwritable_folder_costs_only_the_memory(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    remember(blocker, "car", FAST, SLOW, ("RPM",), ())  # no exception
    assert recall(blocker, "car", FAST, SLOW) is None


def header(path: Path) -> list[str]:
    with path.open(encoding="utf-8") as f:
        return f.readline().rstrip("\n").split("\t")


def started(records: Path) -> list[Path]:
    """Open files whose header is on disk (one closed since it was listed is left out)."""
    found = []
    for p in records.glob("*.tsv.part"):
        try:
            if "\n" in p.read_text(encoding="utf-8"):
                found.append(p)
        except FileNotFoundError:
            continue
    return found


def test_the_next_trip_opens_its_first_file_with_the_cars_columns(car: str, tmp_path: Path) -> None:
    records = tmp_path / "records"
    adapter = tmp_path / "obd"  # the adapter's device, plugged in when the test says
    config = tmp_path / "config.ini"
    with NmeaPty(ROUTE, rate_hz=4.0) as gnss:
        config.write_text(
            "[DEFAULT]\n"
            "CAR_IDENTIFIER=cols-car\n"
            f"OBD_INTERFACE={adapter}\n"
            "OBD_PROTOCOL=6\n"
            "GPS_POSITION_MONITORING=yes\n"
            f"GPS_INTERFACE={gnss.path}\n"
            f"RECORD_DIRECTORY_LOCATION={records}\n"
            "FILE_COMPRESSION=none\n"
            "FILE_ROTATION_SECONDS=3600\n"
            "SAMPLE_INTERVAL=0.2\n"
            "OBD_FAST_COMMANDS=RPM,SPEED,MAF\n"
            "OBD_SLOW_COMMANDS=ALL\n"
        )

        def engine_rows() -> bool:
            for part in started(records):
                try:
                    lines = part.read_text(encoding="utf-8").splitlines()
                except FileNotFoundError:
                    continue  # closed since it was listed (the car's columns came)
                if "RPM" not in lines[0].split("\t"):
                    # A loaded CI run once saw an open file without RPM: wait for one
                    # with it (the headers are checked below).
                    continue
                rpm = lines[0].split("\t").index("RPM")
                if any(line.split("\t")[rpm] for line in lines[1:] if line.count("\t") > rpm):
                    return True
            return False

        # First drive: GNSS rows before the adapter is there, then the car.
        first = daemon(config)
        try:
            wait_until(lambda: started(records), 60, "the first GNSS rows")
            os.symlink(car, adapter)
            wait_until(engine_rows, 90, "the car's rows")
        finally:
            code, err = stop(first)
        assert code == 0, err
        files = sorted(records.glob("*.tsv"))
        assert len(files) >= 2, [p.name for p in records.iterdir()]
        configured, full = header(files[0]), header(files[-1])
        assert len(full) > len(configured) + 5  # the slow values ALL resolved to

        # Next drive: unplugged again at the start, so its first rows are GNSS rows.
        os.unlink(adapter)
        second = daemon(config)
        try:
            parts = wait_until(lambda: started(records), 60, "the next trip's rows")
            assert header(parts[0]) == full
            os.symlink(car, adapter)
            wait_until(engine_rows, 90, "the car's rows again")
        finally:
            code, err = stop(second)
        assert code == 0, err
    later = [p for p in sorted(records.glob("*.tsv")) if p not in files]
    # One file for the whole trip: the car's columns were the remembered ones.
    assert len(later) == 1, [p.name for p in later]
    assert header(later[0]) == full
