"""Chaos: the whole daemon on a Pi whose clock is ten years behind.

The daemon (in-process, with an injected clock: the real monotonic clock and a wall clock
ten years off) records the ELM327 emulator's car and a simulated receiver that has no fix
at first, uploads to a local S3 server, then gets a fix (the true time), then NTP sets the
system clock mid-trip. What a user finds in the bucket must make sense: the rows written
before the first fix form a trip of their own, stamped with the wrong year (nothing can
know better when they are written); from the fix on, rows, TRIP_ID, file names and date
partitions carry the true time; NTP changes nothing visible; no duration is absurd.
"""

from __future__ import annotations

import csv
import gzip
import io
import itertools
import json
import time
from datetime import datetime
from pathlib import Path

import pytest

from eccm.app import Daemon
from eccm.cli import main, upload_backlog
from eccm.config import Config, parse
from eccm.sim.gnss import NmeaPty, Route
from eccm.sim.s3 import LocalS3
from eccm.store.listing import list_files
from eccm.store.names import SIDECAR
from eccm.upload.keys import parse_data_name, parse_summary_name
from tests import s3server
from tests.listeners import OffsetClock
from tests.s3_helpers import write_config
from tests.waiting import wait_until

TEN_YEARS = 10 * 365.25 * 86400
CAR = "noclock-car"


def year(iso: str) -> int:
    return int(iso[:4])


def epoch(iso: str) -> float:
    return datetime.fromisoformat(iso).timestamp()


def closed_sources(records: Path, trip: str) -> list[str]:
    """The time_source of each closed data file of ``trip`` (its sidecar written)."""
    out = []
    for f in list_files(records, complete=True):
        if f.kind == "data" and f.trip == trip:
            try:
                side = json.loads(f.path.with_name(f.name + SIDECAR).read_text())
            except (OSError, ValueError):
                continue  # uploaded and moved meanwhile: the next look finds it
            out.append(str(side["time_source"]))
    return out


