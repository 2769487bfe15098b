"""Start-up order (issue 16): the first row waits for no library it does not need.

python-OBD (with pint), boto3, aiohttp and paho-mqtt take most of a start's CPU, seconds
on a Pi. The first GNSS row must be written while python-OBD is still importing, and the
first engine row while the front ends' libraries are: these tests hold those imports
forever in a real `eccm run` and see the rows come anyway. The recorder's part of it, a
first file opened before python-OBD's units are known, is tested on a Recorder.
"""

from __future__ import annotations

import dataclasses
import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest

from eccm.app import Daemon
from eccm.clock import FakeClock
from eccm.config import Config, parse
from eccm.gnss.fix import Fix
from eccm.sample import Layout, Sample
from eccm.sim.car import emulated_car
from eccm.sim.gnss import NmeaPty, Route
from eccm.store import sidecar
from eccm.store.recorder import Recorder
from tests.listeners import Events
from tests.recorder_writer import CAR, LAYOUT, T0, TRIP, config, sample
from tests.waiting import wait_until

WAIT = 60.0
SECRET = "startup-secret-startup-secret-0123456789"
UNITS = dict(LAYOUT.info)

# Runs `eccm run` with the imports of the named top-level packages (argv[1], comma-separated)
# held for ever, as a very slow import: their loader never returns. The wait is in
# exec_module, under the module's own lock, where a real import spends its time (a finder
# waiting would hold the interpreter's global import lock).
HELD_RUN = """
import sys, threading
from importlib.machinery import ModuleSpec
held = set(sys.argv[1].split(","))
class Hold:
    def find_spec(self, name, path=None, target=None):
        return ModuleSpec(name, self) if name.split(".")[0] in held else None
    def create_module(self, spec):
        return None
    def exec_module(self, module):
        threading.Event().wait()
sys.meta_path.insert(0, Hold())
from eccm.cli import main
sys.exit(main(["run", "--config", sys.argv[2]]))
"""


class PendingInfo(Mapping[str, tuple[str, str]]):
    """Units that are not at hand until ``ready`` (as CommandInfo before python-OBD is
    imported); reading one before then counts as a wait."""

    def __init__(self) -> None:
        self.ready = False
        self.waited = 0

    def __getitem__(self, name: str) -> tuple[str, str]:
        if not self.ready:
            self.waited += 1
            self.ready = True
        return UNITS[name]

    def __iter__(self) -> Iterator[str]:
        return iter(UNITS)

    def __len__(self) -> int:
        return len(UNITS)


def pending_sample(i: int, layout: Layout) -> Sample:
    s = sample(i)
    return Sample(s.time, s.trip_id, s.values, s.fix, layout, s.time_source)


def described(doc: dict[str, list[dict[str, str]]]) -> dict[str, tuple[str, str]]:
    return {c["name"]: (c["unit"], c["description"]) for c in doc["columns"]}


def meta_units(directory: Path) -> dict[str, tuple[str, str]]:
    stem = directory / f"{CAR}_{TRIP}_0001.tsv"
    return described(json.loads(sidecar.meta_path(stem).read_text()))


def sealed_units(directory: Path) -> dict[str, tuple[str, str]]:
    return described(json.loads((directory / f"{CAR}_{TRIP}_0001.tsv.json").read_text()))


ALL_UNITS = {c: LAYOUT.describe(c) for c in LAYOUT.header}


@pytest.fixture
def pending() -> tuple[PendingInfo, Layout]:
    info = PendingInfo()
    return info, Layout(LAYOUT.fast, LAYOUT.slow, LAYOUT.gps, info=info)


def recording_first_row(tmp_path: Path, layout: Layout) -> tuple[Config, Recorder]:
    """A started recorder that has written the first row of ``layout`` (the caller stops it)."""
    cfg = config(tmp_path, FILE_FLUSH_INTERVAL="0", FILE_COMPRESSION="none")
    rec = Recorder.from_config(cfg, FakeClock(start=T0))
    rec.start()
    try:
        rec.on_sample(pending_sample(0, layout))
        wait_until(lambda: rec.rows_written == 1, WAIT)
    except BaseException:
        rec.stop()
        raise
    return cfg, rec


def test_a_first_file_opens_without_waiting_for_the_units_and_gets_them_with_a_later_row(
    tmp_path: Path, pending: tuple[PendingInfo, Layout]
) -> None:
    info, layout = pending
    cfg, rec = recording_first_row(tmp_path, layout)
    try:
        assert info.waited == 0
        # The OBD columns' units wait for python-OBD, the others are there.
        assert meta_units(cfg.record_dir) == {
            c: ("", "") if c in LAYOUT.obd else ALL_UNITS[c] for c in LAYOUT.header
        }
        info.ready = True  # python-OBD is imported
        rec.on_sample(pending_sample(1, layout))
        wait_until(lambda: rec.rows_written == 2, WAIT)
        assert meta_units(cfg.record_dir) == ALL_UNITS
    finally:
        rec.stop()
    assert info.waited == 0
    assert sealed_units(cfg.record_dir) == ALL_UNITS


