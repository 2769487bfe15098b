"""The recorder's parts without its thread: the one-file writer, the rotating writer that
decides and does the rollover, recovery of leftovers and the retry schedule, on a fake
clock (no threads, no sleeps)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from eccm.clock import FakeClock
from eccm.config import Config, parse
from eccm.sample import Layout, Reading, Sample, trip_id_for
from eccm.store.drops import WRITE, DropCounter
from eccm.store.ledger import LEDGER, Ledger
from eccm.store.recorder import DiskTrouble, RotatingWriter
from eccm.store.recovery import Leftovers, Recovery, leftover_stems
from eccm.store.rotation import Reason
from eccm.store.settings import RecordSettings
from eccm.store.writer import FileWriter, Sealer

T0 = 1_700_000_000.0
CAR = "car"
LAYOUT = Layout(
    fast=("RPM",),
    slow=(),
    gps=False,
    info={"RPM": ("revolutions_per_minute", "Engine RPM")},
)


def row(i: int, trip: str = trip_id_for(T0)) -> Sample:
    return Sample(
        time=T0 + i,
        trip_id=trip,
        values={"RPM": Reading(800.0 + i, "revolutions_per_minute", 0.0)},
        fix=None,
        layout=LAYOUT,
        time_source="system",
    )


def cfg(directory: Path, **overrides: str) -> Config:
    raw = {
        "CAR_IDENTIFIER": CAR,
        "RECORD_DIRECTORY_LOCATION": str(directory),
        "FILE_ROTATION_SECONDS": "60",
        "FILE_FLUSH_INTERVAL": "3600",
        "FILE_COMPRESSION": "none",
    }
    raw.update(overrides)
    return parse(raw)


class Parts:
    """A RotatingWriter wired as the Recorder wires it, without the thread."""

    def __init__(self, config: Config, clock: FakeClock, steps: list[str] | None = None) -> None:
        d, ext = config.record_dir, config.monitoring_file_extension
        self.closed: list[Path] = []
        self.drops = DropCounter(60.0)
        self.trouble = DiskTrouble(clock, self.drops, 10, lambda: True)
        ledger = Ledger(d, 512, 20_000)
        hook = steps.append if steps is not None else (lambda step: None)
        sealer = Sealer(
            car=CAR,
            ext=ext,
            compression=config.file_compression,
            hook=hook,
            rows_dropped=lambda: self.drops.total,
        )
        self.recovery = Recovery(
            car=CAR, ext=ext, separator=config.separator, ledger=ledger, sealer=sealer
        )
        writer = FileWriter(
            directory=d,
            car=CAR,
            ext=ext,
            separator=config.separator,
            facts=lambda: {"vin": "VIN1"},
            hook=hook,
            ledger=ledger,
            sealer=sealer,
        )
        self.files = RotatingWriter(
            RecordSettings.from_config(config),
            clock,
            writer=writer,
            recovery=self.recovery,
            drops=self.drops,
            trouble=self.trouble,
            notify=self.closed.append,
        )


def sidecar_of(path: Path) -> dict[str, object]:
    doc = json.loads(path.with_name(path.name + ".json").read_text())
    assert isinstance(doc, dict)
    return doc


def test_a_file_rolls_over_by_age_on_the_fake_clock(tmp_path: Path) -> None:
    clock = FakeClock(start=T0)
    parts = Parts(cfg(tmp_path), clock)
    files = parts.files
    for i in range(3):
        files.write(row(i))
        clock.advance(10.0)
    assert files.current_file == f"car_{trip_id_for(T0)}_0001.tsv.part"
    assert files.rows_in_file == 3
    files.idle()  # 30 s old: kept
    assert parts.closed == []
    clock.advance(30.0)
    files.idle()  # 60 s old: closed without another row
    assert [p.name for p in parts.closed] == [f"car_{trip_id_for(T0)}_0001.tsv"]
    assert files.current_file is None and files.files_closed == 1 and files.rows_written == 3
    doc = sidecar_of(parts.closed[0])
    assert doc["rows"] == 3 and doc["rows_dropped"] == 0 and doc["recovered"] is False
    assert (tmp_path / LEDGER).read_text().splitlines() == [parts.closed[0].name]


def test_a_new_trip_rolls_over_before_its_first_row(tmp_path: Path) -> None:
    clock = FakeClock(start=T0)
    parts = Parts(cfg(tmp_path), clock)
    other = trip_id_for(T0 + 3600)
    parts.files.write(row(0))
    parts.files.write(row(1, other))
    assert [p.name for p in parts.closed] == [f"car_{trip_id_for(T0)}_0001.tsv"]
    assert parts.files.current_file == f"car_{other}_0001.tsv.part"
    parts.files.trip_end(trip_id_for(T0))  # not the open trip: nothing happens
    assert parts.files.current_file is not None
    parts.files.trip_end(other)
    assert parts.files.current_file is None and len(parts.closed) == 2


def test_the_close_runs_every_step_in_order(tmp_path: Path) -> None:
    steps: list[str] = []
    clock = FakeClock(start=T0)
    parts = Parts(cfg(tmp_path, FILE_COMPRESSION="gzip"), clock, steps)
    parts.files.write(row(0))
    parts.files.close(Reason.REQUESTED)
    assert steps == [
        "synced",
        "renamed",
        "gzip_written",
        "compressed",
        "plain_removed",
        "sidecar_tmp",
        "sidecar_written",
    ]
    assert parts.closed[0].name.endswith(".tsv.gz")


def test_recovery_seals_a_part_left_by_a_crash_with_the_rows_dropped_before_it(
    tmp_path: Path,
) -> None:
    clock = FakeClock(start=T0)
    config = cfg(tmp_path)
    crashed = Parts(config, clock)
    for i in range(4):
        crashed.files.write(row(i))
    assert crashed.files.open is not None
    crashed.files.open.sync(clock.monotonic())
    crashed.files.open.fh.write(b"car\t17000")  # half a row when the power went
    crashed.files.open.fh.flush()

    after = Parts(config, clock)
    after.drops.add(WRITE, clock.monotonic(), 2)
    stems = leftover_stems(tmp_path)
    assert stems == [f"car_{trip_id_for(T0)}_0001.tsv"]
    (path,) = after.recovery.recover_stem(tmp_path / stems[0])
    doc = sidecar_of(path)
    assert doc["rows"] == 4 and doc["recovered"] is True and doc["rows_dropped"] == 2
    assert after.recovery.recover_stem(tmp_path / stems[0]) == []  # closed: nothing to do


def test_the_retry_schedule_backs_off_to_its_cap_and_resets() -> None:
    clock = FakeClock()
    left = Leftovers()
    assert not left.failing and left.due(clock.monotonic())
    delays = []
    for _ in range(5):
        left.failed(clock.monotonic())
        assert left.retry_at is not None
        delays.append(left.retry_at - clock.monotonic())
    assert delays == [0.5, 1.0, 2.0, 2.0, 2.0]
    assert not left.due(clock.monotonic())
    clock.advance(2.0)
    assert left.due(clock.monotonic())
    left.not_yet(clock.monotonic())  # the disk still looks full: wait once more
    assert left.retry_at == clock.monotonic() + 2.0
    left.succeeded()
    assert not left.failing and left.due(clock.monotonic())
    left.failed(clock.monotonic())
    assert left.retry_at == clock.monotonic() + 0.5


def test_disk_trouble_is_said_at_its_start_and_its_end_with_the_rows_in_between(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = FakeClock()
    drops = DropCounter(60.0)
    trouble = DiskTrouble(clock, drops, 10, lambda: True)
    with caplog.at_level(logging.INFO, logger="eccm.store.recorder"):
        trouble.error("cannot write x: No space left on device")
        for _ in range(3):
            clock.advance(1.0)
            drops.add(WRITE, clock.monotonic())
            trouble.report(clock.monotonic())  # within the minute: no line
        trouble.error("cannot write y: No space left on device")  # the same outage
        clock.advance(5.0)
        trouble.works_again(clock.monotonic())
    lines = [r.getMessage() for r in caplog.records]
    assert lines == [
        "cannot write x: No space left on device; rows are dropped until it works again",
        "recording works again after 8 s: 3 rows dropped since the last report, 3 since the start",
    ]
    assert trouble.last_error is None