def test_a_pi_ten_years_behind_gets_true_times_names_and_partitions_from_the_first_fix(
    car: str, s3_http: LocalS3, tmp_path: Path
) -> None:
    records = tmp_path / "records"
    clock = OffsetClock(-TEN_YEARS)
    with NmeaPty(Route(latitude=45.0, longitude=7.0), rate_hz=2.0) as gnss:
        gnss.fix_available = False
        values = s3server.config_values(
            records,
            s3_http,
            CAR_IDENTIFIER=CAR,
            OBD_INTERFACE=car,
            OBD_PROTOCOL="6",
            OBD_SLOW_COMMANDS="COOLANT_TEMP",
            GPS_POSITION_MONITORING="yes",
            GPS_INTERFACE=gnss.path,
            SAMPLE_INTERVAL="0.2",
            FILE_ROTATION_SECONDS="1.5",
            S3_SYNC_INTERVAL="1",
            S3_DELETE_AFTER_UPLOAD="no",
        )
        cfg = parse(values)
        daemon = Daemon(cfg, clock)
        daemon.start()
        try:
            assert daemon.recorder is not None
            recorder = daemon.recorder
            wait_until(lambda: recorder.files_closed >= 2, 60, "files stamped before any fix")
            gnss.fix_available = True
            wait_until(
                lambda: daemon.hub.timebase.source == "gnss" and daemon.hub.trip is not None,
                30,
                "the fix correcting the clock",
            )
            corrected_trip = wait_until(
                lambda: (t := daemon.hub.trip) is not None and not t.startswith("2016") and t,
                30,
                "a trip with the corrected time",
            )
            # Awaited by what the files say, not by a count of closings: on a loaded machine
            # the recorder was still closing the old trip's files from its queue when the
            # count was read, and NTP came before any file of the new trip was closed.
            wait_until(
                lambda: closed_sources(records, corrected_trip).count("gnss") >= 2,
                60,
                "two closed gnss-stamped files of the corrected trip",
            )
            uploader = daemon.uploader
            assert uploader is not None
            true_year = time.strftime("%Y", time.gmtime())
            wait_until(
                lambda: (uploader.last_upload or "").startswith(true_year),
                30,
                "STATUS's last_upload on the corrected clock",
            )
            clock.set_right()  # NTP, mid-trip
            wait_until(lambda: daemon.hub.timebase.source == "system", 30, "the NTP-set clock")
            closed_then = recorder.files_closed
            wait_until(lambda: recorder.files_closed >= closed_then + 2, 60, "files after NTP")
            assert daemon.hub.trip == corrected_trip, "NTP must not end the trip"
        finally:
            daemon.stop()
    assert upload_backlog(cfg, progress=False) == 0

    client = s3_http.client()
    objects = s3server.list_objects(s3_http, values["S3_KEY_PREFIX"] + "/")
    files = {k: k.rsplit("/", 1)[1] for k in objects if parse_data_name(k.rsplit("/", 1)[1])}
    summaries = {k for k in objects if parse_summary_name(k.rsplit("/", 1)[1])}
    trips: dict[str, list[list[str]]] = {}
    sources: dict[str, set[str]] = {}
    for key, name in sorted(files.items(), key=lambda kv: kv[1]):
        body = client.get_object(Bucket=s3_http.bucket, Key=key)["Body"].read()
        side = json.loads(
            client.get_object(Bucket=s3_http.bucket, Key=key + ".json")["Body"].read()
        )
        rows = list(csv.reader(io.StringIO(gzip.decompress(body).decode()), delimiter="\t"))[1:]
        trip = name.split("_")[1]
        # a file, its rows, its trip id and its partition agree on the year
        assert {r[2] for r in rows} == {trip}
        assert {year(r[0]) for r in rows} == {int(trip[:4])}, name
        assert f"/date={rows[0][0][:10]}/" in key
        trips.setdefault(trip, []).extend(rows)
        sources.setdefault(trip, set()).add(side["time_source"])

    old = sorted(t for t in trips if t.startswith("2016"))
    new = sorted(t for t in trips if not t.startswith("2016"))
    assert len(old) == 1 and new == [corrected_trip], trips.keys()
    assert sources[old[0]] == {"system"}
    assert sources[corrected_trip] >= {"gnss"}
    # the corrected trip starts at its first row, on the true clock
    first = trips[corrected_trip][0][0]
    assert abs(epoch(first) - datetime.strptime(corrected_trip, "%Y%m%dT%H%M%SZ").timestamp()) < 2
    assert abs(epoch(trips[corrected_trip][-1][0]) - time.time()) < 120
    times = [epoch(r[0]) for r in trips[corrected_trip]]
    assert all(b > a for a, b in itertools.pairwise(times)), "time went backwards"
    assert max(b - a for a, b in itertools.pairwise(times)) < 5, "a jump at NTP"

    assert len(summaries) == 2
    for key in summaries:
        doc = json.loads(client.get_object(Bucket=s3_http.bucket, Key=key)["Body"].read())
        rows = trips[doc["trip"]]
        assert doc["rows"] == len(rows)
        assert doc["first_time"] == rows[0][0]
        assert f"/date={doc['trip'][:4]}-{doc['trip'][4:6]}-{doc['trip'][6:8]}/" in key
        span = epoch(rows[-1][0]) - epoch(rows[0][0])
        assert 0 < doc["totals"]["duration_s"] <= span + 1, doc["totals"]
        assert doc["totals"]["gap_s"] < 5


def _drive(cfg: Config, clock: OffsetClock) -> str:
    """One drive of the daemon on ``clock``, stopped cleanly once a file of it closed
    (its summary written); its trip id."""
    daemon = Daemon(cfg, clock)
    daemon.start()
    try:
        trip = wait_until(lambda: daemon.hub.trip, 30, "the car's trip")
        recorder = daemon.recorder
        assert recorder is not None
        wait_until(lambda: recorder.files_closed >= 1, 30, "a closed file")
    finally:
        daemon.stop()
    return trip


