"""A drive with the OBD adapter unplugged and plugged back in, through the real daemon.

The adapter is an ELM327 emulator behind a symlink (as udev names a device); unplugging
removes the symlink (as udev does) and closes the emulator, plugging in starts another one
and points the symlink to it. The GNSS receiver is a simulated NMEA receiver on a
pseudo-terminal. Nobody touches the daemon meanwhile.
"""

from __future__ import annotations

import csv
import itertools
import logging
import os
from pathlib import Path

import pytest

from eccm.app import Daemon
from eccm.config import parse
from eccm.sim.gnss import NmeaPty, Route
from tests.emulator import emulated_car
from tests.waiting import wait_until

WAIT = 60.0
ROUTE = Route(latitude=45.0, longitude=7.0, radius=200.0, speed=12.0)


def point(link: Path, target: str) -> None:
    tmp = link.with_name(link.name + ".new")
    tmp.symlink_to(target)
    os.replace(tmp, link)  # atomic, like udev replacing its link


def unplug(link: Path) -> None:
    """Remove the link before its pseudo-terminal closes, as udev removes it with the device.

    A link left pointing to the closed /dev/pts/N would not stay dead: the kernel gives that
    number to the next pseudo-terminal opened on the machine, often another test's emulator
    or GNSS simulator (in another xdist worker), and the daemon reconnects to it during the
    outage, sharing that emulator with the other test's own client: a row then reads the
    other client's ATZ banner ("the adapter answered 'ELM327 v1.5'"), or that emulator
    closes, and the link reconnects once more, a third trip.
    """
    link.unlink()


def rows_of(records: Path) -> list[dict[str, str]]:
    rows: list[dict[str, str]] = []
    for path in sorted(records.glob("*.tsv")):
        assert Path(f"{path}.json").exists(), f"{path.name} has no sidecar"
        with path.open(newline="") as f:
            rows.extend(csv.DictReader(f, delimiter="\t"))
    return sorted(rows, key=lambda r: r["TIME_UTC"])


def test_unplugging_the_adapter_mid_drive_gives_one_gnss_log_and_two_trips(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="eccm.obd")
    obd = tmp_path / "obd"
    records = tmp_path / "records"
    with NmeaPty(ROUTE, rate_hz=5.0) as gnss:
        cfg = parse(
            {
                "CAR_IDENTIFIER": "drive",
                "OBD_INTERFACE": str(obd),
                "OBD_PROTOCOL": "6",
                "OBD_FAST_COMMANDS": "RPM,SPEED",
                "OBD_SLOW_COMMANDS": "COOLANT_TEMP",
                "OBD_RECONNECT_MAX_INTERVAL": "1",
                "GPS_POSITION_MONITORING": "yes",
                "GPS_INTERFACE": gnss.path,
                "RECORD_DIRECTORY_LOCATION": str(records),
                "FILE_COMPRESSION": "none",
                "SAMPLE_INTERVAL": "0.1",
            }
        )
        daemon = Daemon(cfg)
        hub = daemon.hub
        stopped = False
        try:
            with emulated_car() as first:
                point(obd, first.get_pty())
                daemon.start()
                first_trip = wait_until(lambda: hub.engine_trip and hub.trip, WAIT, "a trip")
                rows = hub.rows
                wait_until(lambda: hub.rows >= rows + 20, WAIT, "engine rows")
                unplug(obd)
            # Unplugged: the trip ends and GNSS rows go on in a segment of their own.
            wait_until(lambda: hub.trip not in (None, first_trip), WAIT, "GNSS-only rows")
            assert not hub.engine_trip
            rows = hub.rows
            wait_until(lambda: hub.rows >= rows + 10, WAIT, "more GNSS-only rows")
            assert not hub.engine_trip  # nothing else took the adapter's place meanwhile
            with emulated_car() as second:
                point(obd, second.get_pty())  # plugged in again, maybe as another device
                wait_until(lambda: hub.engine_trip, WAIT, "the engine trip to resume")
                second_trip = hub.trip
                rows = hub.rows
                wait_until(lambda: hub.rows >= rows + 20, WAIT, "engine rows again")
                # Stopped while the second adapter is still there: unplugging it first
                # would end the trip and, on a loaded machine, start a third one before
                # the stop.
                stopped = True
                daemon.stop()
        finally:
            if not stopped:
                daemon.stop()
    assert second_trip not in (None, first_trip)

    rows = rows_of(records)
    trips = [trip for trip, _ in itertools.groupby(rows, key=lambda r: r["TRIP_ID"])]
    assert trips == [first_trip, second_trip]  # two trips, one after the other
    first_rows = [r for r in rows if r["TRIP_ID"] == first_trip]
    second_rows = [r for r in rows if r["TRIP_ID"] == second_trip]
    assert all(r["RPM"] for r in first_rows[-10:])
    # The second trip starts with the GNSS rows of the outage, then the engine joins in.
    engine = [bool(r["RPM"]) for r in second_rows]
    assert not engine[0] and engine[-1]
    assert engine.index(True) >= 10
    assert all(engine[engine.index(True) :][-20:])

    # One GNSS log across the outage: positions in both trips, and every row of the
    # outage (written for the fixes alone) has one. How far apart the rows come is the
    # machine's speed, not the daemon's behaviour: it is not asserted.
    outage = second_rows[: engine.index(True)]
    assert all(r["GPS_LATITUDE"] and r["GPS_LONGITUDE"] for r in outage)
    assert any(r["GPS_LATITUDE"] for r in first_rows)
    assert any(r["GPS_LATITUDE"] for r in second_rows[engine.index(True) :])
    # What the adapter is was learnt once: the emulator takes no response count after
    # several PIDs, which was found (a refused request, an INFO line) at each connection.
    refusals = [r for r in caplog.records if "does not take a response count" in r.getMessage()]
    assert len(refusals) == 1, [r.getMessage() for r in refusals]


