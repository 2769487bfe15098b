"""A real writer process killed with SIGKILL, then recovery: nothing lost, nothing doubled."""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from eccm.clock import FakeClock
from eccm.store import sidecar
from eccm.store.recorder import LEDGER, Recorder
from tests.recorder_writer import CAR, LAYOUT, TRIP, config, expected_row

pytestmark = pytest.mark.slow

WRITER = Path(__file__).with_name("recorder_writer.py")
STEM = f"{CAR}_{TRIP}_0001"


def run_writer(d: Path, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, str(WRITER), str(d), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def files(d: Path) -> list[str]:
    return sorted(n for n in os.listdir(d) if n != LEDGER)


def check_closed(path: Path, sep: str = "\t") -> list[list[str]]:
    """Every line complete, the header first, the sidecar true to the file; the rows."""
    raw = path.read_bytes()
    data = gzip.decompress(raw) if path.name.endswith(".gz") else raw
    assert data.endswith(b"\n")
    lines = data.split(b"\n")[:-1]
    records = list(csv.reader(io.StringIO(data.decode()), delimiter=sep))
    assert len(records) == len(lines)
    assert records[0] == LAYOUT.header
    assert all(len(r) == len(LAYOUT.header) for r in records)
    doc = json.loads(path.with_name(path.name + ".json").read_text())
    assert doc["rows"] == len(lines) - 1
    assert doc["sha256"] == hashlib.sha256(raw).hexdigest()
    assert doc["size"] == len(raw)
    assert doc["first_time"] == records[1][0] and doc["last_time"] == records[-1][0]
    assert [c["name"] for c in doc["columns"]] == LAYOUT.header
    assert doc["columns"][3]["unit"] == "revolutions_per_minute"  # from the meta file
    return records[1:]


def wait_for_a_spill(proc: subprocess.Popen[str], part: Path) -> None:
    """Until the writer's buffer spilled 64 KiB into ``part`` (polled: the file's size
    is the only sign of it)."""
    deadline = time.monotonic() + 60
    while not (part.exists() and part.stat().st_size >= 64 * 1024):
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        assert time.monotonic() < deadline, "the writer wrote nothing"
        time.sleep(0.01)


def test_sigkill_mid_write_then_recovery_keeps_every_complete_row(tmp_path: Path) -> None:
    d = tmp_path / "rec"
    # No periodic flush: only the writer's buffer spills reach the file before the kill.
    proc = run_writer(d, "--flush", "3600")
    part = d / f"{STEM}.tsv.part"
    try:
        wait_for_a_spill(proc, part)
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL
    # Python's buffer spills whole rows, so a killed process leaves complete lines; a
    # power cut also loses part of the page cache, at any byte. Cut mid-line, as it would.
    size = part.stat().st_size
    with open(part, "r+b") as f:
        f.truncate(size - 17)
    on_disk = part.read_bytes()
    assert not on_disk.endswith(b"\n")
    complete = on_disk.count(b"\n") - 1

    rec = Recorder.from_config(config(d), FakeClock())
    closed = rec.recover()
    path = d / f"{STEM}.tsv.gz"
    assert closed == [path]
    assert files(d) == [path.name, path.name + ".json"]
    rows = check_closed(path)
    assert len(rows) == complete > 500
    assert rows == [expected_row(i) for i in range(len(rows))]
    assert gzip.decompress(path.read_bytes()) == on_disk[: on_disk.rindex(b"\n") + 1]
    doc = json.loads(path.with_name(path.name + ".json").read_text())
    assert doc["recovered"] is True and doc["vin"] == "VF1TEST0000000001"
    assert doc["time_source"] == "system"
    assert rec.recover() == []


GZIP_STEPS = list(sidecar.STEPS)
PLAIN_STEPS = [
    s
    for s in sidecar.STEPS
    if s not in (sidecar.GZIP_WRITTEN, sidecar.COMPRESSED, sidecar.PLAIN_REMOVED)
]


@pytest.mark.parametrize(
    ("compression", "step"),
    [("gzip", s) for s in GZIP_STEPS] + [("none", s) for s in PLAIN_STEPS],
)
def test_kill_inside_the_close_sequence_then_recovery_completes_it(
    tmp_path: Path, compression: str, step: str
) -> None:
    d = tmp_path / "rec"
    rows = 300
    proc = run_writer(d, "--rows", str(rows), "--compression", compression, "--die-at", step)
    try:
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL, err

    closed = Recorder.from_config(config(d, FILE_COMPRESSION=compression), FakeClock()).recover()
    name = f"{STEM}.tsv.gz" if compression == "gzip" else f"{STEM}.tsv"
    path = d / name
    # The close had finished except for dropping the meta file: nothing to announce.
    assert closed == ([] if step == sidecar.SIDECAR_WRITTEN else [path])
    assert files(d) == [name, name + ".json"]
    assert check_closed(path) == [expected_row(i) for i in range(rows)]
    doc = json.loads(path.with_name(path.name + ".json").read_text())
    assert doc["compression"] == compression
    assert doc["recovered"] is (step != sidecar.SIDECAR_WRITTEN)


def test_a_full_disk_drops_rows_but_every_closed_file_is_whole(tmp_path: Path) -> None:
    d = tmp_path / "rec"
    rows = 1500
    # RLIMIT_FSIZE: every write past 8 KiB fails with EFBIG, like a full disk.
    proc = run_writer(d, "--rows", str(rows), "--flush", "0", "--fsize", "8192")
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    status = json.loads(out)
    assert status["rows_dropped"] > 0
    assert status["last_error"] is None  # writing works again after each failure
    assert "File too large" in err  # logged (stderr: the script configures no logging)
    assert err.count("File too large") < 10  # not once per failed row
    assert status["files_closed"] >= 2
    data = [n for n in files(d) if n.endswith(".gz")]
    assert len(data) == status["files_closed"]
    assert all(n + ".json" in files(d) for n in data)
    seen: list[list[str]] = []
    for name in data:
        seen.extend(check_closed(d / name))
    # Rows in order, none twice, none invented.
    index = {tuple(expected_row(i)): i for i in range(rows)}
    order = [index[tuple(r)] for r in seen]
    assert order == sorted(set(order))
    # FILE_FLUSH_INTERVAL=0: a row is either synced to a file or counted as dropped.
    assert len(order) == status["rows_written"]
    assert len(order) + status["rows_dropped"] == rows
    assert status["rows_dropped"] < rows // 2


@pytest.mark.parametrize("meta", [True, False])
def test_a_file_left_open_is_recovered_after_the_extension_was_changed(
    tmp_path: Path, meta: bool
) -> None:
    """A power cut, then the user sets MONITORING_FILE_EXTENSION=.csv: the .tsv.part the
    cut left is still ECCM's, and is closed and uploaded like any other (it used to stay
    for good, never uploaded, while `eccm upload` said there was nothing to upload).
    Without its meta file (a power cut may take it) its rows are read with the separator
    of its own extension, not the new one."""
    d = tmp_path / "rec"
    proc = run_writer(d, "--ext", ".tsv", "--flush", "3600")
    part = d / f"{STEM}.tsv.part"
    try:
        wait_for_a_spill(proc, part)
    finally:
        proc.kill()
        proc.wait()
    if not meta:
        sidecar.meta_path(d / f"{STEM}.tsv").unlink()
    on_disk = part.read_bytes()

    rec = Recorder.from_config(config(d, MONITORING_FILE_EXTENSION=".csv"), FakeClock())
    closed = rec.recover()
    path = d / f"{STEM}.tsv.gz"
    assert closed == [path]
    assert files(d) == [path.name, path.name + ".json"]
    assert gzip.decompress(path.read_bytes()) == on_disk[: on_disk.rindex(b"\n") + 1]
    doc = json.loads(path.with_name(path.name + ".json").read_text())
    assert doc["separator"] == "\t" and doc["car"] == CAR and doc["trip"] == TRIP
    assert [c["name"] for c in doc["columns"]] == LAYOUT.header
    assert doc["rows"] == on_disk.count(b"\n") - 1 > 500
    if meta:
        assert check_closed(path) == [expected_row(i) for i in range(doc["rows"])]
    assert rec.recover() == []
