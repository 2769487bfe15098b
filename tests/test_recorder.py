"""The recorder with its writer thread, driven by synthetic samples and a fake clock."""

from __future__ import annotations

import csv
import dataclasses
import errno
import gzip
import hashlib
import io
import itertools
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pandas as pd  # type: ignore[import-untyped]
import pytest

from eccm.clock import FakeClock
from eccm.config import Config
from eccm.gnss.fix import Fix
from eccm.sample import Layout, Reading
from eccm.store import sidecar
from eccm.store.recorder import LEDGER, Recorder
from eccm.store.sidecar import PartMeta, columns_info
from tests.recorder_writer import CAR, LAYOUT, T0, TRIP, config, expected_row, sample

TRIP2 = "20231114T230000Z"


def wait_for(cond: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.005)


def cfg_for(tmp_path: Path, **kw: str) -> Config:
    kw.setdefault("FILE_FLUSH_INTERVAL", "0")
    return config(tmp_path / "rec", **kw)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(start=T0)


@pytest.fixture
def started() -> Iterator[Callable[..., Recorder]]:
    made: list[Recorder] = []

    def make(cfg: Config, clock: FakeClock, **kw: object) -> Recorder:
        rec = Recorder.from_config(cfg, clock, **kw)  # type: ignore[arg-type]
        rec.start()
        made.append(rec)
        return rec

    yield make
    for rec in made:
        rec.stop()


def files(d: Path) -> list[str]:
    return sorted(n for n in os.listdir(d) if n != LEDGER)


def read_data(path: Path) -> bytes:
    data = path.read_bytes()
    return gzip.decompress(data) if path.name.endswith(".gz") else data


def rows_of(path: Path, sep: str = "\t") -> list[list[str]]:
    return list(csv.reader(io.StringIO(read_data(path).decode()), delimiter=sep))


def sidecar_of(path: Path) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(path.with_name(path.name + ".json").read_text())
    return doc


def expected_bytes(indexes: range, sep: str = "\t", layout: Layout = LAYOUT) -> bytes:
    buf = io.StringIO()
    w = csv.writer(buf, delimiter=sep, lineterminator="\n")
    w.writerow(layout.header)
    for i in indexes:
        w.writerow(expected_row(i))
    return buf.getvalue().encode()


# -- files and sidecars ----------------------------------------------------------------
def test_rows_go_to_a_part_file_then_a_compressed_file_and_its_sidecar(
    tmp_path: Path, clock: FakeClock, started: Callable[..., Recorder]
) -> None:
    cfg = cfg_for(tmp_path)
    facts = {"VIN": "VF1TEST0000000001", "protocol": "ISO 15765-4 (CAN 11/500)"}
    rec = started(cfg, clock, facts=lambda: facts)
    for i in range(10):
        rec.on_sample(sample(i))
    wait_for(lambda: rec.rows_written == 10)
    stem = f"{CAR}_{TRIP}_0001.tsv"
    assert rec.current_file == stem + ".part"
    assert rec.rows_in_file == 10
    # FILE_FLUSH_INTERVAL=0: every row is on disk while the file is open.
    assert (cfg.record_dir / (stem + ".part")).read_bytes() == expected_bytes(range(10))
    assert (cfg.record_dir / (stem + ".part.meta.json")).exists()

    rec.stop()
    assert files(cfg.record_dir) == [stem + ".gz", stem + ".gz.json"]
    assert rec.current_file is None and rec.files_closed == 1
    data = cfg.record_dir / (stem + ".gz")
    assert gzip.decompress(data.read_bytes()) == expected_bytes(range(10))
    doc = sidecar_of(data)
    raw = data.read_bytes()
    assert doc == {
        "schema_version": 1,
        "car": CAR,
        "trip": TRIP,
        "file": stem + ".gz",
        "rows": 10,
        "rows_dropped": 0,
        "first_time": expected_row(0)[0],
        "last_time": expected_row(9)[0],
        "time_source": "system",
        "columns": [
            {"name": c, "unit": LAYOUT.describe(c)[0], "description": LAYOUT.describe(c)[1]}
            for c in LAYOUT.header
        ],
        "size": len(raw),
        "sha256": hashlib.sha256(raw).hexdigest(),
        "compression": "gzip",
        "separator": "\t",
        "vin": "VF1TEST0000000001",
        "protocol": "ISO 15765-4 (CAN 11/500)",
        "recovered": False,
        "eccm_version": doc["eccm_version"],
    }
    assert doc["first_time"] == "2023-11-14T22:13:20.000Z"
    assert [c["name"] for c in doc["columns"]] == rows_of(data)[0]