def test_a_car_that_answers_no_data_mid_drive_keeps_its_trip_and_its_track(
    tmp_path: Path,
) -> None:
    """The ECU answers NO DATA for a while (a CAN bus hiccup, a module rebooting), shorter
    than TRIP_END_TIMEOUT: the trip goes on, and the position is logged all along, in rows
    of that trip with empty engine columns (they used to stop for up to TRIP_END_TIMEOUT)."""
    records = tmp_path / "records"
    with NmeaPty(ROUTE, rate_hz=5.0) as gnss, emulated_car() as emu:
        cfg = parse(
            {
                "CAR_IDENTIFIER": "hiccup",
                "OBD_INTERFACE": emu.get_pty(),
                "OBD_PROTOCOL": "6",
                "OBD_FAST_COMMANDS": "RPM,SPEED",
                "OBD_SLOW_COMMANDS": "COOLANT_TEMP",
                "GPS_POSITION_MONITORING": "yes",
                "GPS_INTERFACE": gnss.path,
                "RECORD_DIRECTORY_LOCATION": str(records),
                "FILE_COMPRESSION": "none",
                "SAMPLE_INTERVAL": "0.1",
                "TRIP_END_TIMEOUT": "40",
            }
        )
        daemon = Daemon(cfg)
        hub = daemon.hub
        try:
            daemon.start()
            trip = wait_until(lambda: hub.engine_trip and hub.trip, WAIT, "a trip")
            rows = hub.rows
            wait_until(lambda: hub.rows >= rows + 10, WAIT, "engine rows")
            emu.set_sorted_obd_msg("engineoff")  # NO DATA to every request
            try:
                rows = hub.rows
                # Position rows of the silent stretch: the engine trip's, and counted.
                wait_until(lambda: hub.rows >= rows + 10, WAIT, "position rows")
                assert hub.engine_trip and hub.trip == trip
            finally:
                emu.set_sorted_obd_msg("car")
            silent_rows = hub.rows
            wait_until(
                lambda: hub.rows >= silent_rows + 10 and hub.latest_values(),
                WAIT,
                "engine rows again",
            )
            assert hub.trip == trip
        finally:
            daemon.stop()
    rows = rows_of(records)
    assert {r["TRIP_ID"] for r in rows} == {trip}
    engine = [bool(r["RPM"]) for r in rows]
    first = engine.index(True)
    gap = engine.index(False, first)
    back = engine.index(True, gap)
    silent = rows[gap:back]
    assert len(silent) >= 10
    assert all(r["GPS_LATITUDE"] and r["GPS_LONGITUDE"] for r in silent)
    assert all(r["RPM"] == r["SPEED"] == r["COOLANT_TEMP"] == "" for r in silent)
    times = [r["TIME_UTC"] for r in rows]
    assert times == sorted(times)