def test_a_first_file_closed_before_the_units_are_known_waits_for_them(
    tmp_path: Path, pending: tuple[PendingInfo, Layout]
) -> None:
    info, layout = pending
    cfg, rec = recording_first_row(tmp_path, layout)
    rec.stop()
    assert info.waited == 1
    assert sealed_units(cfg.record_dir) == ALL_UNITS


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def fix_at(clock: FakeClock) -> Fix:
    return Fix(
        time_utc=clock.time(),
        latitude=45.0,
        longitude=7.0,
        altitude=None,
        speed=15.0,
        track=None,
        quality=1,
        satellites=None,
        hdop=None,
        received=clock.monotonic(),
        received_wall=clock.time(),
    )


def gnss_daemon_before_start(
    tmp_path: Path, clock: FakeClock, **keys: str
) -> tuple[Daemon, Events]:
    """A daemon with GNSS on, as start() leaves it before opening the receiver; ``Events``
    listens where the recorder will."""
    cfg = parse(
        {
            "CAR_IDENTIFIER": "early",
            "RECORD_DIRECTORY_LOCATION": str(tmp_path),
            "GPS_POSITION_MONITORING": "yes",
            "GPS_INTERFACE": "/dev/null",
            **keys,
        }
    )
    daemon = Daemon(cfg, clock)
    daemon._gnss_rows.clear()  # as start() does before opening the receiver
    events = Events()
    daemon.hub.add_listener(events)  # the recorder's place
    return daemon, events


def test_a_fix_that_came_while_the_recording_parts_were_built_makes_the_first_row_then(
    tmp_path: Path,
) -> None:
    """The receiver is opened first; its epoch may come before the recorder listens. It
    is not lost (the next may be a second away): it makes the first row once it does."""
    clock = FakeClock(start=1_795_000_000.0)
    daemon, events = gnss_daemon_before_start(tmp_path, clock)
    fix = fix_at(clock)
    daemon._on_fix(fix)
    assert events.samples == []  # the recording parts are not up
    clock.advance(0.3)
    daemon._open_gnss_rows()
    assert [s.fix for s in events.samples] == [fix]
    clock.advance(0.1)
    daemon._on_fix(fix_at(clock))  # within SAMPLE_INTERVAL of that row
    assert len(events.samples) == 1


def test_no_row_from_a_stale_fix_when_the_recording_parts_are_up(tmp_path: Path) -> None:
    clock = FakeClock(start=1_795_000_000.0)
    daemon, events = gnss_daemon_before_start(tmp_path, clock)
    daemon._on_fix(fix_at(clock))
    clock.advance(daemon.cfg.gps_max_fix_age + 1.0)  # a recovery that took long
    daemon._open_gnss_rows()
    assert events.samples == []


def write_config(path: Path, **values: str) -> Path:
    path.write_text("[DEFAULT]\n" + "".join(f"{k}={v}\n" for k, v in values.items()))
    return path


def rows(records: Path) -> list[dict[str, str]]:
    """The rows of the open files, by column."""
    found = []
    for part in records.glob("*.tsv.part"):
        lines = part.read_text().split("\n")[:-1]  # whole lines: the last may be on its way
        if lines:
            header = lines[0].split("\t")
            found += [dict(zip(header, line.split("\t"), strict=True)) for line in lines[1:]]
    return found


@pytest.fixture
def receiver() -> Iterator[NmeaPty]:
    with NmeaPty(Route(), rate_hz=5.0) as pty:
        yield pty


def held_run(held: str, cfg: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-c", HELD_RUN, held, str(cfg)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def test_the_first_gnss_row_is_written_while_python_obd_imports(
    tmp_path: Path, receiver: NmeaPty
) -> None:
    records = tmp_path / "records"
    cfg = write_config(
        tmp_path / "config.ini",
        CAR_IDENTIFIER="held",
        OBD_INTERFACE=str(tmp_path / "no-adapter"),
        GPS_POSITION_MONITORING="yes",
        GPS_INTERFACE=receiver.path,
        RECORD_DIRECTORY_LOCATION=str(records),
        FILE_FLUSH_INTERVAL="0",
    )
    proc = held_run("obd,pint", cfg)
    try:
        found = wait_until(lambda: rows(records), WAIT, "a GNSS row")
        assert found[0]["GPS_LATITUDE"] and not found[0]["RPM"]
        assert proc.poll() is None
    finally:
        proc.kill()
        proc.wait(WAIT)