def test_gzip_output_decompresses_to_the_uncompressed_file(
    tmp_path: Path, clock: FakeClock, started: Callable[..., Recorder]
) -> None:
    plain_cfg = config(tmp_path / "plain", FILE_COMPRESSION="none")
    gz_cfg = config(tmp_path / "gz", FILE_COMPRESSION="gzip")
    recs = [started(plain_cfg, clock), started(gz_cfg, clock)]
    for rec in recs:
        for i in range(200):
            rec.on_sample(sample(i))
        rec.stop()
    plain = plain_cfg.record_dir / f"{CAR}_{TRIP}_0001.tsv"
    gz = gz_cfg.record_dir / f"{CAR}_{TRIP}_0001.tsv.gz"
    assert files(plain_cfg.record_dir) == [plain.name, plain.name + ".json"]
    assert gzip.decompress(gz.read_bytes()) == plain.read_bytes() == expected_bytes(range(200))
    for path in (plain, gz):
        doc = sidecar_of(path)
        assert doc["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
        assert doc["size"] == path.stat().st_size
        assert doc["rows"] == 200
    assert sidecar_of(plain)["compression"] == "none"


@pytest.mark.parametrize(
    ("ext", "sep"), [(".csv", ","), (".tsv", "\t"), (".dat", "|")], ids=["csv", "tsv", "pipe"]
)
def test_files_parse_with_csv_and_pandas(
    tmp_path: Path, clock: FakeClock, started: Callable[..., Recorder], ext: str, sep: str
) -> None:
    cfg = cfg_for(tmp_path, MONITORING_FILE_EXTENSION=ext)
    assert cfg.separator == sep
    rec = started(cfg, clock)
    for i in range(20):
        rec.on_sample(sample(i))
    # Text holding the separator, a quote and a newline (python-OBD's FUEL_STATUS is
    # "Closed loop, using oxygen sensor feedback to determine fuel mix"): one line, and
    # no quoting, which Athena's and Trino's TEXTFILE readers do not undo.
    odd = dataclasses.replace(
        sample(20),
        values={**sample(20).values, "FUEL_STATUS": Reading(f'a{sep}b "c"\nd', None, 0.0)},
    )
    rec.on_sample(odd)
    rec.stop()
    path = cfg.record_dir / f"{CAR}_{TRIP}_0001{ext}.gz"
    text = read_data(path).decode()
    assert "None" not in text and "nan" not in text
    assert text.count("\n") == 22
    # Split at every separator, as a Hive LazySimpleSerDe table does: every line has
    # the header's columns.
    assert [len(line.split(sep)) for line in text.splitlines()] == [len(LAYOUT.header)] * 22
    assert '"' not in text

    records = rows_of(path, sep)
    assert records[0] == LAYOUT.header
    assert records[1:21] == [expected_row(i) for i in range(20)]
    assert records[21][LAYOUT.header.index("FUEL_STATUS")] == "a;b 'c' d"

    df = pd.read_csv(path, sep=sep)
    assert list(df.columns) == LAYOUT.header
    assert len(df) == 21
    assert df["RPM"].dtype == "float64"
    assert df["SPEED"].dtype == "int64"
    assert df["COOLANT_TEMP"].dtype == "float64"  # integers with gaps
    assert df["COOLANT_TEMP"].isna().sum() == 4  # rows 4, 9, 14, 19
    assert df["FUEL_STATUS"].isna().sum() == sum(1 for i in range(20) if i % 3)
    assert df["RPM"].iloc[3] == 800.75
    assert df["TIME_UTC"].iloc[0] == "2023-11-14T22:13:20.000Z"


def test_time_source_mixed_and_gps_columns(
    tmp_path: Path, clock: FakeClock, started: Callable[..., Recorder]
) -> None:
    cfg = cfg_for(tmp_path)
    layout = dataclasses.replace(LAYOUT, gps=True)
    fix = Fix(T0, 48.85, 2.35, 35.0, 12.5, 90.0, 1, 9, 0.9, 0.0, T0)
    rec = started(cfg, clock)
    rec.on_sample(dataclasses.replace(sample(0), layout=layout, fix=fix))
    rec.on_sample(dataclasses.replace(sample(1), layout=layout, time_source="gnss"))
    rec.stop()
    path = cfg.record_dir / f"{CAR}_{TRIP}_0001.tsv.gz"
    assert sidecar_of(path)["time_source"] == "mixed"
    df = pd.read_csv(path, sep="\t")
    assert df["GPS_LATITUDE"].tolist()[0] == 48.85
    assert df["GPS_LATITUDE"].isna().tolist() == [False, True]


# -- rotation --------------------------------------------------------------------------
def test_rotation_by_time(
    tmp_path: Path, clock: FakeClock, started: Callable[..., Recorder]
) -> None:
    cfg = cfg_for(tmp_path, FILE_ROTATION_SECONDS="300")
    rec = started(cfg, clock)
    for i in range(3):
        rec.on_sample(sample(i))
    wait_for(lambda: rec.rows_written == 3)
    clock.advance(299.0)
    rec.on_sample(sample(3))
    wait_for(lambda: rec.rows_written == 4)
    assert rec.files_closed == 0
    clock.advance(1.0)
    rec.on_sample(sample(4))
    rec.on_sample(sample(5))
    rec.stop()
    first = cfg.record_dir / f"{CAR}_{TRIP}_0001.tsv.gz"
    second = cfg.record_dir / f"{CAR}_{TRIP}_0002.tsv.gz"
    assert read_data(first) == expected_bytes(range(4))
    assert read_data(second) == expected_bytes(range(4, 6))
    assert rec.files_closed == 2


def test_an_idle_file_is_closed_when_it_is_old_enough(
    tmp_path: Path, clock: FakeClock, started: Callable[..., Recorder]
) -> None:
    cfg = cfg_for(tmp_path, FILE_ROTATION_SECONDS="60")
    closed: list[Path] = []
    rec = Recorder.from_config(cfg, clock)
    rec.add_closed_listener(closed.append)
    rec.start()
    try:
        rec.on_sample(sample(0))
        wait_for(lambda: rec.rows_written == 1)
        clock.advance(60.0)
        wait_for(lambda: rec.files_closed == 1)
        assert closed == [cfg.record_dir / f"{CAR}_{TRIP}_0001.tsv.gz"]
        assert (cfg.record_dir / f"{CAR}_{TRIP}_0001.tsv.gz.json").exists()
    finally:
        rec.stop()


def test_rotation_by_size(
    tmp_path: Path, clock: FakeClock, started: Callable[..., Recorder]
) -> None:
    cfg = cfg_for(tmp_path, FILE_ROTATION_MAX_BYTES="1024", FILE_COMPRESSION="none")
    rec = started(cfg, clock)
    for i in range(100):
        rec.on_sample(sample(i))
    rec.stop()
    names = [n for n in files(cfg.record_dir) if not n.endswith(".json")]
    assert len(names) > 3
    assert names == [f"{CAR}_{TRIP}_{s:04d}.tsv" for s in range(1, len(names) + 1)]
    seen: list[list[str]] = []
    for name in names:
        path = cfg.record_dir / name
        assert path.stat().st_size <= 1024
        records = rows_of(path)
        assert records[0] == LAYOUT.header
        assert sidecar_of(path)["rows"] == len(records) - 1
        seen.extend(records[1:])
    assert seen == [expected_row(i) for i in range(100)]
    assert rec.files_closed == len(names)


def test_rotation_on_trip_end_and_trip_change(
    tmp_path: Path, clock: FakeClock, started: Callable[..., Recorder]
) -> None:
    cfg = cfg_for(tmp_path)
    rec = started(cfg, clock)
    for i in range(3):
        rec.on_sample(sample(i))
    rec.on_trip_end("20200101T000000Z")  # not the open file's trip: ignored
    rec.on_trip_end(TRIP)
    wait_for(lambda: rec.files_closed == 1)
    assert rec.current_file is None
    for i in range(3, 5):
        rec.on_sample(dataclasses.replace(sample(i), trip_id=TRIP2))
    wait_for(lambda: rec.rows_written == 5)
    rec.on_sample(dataclasses.replace(sample(5), trip_id=TRIP))  # a change closes too
    rec.stop()
    assert files(cfg.record_dir) == [
        f"{CAR}_{TRIP}_0001.tsv.gz",
        f"{CAR}_{TRIP}_0001.tsv.gz.json",
        f"{CAR}_{TRIP}_0002.tsv.gz",
        f"{CAR}_{TRIP}_0002.tsv.gz.json",
        f"{CAR}_{TRIP2}_0001.tsv.gz",
        f"{CAR}_{TRIP2}_0001.tsv.gz.json",
    ]
    assert sidecar_of(cfg.record_dir / f"{CAR}_{TRIP2}_0001.tsv.gz")["rows"] == 2
    assert sidecar_of(cfg.record_dir / f"{CAR}_{TRIP2}_0001.tsv.gz")["trip"] == TRIP2
    assert rec.files_closed == 3


def test_rotation_on_layout_change(
    tmp_path: Path, clock: FakeClock, started: Callable[..., Recorder]
) -> None:
    cfg = cfg_for(tmp_path)
    narrow = Layout(fast=("RPM",), slow=(), gps=False)
    rec = started(cfg, clock)
    rec.on_sample(dataclasses.replace(sample(0), layout=narrow))
    rec.on_sample(dataclasses.replace(sample(1), layout=narrow))
    rec.on_sample(sample(2))
    rec.stop()
    one = rows_of(cfg.record_dir / f"{CAR}_{TRIP}_0001.tsv.gz")
    two = rows_of(cfg.record_dir / f"{CAR}_{TRIP}_0002.tsv.gz")
    assert one[0] == ["TIME_UTC", "CAR_ID", "TRIP_ID", "RPM"] and len(one) == 3
    assert two == [LAYOUT.header, expected_row(2)]


def test_rotate_now_returns_once_the_file_is_closed(
    tmp_path: Path, clock: FakeClock, started: Callable[..., Recorder]
) -> None:
    cfg = cfg_for(tmp_path)
    rec = started(cfg, clock)
    rec.rotate_now()  # nothing open: nothing happens
    assert rec.files_closed == 0
    rec.on_sample(sample(0))
    rec.on_sample(sample(1))
    rec.rotate_now()
    assert rec.files_closed == 1
    assert rec.current_file is None
    assert (cfg.record_dir / f"{CAR}_{TRIP}_0001.tsv.gz.json").exists()
    rec.on_sample(sample(2))
    wait_for(lambda: rec.current_file == f"{CAR}_{TRIP}_0002.tsv.part")


def test_flush_waits_for_the_interval_after_a_files_first_row(
    tmp_path: Path, clock: FakeClock, started: Callable[..., Recorder]
) -> None:
    cfg = cfg_for(tmp_path, FILE_FLUSH_INTERVAL="5")
    rec = started(cfg, clock)
    rec.on_sample(sample(0))
    part = cfg.record_dir / f"{CAR}_{TRIP}_0001.tsv.part"
    # The first row is synced at once: a start (a drive) does not wait for the interval
    # (the fake clock stands still). Awaited: rows_written counts the row just before
    # the writer syncs it.
    wait_for(lambda: part.exists() and part.read_bytes() == expected_bytes(range(1)))
    assert rec.rows_written == 1
    clock.advance(1.0)
    rec.on_sample(sample(1))
    wait_for(lambda: rec.rows_written == 2)
    assert part.read_bytes() == expected_bytes(range(1))  # still in the writer's buffer
    clock.advance(5.0)
    wait_for(lambda: part.stat().st_size > len(expected_bytes(range(1))))  # the idle sync
    assert part.read_bytes() == expected_bytes(range(2))


# -- names never reused ----------------------------------------------------------------
def test_sequence_continues_after_files_in_uploaded_and_deleted_ones(
    tmp_path: Path, clock: FakeClock, started: Callable[..., Recorder]
) -> None:
    cfg = cfg_for(tmp_path)
    (cfg.record_dir / "uploaded").mkdir(parents=True)
    (cfg.record_dir / "uploaded" / f"{CAR}_{TRIP}_0004.tsv.gz").write_bytes(b"x")
    rec = started(cfg, clock)
    rec.on_sample(sample(0))
    rec.stop()
    first = f"{CAR}_{TRIP}_0005.tsv.gz"
    assert (cfg.record_dir / first).exists()
    # Uploaded and deleted, then a reboot with the same clock repeats the trip id.
    for name in files(cfg.record_dir):
        if name != "uploaded":
            (cfg.record_dir / name).unlink()
    (cfg.record_dir / "uploaded" / f"{CAR}_{TRIP}_0004.tsv.gz").unlink()
    rec2 = started(cfg, clock)
    rec2.on_sample(sample(0))
    rec2.stop()
    assert files(cfg.record_dir) == [
        f"{CAR}_{TRIP}_0006.tsv.gz",
        f"{CAR}_{TRIP}_0006.tsv.gz.json",
        "uploaded",
    ]


def test_a_record_folder_swapped_while_running_never_reuses_a_file_name(
    tmp_path: Path, clock: FakeClock, started: Callable[..., Recorder]
) -> None:
    # A USB stick pulled and another (empty) one plugged in mid-trip: the ledger file went
    # with the first stick, yet 0001 is in the bucket already and must not be named again.
    cfg = cfg_for(tmp_path)
    rec = started(cfg, clock)
    rec.on_sample(sample(0))
    rec.rotate_now()
    first = cfg.record_dir / f"{CAR}_{TRIP}_0001.tsv.gz"
    assert first.exists()
    cfg.record_dir.rename(tmp_path / "first-stick")
    cfg.record_dir.mkdir()
    rec.on_sample(sample(1))
    rec.stop()
    assert files(cfg.record_dir) == [
        f"{CAR}_{TRIP}_0002.tsv.gz",
        f"{CAR}_{TRIP}_0002.tsv.gz.json",
    ]
    assert read_data(cfg.record_dir / f"{CAR}_{TRIP}_0002.tsv.gz") == expected_bytes(range(1, 2))


@pytest.mark.parametrize("another", [True, False], ids=["swapped", "pulled"])
def test_an_open_file_whose_folder_was_swapped_is_said_to_be_gone_not_closed(
    tmp_path: Path,
    clock: FakeClock,
    started: Callable[..., Recorder],
    caplog: pytest.LogCaptureFixture,
    another: bool,
) -> None:
    # The USB stick pulled and another plugged in while a file was open: the close fails
    # (its .part is on the first stick). The log said "the files left by the failure are
    # closed", while they were nowhere near this folder.
    cfg = cfg_for(tmp_path)
    rec = started(cfg, clock)
    rec.on_sample(sample(0))
    wait_for(lambda: rec.rows_written == 1)
    cfg.record_dir.rename(tmp_path / "first-stick")
    if another:
        cfg.record_dir.mkdir()  # else the folder is made again by the next file
    with caplog.at_level(logging.INFO, logger="eccm.store.recorder"):
        rec.rotate_now()
        clock.advance(5.0)  # past the retry
        rec.on_sample(sample(1))
        wait_for(lambda: rec.current_file == f"{CAR}_{TRIP}_0002.tsv.part")
    said = [r.getMessage() for r in caplog.records]
    assert not any("left by the failure are closed" in m for m in said), said
    (gone,) = [m for m in said if "left RECORD_DIRECTORY_LOCATION" in m]
    assert gone.startswith(f"{CAR}_{TRIP}_0001.tsv left RECORD_DIRECTORY_LOCATION before"), gone
    assert (tmp_path / "first-stick" / f"{CAR}_{TRIP}_0001.tsv.part").exists()


# -- lifecycle and errors --------------------------------------------------------------
def test_stop_is_idempotent_and_later_samples_are_ignored(tmp_path: Path, clock: FakeClock) -> None:
    cfg = cfg_for(tmp_path)
    Recorder.from_config(cfg, clock).stop()  # never started
    rec = Recorder.from_config(cfg, clock)
    rec.start()
    rec.on_sample(sample(0))
    rec.stop()
    rec.stop()
    rec.on_sample(sample(1))
    rec.on_trip_end(TRIP)
    rec.rotate_now()
    assert rec.rows_written == 1 and rec.queued == 0
    assert len(files(cfg.record_dir)) == 2


def test_file_recording_off_writes_nothing(tmp_path: Path, clock: FakeClock) -> None:
    rec = Recorder.from_config(cfg_for(tmp_path, FILE_RECORDING="no"), clock)
    rec.on_sample(sample(0))
    assert rec.queued == 0


def test_a_full_queue_drops_rows_and_says_so_once(
    tmp_path: Path, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    rec = Recorder.from_config(cfg_for(tmp_path), clock, queue_size=5)  # not started: nobody drains
    with caplog.at_level(logging.ERROR, logger="eccm.store.recorder"):
        for i in range(12):
            rec.on_sample(sample(i))
    assert rec.queued == 5
    assert rec.rows_dropped == 7
    assert len([r for r in caplog.records if "queue full" in r.message]) == 1


def test_a_failing_listener_does_not_stop_the_writer(
    tmp_path: Path, clock: FakeClock, started: Callable[..., Recorder]
) -> None:
    cfg = cfg_for(tmp_path)
    rec = started(cfg, clock)
    seen: list[str] = []

    def bad(path: Path) -> None:
        seen.append(path.name)
        raise RuntimeError("listener bug")

    rec.add_closed_listener(bad)
    rec.on_sample(sample(0))
    rec.rotate_now()
    rec.on_sample(sample(1))
    rec.stop()
    assert rec.files_closed == 2 and len(seen) == 2
    assert rec.last_error is None


def test_an_unusable_directory_drops_rows_logs_once_and_recovers(
    tmp_path: Path, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    blocker = tmp_path / "blocker"
    blocker.write_text("a file where the record directory should be")
    cfg = config(blocker / "rec", FILE_FLUSH_INTERVAL="0")
    rec = Recorder.from_config(cfg, clock)
    with caplog.at_level(logging.ERROR, logger="eccm.store.recorder"):
        rec.start()  # recovery fails too, without raising
        try:
            for i in range(3):
                rec.on_sample(sample(i))
            wait_for(lambda: rec.rows_dropped == 3)
            clock.advance(2.0)  # past the first retry: it fails again
            for i in range(3, 6):
                rec.on_sample(sample(i))
            wait_for(lambda: rec.rows_dropped == 6)
            assert rec.last_error is not None and "rec" in rec.last_error
            errors = [r for r in caplog.records if r.levelno == logging.ERROR]
            assert len(errors) <= 2  # the failed recovery and the first write, not per row

            blocker.unlink()
            clock.advance(120.0)
            for i in range(6, 8):
                rec.on_sample(sample(i))
            wait_for(lambda: rec.rows_written == 2)
            assert rec.last_error is None
        finally:
            rec.stop()
    path = cfg.record_dir / f"{CAR}_{TRIP}_0001.tsv.gz"
    assert read_data(path) == expected_bytes(range(6, 8))


# -- recovery (in process; the SIGKILL tests are in test_recorder_crash.py) ---------------
def write_part(d: Path, stem: str, body: bytes, meta: bool = True) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    part = d / (stem + ".part")
    part.write_bytes(body)
    if meta:
        m = PartMeta(
            columns=columns_info((c, *LAYOUT.describe(c)) for c in LAYOUT.header),
            separator="\t",
            facts={"vin": "VF1TEST0000000001"},
            time_sources=["gnss"],
        )
        (d / (stem + ".part.meta.json")).write_bytes(m.to_json())
    return part


STEM = f"{CAR}_{TRIP}_0001.tsv"


def test_recover_cuts_a_partial_last_line_and_closes_the_file(
    tmp_path: Path, clock: FakeClock
) -> None:
    cfg = cfg_for(tmp_path)
    full = expected_bytes(range(6))
    write_part(cfg.record_dir, STEM, full + b"2023-11-14T22:13:21.200Z\tcrash-c")
    rec = Recorder.from_config(cfg, clock)
    closed: list[Path] = []
    rec.add_closed_listener(closed.append)
    path = cfg.record_dir / (STEM + ".gz")
    assert rec.recover() == [path]
    assert closed == [path]
    assert files(cfg.record_dir) == [STEM + ".gz", STEM + ".gz.json"]
    assert read_data(path) == full
    doc = sidecar_of(path)
    assert doc["recovered"] is True
    assert doc["rows"] == 6
    assert doc["last_time"] == expected_row(5)[0]
    assert doc["time_source"] == "gnss"
    assert doc["vin"] == "VF1TEST0000000001"
    assert doc["columns"][3] == {
        "name": "RPM",
        "unit": "revolutions_per_minute",
        "description": "Engine RPM",
    }
    assert rec.recover() == []  # nothing left to do


def test_recover_drops_a_tail_of_zeros_left_by_a_power_cut(
    tmp_path: Path, clock: FakeClock
) -> None:
    cfg = cfg_for(tmp_path, FILE_COMPRESSION="none")
    full = expected_bytes(range(3))
    write_part(cfg.record_dir, STEM, full + b"2023-11-14T22:1" + b"\0" * 4096 + b"\n")
    assert Recorder.from_config(cfg, clock).recover() == [cfg.record_dir / STEM]
    assert (cfg.record_dir / STEM).read_bytes() == full
    assert sidecar_of(cfg.record_dir / STEM)["rows"] == 3


@pytest.mark.parametrize(
    "body",
    [b"", b"TIME_UTC\tCAR_ID\tTRI", expected_bytes(range(0)), expected_bytes(range(0)) + b"2023"],
    ids=["empty", "partial-header", "header-only", "header-and-partial-row"],
)
def test_recover_removes_a_part_without_a_complete_row(
    tmp_path: Path, clock: FakeClock, body: bytes
) -> None:
    cfg = cfg_for(tmp_path)
    write_part(cfg.record_dir, STEM, body)
    assert Recorder.from_config(cfg, clock).recover() == []
    assert files(cfg.record_dir) == []


def test_recover_without_meta_still_names_the_columns(tmp_path: Path, clock: FakeClock) -> None:
    cfg = cfg_for(tmp_path)
    write_part(cfg.record_dir, STEM, expected_bytes(range(2)), meta=False)
    [path] = Recorder.from_config(cfg, clock).recover()
    doc = sidecar_of(path)
    assert [c["name"] for c in doc["columns"]] == LAYOUT.header
    assert doc["time_source"] == "unknown"
    assert "vin" not in doc


def test_recover_finishes_interrupted_closes_and_leaves_other_files_alone(
    tmp_path: Path, clock: FakeClock
) -> None:
    cfg = cfg_for(tmp_path)
    d = cfg.record_dir
    d.mkdir(parents=True)
    body = expected_bytes(range(4))
    # a: renamed, not compressed.  b: compressed, plain not yet removed.
    # c: compressed, no sidecar, temp sidecar left.  d: closed; only its meta remains.
    a, b, c, e = (f"{CAR}_{TRIP}_{s:04d}.tsv" for s in (1, 2, 3, 4))
    (d / a).write_bytes(body)
    (d / b).write_bytes(body)
    (d / (b + ".gz")).write_bytes(gzip.compress(body))
    (d / (b + ".gz.tmp")).write_bytes(b"half a gzip")
    (d / (c + ".gz")).write_bytes(gzip.compress(body))
    (d / (c + ".gz.json.tmp")).write_bytes(b"{")
    (d / (e + ".gz")).write_bytes(gzip.compress(body))
    (d / (e + ".gz.json")).write_text('{"rows": 4}')
    (d / (e + ".part.meta.json")).write_text("{}")
    # A {CAR}_{TRIP}_{SEQ}.csv.part is ECCM's under another extension, closed like the
    # others (test_recorder_crash.py); these names are not ECCM's.
    foreign = ["notes.tsv", "other.csv.part", f"{CAR}_{TRIP}_0001.csv.part.bak"]
    for name in foreign:
        (d / name).write_bytes(b"not ours\n")

    closed = Recorder.from_config(cfg, clock).recover()
    assert sorted(p.name for p in closed) == [a + ".gz", b + ".gz", c + ".gz"]
    assert files(d) == sorted(
        [*foreign, *(n + ".gz" for n in (a, b, c, e)), *(n + ".gz.json" for n in (a, b, c, e))]
    )
    for name in (a, b, c):
        path = d / (name + ".gz")
        assert read_data(path) == body
        doc = sidecar_of(path)
        assert doc["rows"] == 4 and doc["recovered"] is True
        assert doc["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert (d / (e + ".gz.json")).read_text() == '{"rows": 4}'  # untouched


def test_recover_keeps_a_corrupt_gzip_out_of_the_upload(tmp_path: Path, clock: FakeClock) -> None:
    cfg = cfg_for(tmp_path)
    cfg.record_dir.mkdir(parents=True)
    (cfg.record_dir / (STEM + ".gz")).write_bytes(b"\x1f\x8b garbage")
    assert Recorder.from_config(cfg, clock).recover() == []
    assert files(cfg.record_dir) == [STEM + ".gz.corrupt"]


def test_recover_refuses_to_run_beside_the_writer(
    tmp_path: Path, clock: FakeClock, started: Callable[..., Recorder]
) -> None:
    rec = started(cfg_for(tmp_path), clock)
    with pytest.raises(RuntimeError):
        rec.recover()


def test_start_recovers_leftovers_before_writing(
    tmp_path: Path, clock: FakeClock, started: Callable[..., Recorder]
) -> None:
    cfg = cfg_for(tmp_path)
    write_part(cfg.record_dir, STEM, expected_bytes(range(2)))
    rec = started(cfg, clock)
    assert (cfg.record_dir / (STEM + ".gz.json")).exists()
    rec.on_sample(sample(2))
    rec.stop()
    assert sidecar_of(cfg.record_dir / f"{CAR}_{TRIP}_0002.tsv.gz")["recovered"] is False


def test_on_sample_never_waits_for_the_writer(
    tmp_path: Path, clock: FakeClock, started: Callable[..., Recorder]
) -> None:
    # A listener that blocks the writer thread: on_sample must still return at once.
    cfg = cfg_for(tmp_path)
    gate = threading.Event()
    rec = started(cfg, clock)

    def blocked(_path: Path) -> None:
        gate.wait(30)

    rec.add_closed_listener(blocked)
    rec.on_sample(sample(0))
    rec.on_trip_end(TRIP)
    wait_for(lambda: rec.files_closed == 1)  # the writer is now stuck in the listener
    for i in range(1, 50):
        rec.on_sample(sample(i))
    assert rec.queued == 49
    gate.set()
    wait_for(lambda: rec.rows_written == 50)


def test_a_close_that_fails_half_way_is_finished_later(
    tmp_path: Path, clock: FakeClock, started: Callable[..., Recorder]
) -> None:
    cfg = cfg_for(tmp_path)
    failures = [sidecar.COMPRESSED]

    def disk_full_once(step: str) -> None:
        if step in failures:
            failures.remove(step)
            raise OSError(errno.ENOSPC, "No space left on device")

    rec = started(cfg, clock, step_hook=disk_full_once)
    for i in range(3):
        rec.on_sample(sample(i))
    rec.rotate_now()
    assert rec.files_closed == 0
    assert rec.last_error is not None and "No space left" in rec.last_error
    assert files(cfg.record_dir) == [STEM, STEM + ".gz", STEM + ".part.meta.json"]

    clock.advance(5.0)  # past the retry time: the idle writer finishes the close
    wait_for(lambda: rec.files_closed == 1)
    assert rec.last_error is None
    assert files(cfg.record_dir) == [STEM + ".gz", STEM + ".gz.json"]
    assert read_data(cfg.record_dir / (STEM + ".gz")) == expected_bytes(range(3))
    rec.on_sample(sample(3))
    rec.stop()
    assert sidecar_of(cfg.record_dir / f"{CAR}_{TRIP}_0002.tsv.gz")["rows"] == 1


def test_a_file_the_start_cannot_recover_on_a_full_disk_is_closed_once_the_disk_has_room(
    tmp_path: Path, clock: FakeClock, started: Callable[..., Recorder]
) -> None:
    """A power cut while the disk was full left a file without its sidecar; the next start
    still finds no room for it. It must be closed (and so uploaded) once the disk has
    room again, without a restart, and rows are not written past it meanwhile."""
    cfg = cfg_for(tmp_path)
    full = threading.Event()
    full.set()

    def disk(step: str) -> None:
        if full.is_set():
            raise OSError(errno.ENOSPC, "No space left on device")

    # As the cut left it: the data renamed from .part, no sidecar (no room for one).
    write_part(cfg.record_dir, STEM, expected_bytes(range(3)))
    os.replace(cfg.record_dir / (STEM + ".part"), cfg.record_dir / STEM)

    rec = started(cfg, clock, step_hook=disk)
    assert rec.files_closed == 0
    assert rec.last_error is not None and "No space left" in rec.last_error
    rec.on_sample(sample(3))  # the disk is full: dropped, not written past the stuck file
    wait_for(lambda: rec.rows_dropped == 1)

    full.clear()  # room again (the uploader freed some, or the user did)
    clock.advance(60.0)  # past the retry time: the idle writer closes it
    wait_for(lambda: rec.files_closed == 1)
    assert rec.last_error is None
    assert read_data(cfg.record_dir / (STEM + ".gz")) == expected_bytes(range(3))
    assert sidecar_of(cfg.record_dir / (STEM + ".gz"))["rows"] == 3


@pytest.mark.parametrize(
    ("code", "words"),
    [(errno.EROFS, "read-only"), (errno.EACCES, "right to write"), (errno.ENOSPC, "disk is full")],
)
def test_disk_errors_say_what_to_do(code: int, words: str) -> None:
    from eccm.store.recorder import _advice

    assert words in _advice(OSError(code, os.strerror(code)))
    assert _advice(OSError(errno.EIO, "I/O error")) == ""


def test_while_the_disk_refuses_retries_are_seconds_apart_and_every_row_is_counted(
    tmp_path: Path, clock: FakeClock, started: Callable[..., Recorder]
) -> None:
    """Regression (issue 10): the retry backoff grew to 60 s, so recording resumed up to
    a minute after the disk had room again; the rows lost were under-counted."""
    cfg = cfg_for(tmp_path, FILE_ROTATION_SECONDS="10")
    full = threading.Event()
    attempts: list[float] = []

    def disk(step: str) -> None:
        if step == sidecar.SIDECAR_TMP and full.is_set():
            attempts.append(clock.monotonic())
            raise OSError(errno.ENOSPC, "No space left on device")

    rec = started(cfg, clock, step_hook=disk)

    def send(i: int) -> None:
        rec.on_sample(sample(i))
        wait_for(lambda: rec.rows_written + rec.rows_dropped == i + 1)
        clock.advance(0.2)

    for i in range(40):
        send(i)
    full.set()  # the close of the first file at 10 s fails, and its retries
    i = 40
    for i in range(40, 40 + 380):  # 76 s
        send(i)
    assert rec.last_error is not None and "No space left" in rec.last_error
    assert len(attempts) > 30
    gaps = [b - a for a, b in itertools.pairwise(attempts)]
    assert max(gaps) <= 2.0 + 0.2, gaps
    full.clear()
    freed, written = i + 1, rec.rows_written
    for i in range(freed, freed + 100):
        send(i)
        if rec.rows_written > written:
            break
    assert (i - freed) * 0.2 <= 2.5, "recording did not resume within seconds"
    assert rec.last_error is None
    rec.stop()
    stored = sum(sidecar_of(p)["rows"] for p in cfg.record_dir.glob("*.tsv.gz"))
    assert stored == rec.rows_written
    assert rec.rows_dropped == i + 1 - stored
    assert sum(sidecar_of(p)["rows_dropped"] for p in cfg.record_dir.glob("*.tsv.gz")) == (
        rec.rows_dropped
    )
