"""GPS_INTERFACE=gpsd://... against Debian's real gpsd, fed NMEA from a pseudo-terminal.

test_gnss_gpsd.py checks the decoder on gpsd's documented JSON and a TCP server speaking
it; here the peer is gpsd itself (the version a Pi's Debian ships): what ECCM logs must be
where the simulated receiver says the car is, from the source to the daemon's files, and a
gpsd that dies and comes back (apt upgrade, a crash) is read again without a person.
"""

from __future__ import annotations

import csv
import shutil
import signal
import socket
import subprocess
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest

from eccm.clock import SystemClock
from eccm.gnss.fix import Fix
from eccm.gnss.source import GnssSource
from eccm.sim.gnss import NmeaPty, Route
from tests.test_chaos_sigterm import Daemon, assert_clean_stop, write_config
from tests.waiting import wait_until

ROUTE = Route(latitude=45.07, longitude=7.68, altitude=240.0)
# The NMEA sentences carry centiseconds and ten-thousandths of a minute (~0.2 m): the
# route is followed to well within a metre.
DEGREES = 1e-5


def gpsd_binary() -> str:
    found = shutil.which("gpsd") or ("/usr/sbin/gpsd" if Path("/usr/sbin/gpsd").exists() else None)
    if found is None:
        pytest.skip("gpsd is not installed (./test.sh installs it as root: apt-get install gpsd)")
    return found


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Gpsd:
    """gpsd in the foreground on ``port``, reading ``device`` (read-only: -b)."""

    def __init__(self, device: str, folder: Path, port: int | None = None) -> None:
        self.device = device
        self.folder = folder
        self.port = port or free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [
                gpsd_binary(),
                "-N",  # foreground
                "-n",  # read the device before any client asks
                "-b",  # never reconfigure the receiver
                "-S",
                str(self.port),
                "-F",
                str(self.folder / f"gpsd-{self.port}.sock"),
                self.device,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)


@pytest.fixture
def receiver() -> Iterator[NmeaPty]:
    with NmeaPty(ROUTE, rate_hz=2.0) as pty:
        yield pty


@pytest.fixture
def gpsd(receiver: NmeaPty, tmp_path: Path) -> Iterator[Gpsd]:
    server = Gpsd(receiver.path, tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.kill()


def assert_on_route(fix: Fix) -> None:
    assert fix.time_utc is not None and fix.has_position, fix
    lat, lon = ROUTE.position_at(fix.time_utc)
    assert abs(fix.latitude - lat) < DEGREES and abs(fix.longitude - lon) < DEGREES, (fix, lat, lon)
    if fix.altitude is not None:  # none in a 2D report (gpsd's first, from the RMC)
        assert fix.altitude == pytest.approx(ROUTE.altitude, abs=0.1)
    assert fix.speed == pytest.approx(ROUTE.speed, abs=0.05)
    assert fix.track is not None
    assert abs((fix.track - ROUTE.track_at(fix.time_utc) + 180) % 360 - 180) < 0.5


def test_fixes_through_gpsd_are_where_the_receiver_says_and_survive_its_restart(
    gpsd: Gpsd,
) -> None:
    fixes: list[Fix] = []
    source = GnssSource(
        f"gpsd://127.0.0.1:{gpsd.port}", 9600, fixes.append, SystemClock(), max_backoff=0.5
    )
    source.start()
    try:
        wait_until(lambda: len([f for f in fixes if f.has_position]) >= 3, 60, "fixes via gpsd")
        for fix in [f for f in fixes if f.has_position]:
            assert_on_route(fix)
        gpsd.kill()  # gpsd crashes, or apt restarts it
        wait_until(lambda: not source.connected, 30, "the source to notice")
        before = len(fixes)
        gpsd.start()  # the same port
        wait_until(lambda: len(fixes) >= before + 3, 60, "fixes after gpsd came back")
        for fix in fixes[before:]:
            if fix.has_position:
                assert_on_route(fix)
    finally:
        source.stop()
    times = [f.time_utc for f in fixes if f.time_utc is not None]
    assert times == sorted(times)
    # gpsd's first cycles after it starts report an epoch twice, RMC then GGA: the second
    # completes the first (the daemon's rows take the epoch once, see the test below).
    for epoch in set(times):
        same = [f for f in fixes if f.time_utc == epoch]
        assert len(same) == 1 or [f.altitude is None for f in same] == [True, False], same


def test_the_daemon_logs_the_route_read_through_gpsd(gpsd: Gpsd, tmp_path: Path) -> None:
    records = tmp_path / "records"
    config = write_config(
        tmp_path / "config.ini",
        CAR_IDENTIFIER="gpsd-car",
        OBD_INTERFACE=str(tmp_path / "no-adapter"),
        GPS_POSITION_MONITORING="yes",
        GPS_INTERFACE=f"gpsd://127.0.0.1:{gpsd.port}",
        RECORD_DIRECTORY_LOCATION=str(records),
        SAMPLE_INTERVAL="0",  # a row for every fix the daemon takes as an epoch
        FILE_COMPRESSION="none",
    )
    daemon = Daemon(config)
    try:

        def rows() -> int:
            files = [*records.glob("*.tsv.part"), *records.glob("*.tsv")]
            return sum(p.read_text(encoding="utf-8").count("\n") - 1 for p in files)

        wait_until(lambda: records.exists() and rows() >= 4, 60, "GNSS rows via gpsd")
        gpsd.kill()  # and back: its first cycles report each epoch twice
        before = rows()
        gpsd.start()
        wait_until(lambda: rows() >= before + 6, 60, "GNSS rows after gpsd came back")
        assert_clean_stop(daemon, records)
    finally:
        if daemon.proc.poll() is None:
            daemon.proc.kill()
    table = []
    for path in sorted(records.glob("gpsd-car_*.tsv")):
        with path.open(encoding="utf-8") as f:
            table += list(csv.DictReader(f, delimiter="\t"))
    assert len(table) >= 10, [p.name for p in records.iterdir()]
    epochs = [row["GPS_TIME_UTC"] for row in table]
    assert len(set(epochs)) == len(epochs), "an epoch written twice"
    for row in table:
        epoch = datetime.fromisoformat(row["GPS_TIME_UTC"].replace("Z", "+00:00")).timestamp()
        lat, lon = ROUTE.position_at(epoch)
        assert abs(float(row["GPS_LATITUDE"]) - lat) < DEGREES, row
        assert abs(float(row["GPS_LONGITUDE"]) - lon) < DEGREES, row
