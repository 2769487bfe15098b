"""A real full disk (a small tmpfs) under a real recorder and trip summary writer.

The disk fills while rows keep coming at 5 rows/s of a fake clock, stays full for 76 s, then
gets room again. Recording must resume within a few seconds, every row lost must be
counted (in STATUS and in the sidecars), `last_error` must clear, and the log must say
what happened in a few lines with exact counts, not one line per retry.
"""

from __future__ import annotations

import contextlib
import csv
import errno
import gzip
import io
import itertools
import json
import logging
import os
import re
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from eccm.backend import DaemonBackend
from eccm.clock import FakeClock
from eccm.hub import Hub
from eccm.store.budget import MIB, DiskSettings, enforce
from eccm.store.recorder import Recorder
from eccm.trip.summary import SummaryWriter
from tests.recorder_writer import CAR, LAYOUT, T0, config, expected_row, sample
from tests.s3server import make_closed_file
from tests.waiting import wait_until

ROW_S = 0.2  # 5 rows per second, as the run
FULL_S = 76.0  # how long the disk stays full, as the run
RESUME_BOUND_S = 5.0  # "within a few seconds of space returning", of the fake clock
REPORT_EVERY_S = 60.0


@contextlib.contextmanager
def small_disk(where: Path, size: str = "2m") -> Iterator[Path]:
    """A tmpfs of ``size`` mounted at ``where`` (root only: CI runs as root)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    where.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs: {done.stderr.strip()}")
    try:
        yield where
    finally:
        if subprocess.run(["umount", str(where)], check=False).returncode != 0:
            subprocess.run(["umount", "-l", str(where)], check=False)


def fill(disk: Path) -> Path:
    """Take every free byte of ``disk`` with one file; returns it (remove it to free)."""
    filler = disk / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    try:
        for chunk in (1 << 16, 4096, 1):
            while True:
                try:
                    if os.write(fd, b"\0" * chunk) == 0:
                        break
                except OSError as exc:
                    if exc.errno != errno.ENOSPC:
                        raise
                    break
    finally:
        os.close(fd)
    probe = disk / "probe"
    with pytest.raises(OSError) as info, open(probe, "wb") as p:
        p.write(b"x" * 8192)
        p.flush()
        os.fsync(p.fileno())
    assert info.value.errno == errno.ENOSPC
    probe.unlink(missing_ok=True)
    return filler


class ClockedRecords(logging.Handler):
    """Log records with the fake clock's time when they were emitted."""

    def __init__(self, clock: FakeClock) -> None:
        super().__init__(logging.DEBUG)
        self.clock = clock
        self.records: list[tuple[float, logging.LogRecord]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append((self.clock.monotonic(), record))


@dataclass
class Run:
    sent: int = 0
    freed_at: int = 0  # index of the first row sent after space came back
    resumed_at: int | None = None  # index of the first row written after that
    error_while_full: str | None = None
    dropped_while_full: int = 0
    status_after: dict[str, object] = field(default_factory=dict)
    rows_written: int = 0
    rows_dropped: int = 0
    last_error: str | None = None
    rows_in_files: list[list[str]] = field(default_factory=list)
    sidecars: list[dict[str, object]] = field(default_factory=list)
    log: list[tuple[float, logging.LogRecord]] = field(default_factory=list)
    leftovers: list[str] = field(default_factory=list)


def processed(rec: Recorder) -> int:
    return rec.rows_written + rec.rows_dropped


def send(rec: Recorder, clock: FakeClock, i: int) -> None:
    """One row, handled by the writer before the clock moves on (as recorder_writer.py)."""
    rec.on_sample(sample(i))
    deadline = time.monotonic() + 30.0
    while processed(rec) < i + 1:
        assert time.monotonic() < deadline, f"row {i} neither written nor counted as dropped"
        time.sleep(0.0005)
    clock.advance(ROW_S)


def data_rows(path: Path) -> list[list[str]]:
    text = gzip.decompress(path.read_bytes()).decode()
    records = list(csv.reader(io.StringIO(text), delimiter="\t"))
    assert records[0] == LAYOUT.header
    return records[1:]


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    base = tmp_path_factory.mktemp("fulldisk")
    with small_disk(base / "disk") as disk:
        records = disk / "records"
        # Files rotate every 30 s, so closes fail too while the disk is full; the rows
        # reach the disk once a second (the default), so a full disk finds some in the
        # writer's buffer.
        cfg = config(records, FILE_ROTATION_SECONDS="30", FILE_FLUSH_INTERVAL="1.0")
        clock = FakeClock(start=T0)
        handler = ClockedRecords(clock)
        logger = logging.getLogger("eccm.store.recorder")
        old_level = logger.level
        logger.setLevel(logging.DEBUG)
        logger.addHandler(handler)
        rec = Recorder.from_config(cfg, clock)
        # Rows are handed over one at a time (send): a nap for more to gather would
        # cost a quarter of a second per row, minutes for the run.
        rec.row_batch = 0
        backend = DaemonBackend(
            disk=DiskSettings.from_config(cfg),
            hub=Hub(clock, 2.0, LAYOUT),
            link=None,
            recorder=rec,
            clock=clock,
        )
        out = Run()
        try:
            rec.start()
            i = 0
            for _ in range(200):  # 40 s of normal recording: one file closed
                send(rec, clock, i)
                i += 1
            filler = fill(disk)
            full_until = clock.monotonic() + FULL_S
            while clock.monotonic() < full_until:
                send(rec, clock, i)
                i += 1
            out.error_while_full = rec.last_error
            out.dropped_while_full = rec.rows_dropped
            filler.unlink()
            out.freed_at = i
            written = rec.rows_written
            for _ in range(int(120 / ROW_S)):
                send(rec, clock, i)
                i += 1
                if rec.rows_written > written:
                    out.resumed_at = i - 1
                    break
            for _ in range(10):
                send(rec, clock, i)
                i += 1
            out.status_after = dict(backend.status())
            out.sent = i
            rec.stop()
            out.rows_written = rec.rows_written
            out.rows_dropped = rec.rows_dropped
            out.last_error = rec.last_error
            for path in sorted(records.glob("*.tsv.gz")):
                out.rows_in_files.extend(data_rows(path))
                out.sidecars.append(json.loads(Path(f"{path}.json").read_text()))
            out.leftovers = sorted(
                n for n in os.listdir(records) if not re.search(r"\.tsv\.gz(\.json)?$", n)
            )
        finally:
            rec.stop()
            logger.removeHandler(handler)
            logger.setLevel(old_level)
        out.log = handler.records
        yield out


def test_recording_resumes_within_seconds_of_space_returning(run: Run) -> None:
    assert run.error_while_full is not None and "No space left" in run.error_while_full
    assert run.dropped_while_full > 0
    assert run.resumed_at is not None, "recording never resumed"
    waited = (run.resumed_at - run.freed_at) * ROW_S
    assert waited <= RESUME_BOUND_S, f"recording resumed {waited:.1f} s after space returned"


def test_every_dropped_row_is_counted_exactly(run: Run) -> None:
    index = {tuple(expected_row(i)): i for i in range(run.sent)}
    order = [index[tuple(r)] for r in run.rows_in_files]
    assert order == sorted(set(order)), "rows out of order or twice"
    assert run.rows_written == len(order)
    assert run.rows_dropped == run.sent - len(order)
    assert run.leftovers == [".eccm-sequence"]


def test_status_shows_rows_dropped_and_clears_last_error(run: Run) -> None:
    assert run.status_after["last_error"] is None
    assert run.status_after["rows_dropped"] == run.rows_dropped
    assert run.last_error is None


def test_sidecars_carry_the_rows_dropped_before_them(run: Run) -> None:
    counts = [doc.get("rows_dropped") for doc in run.sidecars]
    assert all(isinstance(n, int) for n in counts), counts
    assert sum(n for n in counts if isinstance(n, int)) == run.rows_dropped
    assert counts[0] == 0  # the first file was closed before the disk filled


def test_the_log_says_it_once_a_minute_with_exact_counts(run: Run) -> None:
    lines = [(t, r) for t, r in run.log if r.levelno >= logging.WARNING]
    errors = [(t, r) for t, r in lines if r.levelno >= logging.ERROR]
    assert errors, "nothing logged about the full disk"
    times = [t for t, _ in errors]
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert all(g >= REPORT_EVERY_S for g in gaps), [r.getMessage() for _, r in errors]
    counted = [
        int(m.group(1))
        for _, r in run.log
        if (m := re.search(r"(\d+) rows? dropped", r.getMessage())) is not None
    ]
    assert sum(counted) == run.rows_dropped, [r.getMessage() for _, r in run.log]
    back = [r.getMessage() for _, r in run.log if r.getMessage().startswith("recording works")]
    assert len(back) == 1, back
    assert re.search(r"\d+ rows? dropped", back[0]), back[0]


def test_the_summary_writer_logs_an_outage_once_and_its_end(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with small_disk(tmp_path / "disk", "256k") as disk:
        writer = SummaryWriter(disk, CAR)  # not started: writes in the caller's thread
        trip = "20231114T221320Z"
        doc: dict[str, object] = {"trip": trip, "distance_km": 1.0}
        filler = fill(disk)
        with caplog.at_level(logging.INFO, logger="eccm.trip.summary"):
            for minute in range(30):  # a checkpoint every 10 s for 5 minutes
                writer.checkpoint({**doc, "minutes": list(range(minute))})
            assert writer.last_error is not None and "No space left" in writer.last_error
            filler.unlink()
            writer.checkpoint(doc)
            assert writer.last_error is None
            writer.checkpoint(doc)
        msgs = [(r.levelno, r.getMessage()) for r in caplog.records]
        errors = [m for lvl, m in msgs if lvl >= logging.WARNING]
        assert len(errors) == 1, errors
        assert "No space left" in errors[0] and trip in errors[0]
        back = [m for lvl, m in msgs if "written again" in m]
        assert len(back) == 1, msgs
        assert (disk / f"{CAR}_{trip}_summary.json.part").exists()


def test_a_trip_ending_on_a_full_disk_gets_its_summary_once_there_is_room(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The end of a trip on a full disk: its summary is written once the disk has room
    (it used to be dropped, leaving at best a checkpoint a minute old, marked incomplete),
    by the next write that works or, with the car parked, by the writer's own retry."""
    with small_disk(tmp_path / "disk", "256k") as disk:
        ended = {"trip": "20231114T221320Z", "distance_km": 12.5, "complete": True}
        later = {"trip": "20231114T231320Z", "distance_km": 0.5}
        # Not started: writes in the caller's thread.
        writer = SummaryWriter(disk, CAR)
        filler = fill(disk)
        with caplog.at_level(logging.INFO, logger="eccm.trip.summary"):
            writer.finish(ended)
            assert writer.last_error is not None and "No space left" in writer.last_error
            filler.unlink()
            writer.checkpoint(later)  # the next trip's first checkpoint
        summary = disk / f"{CAR}_{ended['trip']}_summary.json"
        assert json.loads(summary.read_text()) == {**ended, "file": summary.name}
        assert writer.last_error is None and writer.written == 1
        errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
        assert len(errors) == 1 and "once the disk takes it again" in errors[0], errors

        # Started (the daemon's case), and no other write comes: the car is parked.
        parked = {"trip": "20231115T080000Z", "distance_km": 3.0, "complete": True}
        writer = SummaryWriter(disk, CAR)
        writer.start()
        try:
            filler = fill(disk)
            writer.finish(parked)
            wait_until(lambda: writer.last_error is not None, what="the failed write")
            filler.unlink()
            path = disk / f"{CAR}_{parked['trip']}_summary.json"
            wait_until(path.exists, timeout=30, what="the summary written by a retry")
        finally:
            writer.stop()
        assert json.loads(path.read_text())["distance_km"] == 3.0


def test_a_trip_ending_on_a_read_only_disk_is_not_said_to_wait_for_room(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Found: a summary refused by a read-only disk (a USB stick the kernel remounted
    read-only, an SD card after a power cut) was logged 'it is written once the disk has
    room', and at the stop 'could not be written before the stop (the disk is full)'."""
    with small_disk(tmp_path / "disk", "256k") as disk:
        writer = SummaryWriter(disk, CAR)
        writer.start()
        try:
            subprocess.run(["mount", "-o", "remount,ro", str(disk)], check=True)
            with caplog.at_level(logging.INFO, logger="eccm.trip.summary"):
                writer.finish({"trip": "20231114T221320Z", "complete": True})
                wait_until(lambda: writer.last_error is not None, what="the failed write")
        finally:
            writer.stop()
            subprocess.run(["mount", "-o", "remount,rw", str(disk)], check=True)
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(errors) == 2, errors
    assert all("Read-only file system" in e for e in errors), errors
    assert not any("room" in e or "full" in e for e in errors), errors
    assert errors[1].startswith("the summary of 1 ended trip(s) could not be written"), errors


def test_a_checkpoint_left_by_a_power_cut_on_a_full_disk_becomes_its_summary_once_there_is_room(
    tmp_path: Path,
) -> None:
    """A power cut mid-trip, and the next start finds the disk full: the checkpoint could
    not be turned into the trip's summary, and stayed a .part (never uploaded) until the
    start after that, even once the disk had room again."""
    with small_disk(tmp_path / "disk", "256k") as disk:
        trip = "20231114T221320Z"
        SummaryWriter(disk, CAR).write_checkpoint({"trip": trip, "distance_km": 4.0})
        part = disk / f"{CAR}_{trip}_summary.json.part"
        assert part.exists()
        filler = fill(disk)
        writer = SummaryWriter(disk, CAR)
        writer.start()  # recovers, and fails to
        try:
            final = disk / f"{CAR}_{trip}_summary.json"
            assert not final.exists()
            filler.unlink()
            wait_until(final.exists, timeout=30, what="the recovered summary")
        finally:
            writer.stop()
        doc = json.loads(final.read_text())
        assert doc["distance_km"] == 4.0 and doc["recovered"] is True
        assert doc["complete"] is False
        assert not part.exists()


def test_a_disk_filled_by_uploaded_files_is_given_room_before_the_budget_is_reached(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """S3_DELETE_AFTER_UPLOAD=no on a card smaller than MAX_LOCAL_STORAGE_MB (or shared
    with the system's logs): uploaded/ filled the disk, recording stopped, and copies that
    are safe in the bucket were kept because the budget was not reached. They go first
    when the disk runs short of room; files not yet uploaded are never deleted for it."""
    with small_disk(tmp_path / "disk", "8m") as disk:
        uploaded = [
            make_closed_file(
                disk / "uploaded", trip=f"20261122T0{h}0000Z", gz=False, payload=b"u" * 900_000
            )
            for h in range(1, 5)
        ]
        pending = make_closed_file(disk, trip="20261122T060000Z", gz=False, payload=b"p" * 900_000)
        filler = fill(disk)
        settings = DiskSettings(disk, 1024, 15, reserve_bytes=2 * MIB)
        with caplog.at_level(logging.INFO, logger="eccm.store.budget"):
            report = enforce(settings, FakeClock(start=T0))
            free = os.statvfs(disk).f_bavail * os.statvfs(disk).f_frsize
            assert free >= 2 * MIB
            # The oldest uploaded ones, as few as give the room: 3 x 0.9 MB for 2 MiB.
            assert report.evicted_uploaded == 3 and report.evicted_pending == []
            assert [p.exists() for p in uploaded] == [False, False, False, True]
            assert pending.exists() and pending.with_name(pending.name + ".json").exists()
            # On a small card this comes back at every run: not news each time.
            more = DiskSettings(disk, 1024, 15, reserve_bytes=8 * MIB)
            assert enforce(more, FakeClock(start=T0)).evicted_uploaded == 1
        said = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
        assert len(said) == 1 and "free" in said[0] and "MAX_LOCAL_STORAGE_MB" not in said[0]
        filler.unlink()