def test_the_report_of_the_latest_trip_is_the_drive_recorded_last_when_the_clock_went_back(
    car: str, s3_http: LocalS3, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A Pi without a real-time clock boots three days behind (fake-hwclock after power
    cuts) and its receiver never gets a fix: the drive it records now is named three days
    before the one it recorded yesterday on the right clock. `eccm report` (latest) must
    show the drive just made, from the folder and from the bucket, not the one whose id
    sorts last."""
    records = tmp_path / "records"
    values = s3server.config_values(
        records,
        s3_http,
        CAR_IDENTIFIER=CAR,
        OBD_INTERFACE=car,
        OBD_PROTOCOL="6",
        OBD_SLOW_COMMANDS="COOLANT_TEMP",
        FILE_ROTATION_SECONDS="1.5",
        S3_DELETE_AFTER_UPLOAD="no",
    )
    config = write_config(tmp_path / "config.ini", values)
    cfg = parse(values)
    first = _drive(cfg, OffsetClock(0.0))
    assert upload_backlog(cfg, progress=False) == 0
    second = _drive(cfg, OffsetClock(-3 * 86400.0))
    assert upload_backlog(cfg, progress=False) == 0
    assert second < first  # named before the drive it followed

    for where in (["--from", str(records)], ["--bucket", "--config", str(config)]):
        out = tmp_path / "report.html"
        assert main(["report", *where, "-o", str(out)]) == 0
        assert f"trip {second} of {CAR}" in capsys.readouterr().out, where
        assert second in out.read_text(encoding="utf-8")


def test_the_schema_takes_the_columns_of_the_drive_recorded_last_when_the_clock_went_back(
    car: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """As above, with a value added to the configuration between the drives: `eccm schema`
    took its columns from the trip whose id sorts last (yesterday's, without the value),
    so the table left out a column the car now logs."""
    records = tmp_path / "records"
    values = s3server.config_values(
        records,
        CAR_IDENTIFIER=CAR,
        OBD_INTERFACE=car,
        OBD_PROTOCOL="6",
        OBD_SLOW_COMMANDS="COOLANT_TEMP",
        FILE_ROTATION_SECONDS="1.5",
    )
    first = _drive(parse(values), OffsetClock(0.0))
    more = parse({**values, "OBD_SLOW_COMMANDS": "COOLANT_TEMP,INTAKE_TEMP"})
    second = _drive(more, OffsetClock(-3 * 86400.0))
    assert second < first  # named before the drive it followed
    where = ["--from", str(records), "--location", "s3://fleet/car-logs/"]
    assert main(["schema", "--engine", "duckdb", *where]) == 0
    assert "'INTAKE_TEMP': 'DOUBLE'" in capsys.readouterr().out


def test_the_logbook_start_and_end_hold_every_row_when_the_clock_stepped_back_mid_trip(
    car: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A clock that was ahead is set back 40 s mid-trip (less than the 60 s that end a
    trip): the trip's later rows are earlier than its first. The logbook's start and end
    must still hold every row of the trip (TIME_UTC BETWEEN start AND end), not end before
    they start."""
    records = tmp_path / "records"
    cfg = parse(
        s3server.config_values(
            records,
            CAR_IDENTIFIER=CAR,
            OBD_INTERFACE=car,
            OBD_PROTOCOL="6",
            OBD_SLOW_COMMANDS="COOLANT_TEMP",
            SAMPLE_INTERVAL="0.2",
        )
    )
    clock = OffsetClock(0.0)
    daemon = Daemon(cfg, clock)
    daemon.start()
    try:
        wait_until(lambda: daemon.hub.rows >= 10, 30, "rows before the step")
        clock.step(-40.0)
        rows_then = daemon.hub.rows
        wait_until(lambda: daemon.hub.rows >= rows_then + 10, 30, "rows after the step")
    finally:
        daemon.stop()
    times = []
    for path in records.glob("*.tsv.gz"):
        text = gzip.decompress(path.read_bytes()).decode()
        times += [r[0] for r in list(csv.reader(io.StringIO(text), delimiter="\t"))[1:]]
    assert len(times) >= 20
    assert main(["trips", "--from", str(records), "--format", "csv"]) == 0
    (line,) = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    start, end = (datetime.fromisoformat(line[k]).timestamp() for k in ("start", "end"))
    assert start <= end
    assert all(start <= epoch(t) <= end for t in times), (line, min(times), max(times))