def test_the_first_engine_row_is_written_while_the_front_ends_libraries_import(
    tmp_path: Path,
) -> None:
    records = tmp_path / "records"
    with emulated_car() as emu:
        cfg = write_config(
            tmp_path / "config.ini",
            CAR_IDENTIFIER="held",
            OBD_INTERFACE=os.path.realpath(emu.get_pty()),
            OBD_PROTOCOL="6",
            GPS_POSITION_MONITORING="no",
            RECORD_DIRECTORY_LOCATION=str(records),
            FILE_FLUSH_INTERVAL="0",
            S3_SERVER_ENDPOINT="http://127.0.0.1:9",
            S3_SERVER_BUCKET="held",
            S3_SERVER_AK="a",
            S3_SERVER_SK="b",
            ENABLE_SOCKET_SERVER="yes",
            SOCKET_SERVER_BIND="127.0.0.1",
            SOCKET_SERVER_PORT=str(free_port()),
            SOCKET_SERVER_SECRET=SECRET,
            ENABLE_WEB_SERVER="yes",
            WEB_SERVER_BIND="127.0.0.1",
            WEB_SERVER_PORT=str(free_port()),
            MQTT_BROKER="mqtt://127.0.0.1:9",
        )
        proc = held_run("boto3,botocore,aiohttp,paho", cfg)
        try:
            wait_until(lambda: any(r.get("RPM") for r in rows(records)), WAIT, "an engine row")
            assert proc.poll() is None
        finally:
            proc.kill()
            proc.wait(WAIT)


HEAVY = ("obd", "pint", "numpy", "boto3", "botocore", "aiohttp", "paho")

IMPORTED = """
import sys
from pathlib import Path
from eccm.config import load
from eccm.app import Daemon
daemon = Daemon(load(sys.argv[1]))
daemon._build_gnss()  # wiring only: no thread starts
daemon._build_recording()
print(sorted({m.split(".")[0] for m in sys.modules} & set(sys.argv[2].split(","))))
"""


def test_neither_the_recording_parts_nor_check_config_import_a_heavy_library(
    tmp_path: Path,
) -> None:
    cfg = write_config(
        tmp_path / "config.ini",
        CAR_IDENTIFIER="light",
        GPS_POSITION_MONITORING="yes",
        GPS_INTERFACE=str(tmp_path / "no-receiver"),
        RECORD_DIRECTORY_LOCATION=str(tmp_path / "records"),
        FILE_ENCRYPTION_RECIPIENTS="",
        S3_SERVER_ENDPOINT="http://127.0.0.1:9",
        S3_SERVER_BUCKET="light",
        S3_SERVER_AK="a",
        S3_SERVER_SK="b",
        ENABLE_SOCKET_SERVER="yes",
        SOCKET_SERVER_SECRET=SECRET,
        ENABLE_WEB_SERVER="yes",
        MQTT_BROKER="mqtt://127.0.0.1:9",
    )
    out = subprocess.run(
        [sys.executable, "-c", IMPORTED, str(cfg), ",".join(HEAVY)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert out.strip() == "[]"
    check = (
        "import sys, contextlib, io; from eccm.cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        "    code = main(['check-config', '--config', sys.argv[1]])\n"
        "print(code, sorted({m.split('.')[0] for m in sys.modules} & set(sys.argv[2].split(','))))"
    )
    out = subprocess.run(
        [sys.executable, "-c", check, str(cfg), ",".join(HEAVY)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert out.strip() == "0 []"


def test_an_epoch_reported_twice_is_one_row_a_stuck_time_with_a_moving_car_is_not(
    tmp_path: Path,
) -> None:
    """gpsd's first cycles after it starts report an epoch twice, RMC then GGA (seen with
    Debian's gpsd): the second completes the fix and writes no second row. A receiver whose
    time stays stuck while the car moves still gets a row per fix."""
    clock = FakeClock(start=1_795_000_000.0)
    daemon, events = gnss_daemon_before_start(tmp_path, clock, SAMPLE_INTERVAL="0")
    daemon._open_gnss_rows()  # the recording parts are up
    rmc = fix_at(clock)
    daemon._on_fix(rmc)
    gga = dataclasses.replace(rmc, altitude=240.0, satellites=9, hdop=0.9)
    daemon._on_fix(gga)
    assert len(events.samples) == 1
    assert daemon.hub.fresh_fix() == gga  # completed
    clock.advance(0.5)
    moved = dataclasses.replace(gga, latitude=45.001, received=clock.monotonic())
    daemon._on_fix(moved)  # the same time, the car elsewhere
    assert len(events.samples) == 2
