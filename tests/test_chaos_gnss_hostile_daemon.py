"""Chaos (issue 10 items 2 and 5): a hostile receiver on a real pty, the whole daemon.

Good 5 Hz epochs carry the true time; among them, checksum-valid epochs whose RMC date is
060180 (which the week-rollover correction once moved to 2038-11-21), 311268 (2068) or
010131 (plausible, only wrong: a lone epoch of it must not step the clock either), and
epochs with impossible values (99 minutes of latitude, a 1,000 km jump, negative and
absurd speeds, a billion satellites, fix quality 9, an altitude of -99999 m). The daemon
records (no adapter: GNSS-only rows) and uploads to a local S3 server, keeping uploaded files
(S3_DELETE_AFTER_UPLOAD=no, LOCAL_RETENTION_DAYS=1). No row may be stamped off the true
year, no extra trip may open, no uploaded file may be deleted, no impossible value may reach
a file.
"""

from __future__ import annotations

import contextlib
import csv
import functools
import gzip
import io
import itertools
import operator
import os
import threading
import time
import tty
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from eccm.app import Daemon
from eccm.config import parse
from eccm.sim.s3 import LocalS3
from tests import s3server
from tests.waiting import wait_until

# 010131 is a plausible date (no rollover, before the horizon), only wrong: the decoder
# takes it, and only the time base's confirmation keeps a lone such epoch from stepping.
BOGUS_DATES = ("060180", "311268", "010131")
# (what, RMC fields 2..7 after the time, GGA fields 1..9 after the time)
HOSTILE = (
    ("99 minutes", "A,4699.9999,N,00700.000,E,010.0,090.0", None),
    (
        "1000 km jump",
        "A,5400.000,N,00700.000,E,010.0,090.0",
        "5400.000,N,00700.000,E,1,08,0.9,300.0",
    ),
    ("negative speed", "A,4500.000,N,00700.000,E,-5.0,090.0", None),
    ("huge speed", "A,4500.000,N,00700.000,E,9.9e299,090.0", None),
    ("satellites", None, "4500.000,N,00700.000,E,1,1000000000,0.9,300.0"),
    ("quality 9", None, "4500.000,N,00700.000,E,9,08,0.9,300.0"),
    ("altitude", None, "4500.000,N,00700.000,E,1,08,0.9,-99999"),
)


def sentence(body: str) -> bytes:
    checksum = functools.reduce(operator.xor, body.encode("ascii"), 0)
    return f"${body}*{checksum:02X}\r\n".encode("ascii")


class HostileReceiver:
    """Writes NMEA to a pty at 5 Hz: good epochs at the true time, hostile ones among them."""

    def __init__(self) -> None:
        self._master, self._slave = os.openpty()
        tty.setraw(self._slave)
        os.set_blocking(self._master, False)
        self.path = os.ttyname(self._slave)
        self.bogus_sent = 0
        self.hostile_sent = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="hostile-nmea", daemon=True)

    def __enter__(self) -> HostileReceiver:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)
        os.close(self._master)
        os.close(self._slave)

    def _write(self, data: bytes) -> None:
        # Nobody reads (yet), or the buffer is full: a receiver does not wait either.
        with contextlib.suppress(OSError):
            os.write(self._master, data)

    def _epoch(self, now: float, date: str, rmc: str | None, gga: str | None) -> bytes:
        tod = datetime.fromtimestamp(now, UTC).strftime("%H%M%S.%f")[:9]
        lat = 4500.0 + (now % 100) * 0.001  # a car creeping north, a few m/s
        good_pos = f"{lat:09.4f},N,00700.000,E"
        rmc = rmc or f"A,{good_pos},010.0,090.0"
        gga = gga or f"{good_pos},1,08,0.9,300.0"
        return sentence(f"GPRMC,{tod},{rmc},{date},,,A") + sentence(f"GPGGA,{tod},{gga},M,46.9,M,,")

    def _run(self) -> None:
        bogus = itertools.cycle(BOGUS_DATES)
        hostile = itertools.cycle(HOSTILE)
        for i in itertools.count():
            if self._stop.wait(0.2):
                return
            now = time.time()
            today = datetime.fromtimestamp(now, UTC).strftime("%d%m%y")
            if i % 5 == 2:
                self._write(self._epoch(now, next(bogus), None, None))
                self.bogus_sent += 1
            elif i % 5 == 4:
                _what, rmc, gga = next(hostile)
                self._write(self._epoch(now, today, rmc, gga))
                self.hostile_sent += 1
            else:
                self._write(self._epoch(now, today, None, None))


