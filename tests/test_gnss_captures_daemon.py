"""Real receivers' captures replayed into the real daemon over a pseudo-terminal.

Each capture is sent at its own pace (one epoch a second), its times rewritten to now
(tests/captures.py): what the receiver recorded, in its own order and talkers, as ECCM would
read it in a car today.
"""

from __future__ import annotations

import csv
import datetime as dt
import gzip
import io
import os
import threading
import time
import tty
from collections.abc import Iterator
from pathlib import Path

import pytest

from eccm.app import Daemon
from eccm.clock import Clock
from eccm.config import parse
from tests.captures import epochs, restamp
from tests.listeners import OffsetClock
from tests.waiting import wait_until


class CaptureReceiver:
    """A pty that sends a capture's epochs at ``rate_hz``, each stamped with the time it is
    sent, from its ``start``-th epoch on (a receiver ECCM opens in the middle of its
    output), until closed."""

    def __init__(self, name: str, rate_hz: float = 1.0, start: int = 0) -> None:
        self._epochs = epochs(name)[start:]
        self._period = 1.0 / rate_hz
        self.master, self.slave = os.openpty()
        tty.setraw(self.slave)
        self.path = os.ttyname(self.slave)
        self.sent = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> CaptureReceiver:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)
        os.close(self.master)
        os.close(self.slave)

    def _run(self) -> None:
        for chunk in self._epochs:
            now = dt.datetime.now(dt.UTC)
            data = memoryview(restamp(chunk, now))
            while data:
                data = data[os.write(self.master, data) :]
            self.sent += 1
            if self._stop.wait(self._period):
                return


def rows_of(path: Path) -> list[dict[str, str]]:
    text = gzip.decompress(path.read_bytes()).decode()
    return list(csv.DictReader(io.StringIO(text), delimiter="\t"))


@pytest.fixture
def records(tmp_path: Path) -> Iterator[Path]:
    yield tmp_path / "records"


def run_daemon(records: Path, receiver: CaptureReceiver, clock: Clock, tmp_path: Path) -> Daemon:
    cfg = parse(
        {
            "CAR_IDENTIFIER": "capture-car",
            "OBD_INTERFACE": str(tmp_path / "no-adapter"),
            "GPS_POSITION_MONITORING": "yes",
            "GPS_INTERFACE": receiver.path,
            "RECORD_DIRECTORY_LOCATION": str(records),
            "FILE_ROTATION_SECONDS": "60",
        }
    )
    daemon = Daemon(cfg, clock)
    daemon.start()
    return daemon


@pytest.mark.parametrize("capture", ["sirfstarv-nmea.log", "telit-he910.log"])
def test_a_receiver_whose_epoch_starts_with_gga_makes_no_trip_on_a_wrong_clock(
    capture: str, records: Path, tmp_path: Path
) -> None:
    """Found replaying the SiRFstarV and Telit captures on a clock a day behind (a Pi
    without a real-time clock, fake-hwclock): these receivers send GGA (no date) before
    RMC in every epoch, so the first fix ECCM reads carries a position but no time. It
    made a row at once, on the wrong clock: a one-row trip on the wrong date (its own
    file, summary and upload) that ended one second later when GNSS time was adopted."""
    clock = OffsetClock(-86_400.0)
    with CaptureReceiver(capture, start=20) as receiver:
        daemon = run_daemon(records, receiver, clock, tmp_path)
        try:
            wait_until(lambda: daemon.hub.timebase.source == "gnss", 30, "GNSS time adopted")
            wait_until(lambda: daemon.hub.rows >= 3, 30, "rows on GNSS time")
        finally:
            daemon.stop()
    files = sorted(records.glob("*.tsv.gz"))
    assert len({p.name.split("_")[1] for p in files}) == 1, [p.name for p in files]
    assert len(list(records.glob("*_summary.json"))) == 1
    for path in files:
        for row in rows_of(path):
            stamp = dt.datetime.fromisoformat(row["TIME_UTC"]).timestamp()
            assert abs(stamp - time.time()) < 120, row["TIME_UTC"]