def rows_of(path: Path) -> list[dict[str, str]]:
    text = gzip.decompress(path.read_bytes()).decode()
    return list(csv.DictReader(io.StringIO(text), delimiter="\t"))


@pytest.fixture
def receiver() -> Iterator[HostileReceiver]:
    with HostileReceiver() as r:
        yield r


def test_hostile_sentences_among_good_ones_move_no_time_open_no_trip_delete_no_file_and_write_no_impossible_value(
    receiver: HostileReceiver, s3_http: LocalS3, tmp_path: Path
) -> None:
    records = tmp_path / "records"
    values = s3server.config_values(
        records,
        s3_http,
        CAR_IDENTIFIER="hostile-gnss",
        OBD_INTERFACE=str(tmp_path / "no-adapter"),
        GPS_POSITION_MONITORING="yes",
        GPS_INTERFACE=receiver.path,
        SAMPLE_INTERVAL="0.2",
        FILE_ROTATION_SECONDS="1.5",
        S3_SYNC_INTERVAL="1",
        S3_DELETE_AFTER_UPLOAD="no",
        LOCAL_RETENTION_DAYS="1",
        TRIP_END_TIMEOUT="60",
    )
    cfg = parse(values)
    daemon = Daemon(cfg)
    uploaded_dir = records / "uploaded"
    ever_uploaded: set[str] = set()

    def seen_uploaded() -> set[str]:
        names = {p.name for p in uploaded_dir.glob("*.tsv.gz")} if uploaded_dir.exists() else set()
        ever_uploaded.update(names)
        return names

    daemon.start()
    try:
        gnss = daemon.gnss
        assert gnss is not None
        # Every hostile kind twice, every bogus date several times, several uploads; and
        # the daemon has read what was sent (on a loaded machine it lags the writer).
        wait_until(
            lambda: (
                (seen_uploaded() and False)
                or (
                    receiver.hostile_sent >= 2 * len(HOSTILE)
                    and len(ever_uploaded) >= 3
                    and gnss.dropped >= 2 * len(HOSTILE)
                )
            ),
            90,
            "hostile epochs sent, dropped, and files uploaded",
        )
        dropped = gnss.dropped
    finally:
        daemon.stop()
    seen_uploaded()
    assert receiver.bogus_sent >= 10
    missing = {n for n in ever_uploaded if not (uploaded_dir / n).exists()}
    assert not missing, f"uploaded files deleted: {sorted(missing)}"
    year = datetime.now(UTC).year
    files = sorted(records.glob("*.tsv.gz")) + sorted(uploaded_dir.glob("*.tsv.gz"))
    trips = {p.name.split("_")[1] for p in files}
    assert len(trips) == 1, f"extra trips: {sorted(trips)}"
    rows = [r for p in files for r in rows_of(p)]
    assert len(rows) > 20
    for r in rows:
        assert int(r["TIME_UTC"][:4]) == year, r["TIME_UTC"]
        if r["GPS_TIME_UTC"]:  # the receiver's word, kept when it is a plausible date
            assert int(r["GPS_TIME_UTC"][:4]) in (year, 2031), r["GPS_TIME_UTC"]
        if r["GPS_LATITUDE"]:
            assert 45.0 <= float(r["GPS_LATITUDE"]) < 45.1, r  # not 47.6667, not 54
            assert float(r["GPS_LONGITUDE"]) == pytest.approx(7.0)
        if r["GPS_SPEED"]:
            assert 0.0 <= float(r["GPS_SPEED"]) < 150.0, r
        if r["GPS_SATELLITES"]:
            assert int(float(r["GPS_SATELLITES"])) <= 99, r
        if r["GPS_FIX_QUALITY"]:
            assert int(float(r["GPS_FIX_QUALITY"])) <= 8, r
        if r["GPS_ALTITUDE"]:
            assert float(r["GPS_ALTITUDE"]) > -1000.0, r
    assert dropped >= 2 * len(HOSTILE)
    # What STATUS gnss_time_rejected adds up: implausible dates (the decoder) and epochs
    # the time base ignored.
    assert daemon.gnss is not None
    assert daemon.gnss.rejected_times >= 1
