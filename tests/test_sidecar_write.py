"""write_atomic on a disk that cannot take the file leaves no temp behind."""

from __future__ import annotations

import resource
import signal
from pathlib import Path

import pytest

from eccm.store.sidecar import write_atomic


def test_a_failed_write_removes_its_temp(tmp_path: Path) -> None:
    target = tmp_path / "trip_summary.json"
    # A file size limit makes the write fail with EFBIG as a full disk fails with ENOSPC.
    old_handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (4096, hard))
    try:
        with pytest.raises(OSError):
            write_atomic(target, b"x" * 100_000)
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, old_handler)
    assert list(tmp_path.iterdir()) == []


def test_sidecar_facts_are_typed_as_status_gives_them(tmp_path: Path) -> None:
    """fast_hz/slow_hz were strings ("5.0") in sidecars while STATUS gives numbers, and the
    README promises the adapter's state (`obd`) in every sidecar."""
    from eccm.store.sidecar import FileStats, sidecar_doc

    data = tmp_path / "car_20261122T000000Z_0001.tsv"
    data.write_text("TIME_UTC\n2026-11-22T00:00:00.000Z\n", encoding="utf-8")
    doc = sidecar_doc(
        data,
        car="car",
        trip="20261122T000000Z",
        stats=FileStats(),
        rows_dropped=0,
        columns=[],
        compression="none",
        separator="\t",
        facts={
            "fast_hz": "5.0",
            "slow_hz": "0.98",
            "obd": "connected",
            "protocol": "CAN",
            "elm_voltage": "12.4",
        },
        recovered=False,
    )
    assert doc["fast_hz"] == 5.0 and doc["slow_hz"] == 0.98
    assert doc["elm_voltage"] == 12.4  # the car battery at the adapter (ATRV), as in STATUS
    assert doc["obd"] == "connected" and doc["protocol"] == "CAN"


def test_a_symlink_planted_as_the_temporary_file_is_not_written_through(tmp_path: Path) -> None:
    # A record folder others may write (a share): `x.json.tmp` made a link to a file of
    # the daemon's user had that file overwritten with the sidecar.
    victim = tmp_path / "victim.txt"
    victim.write_text("not ECCM's\n")
    folder = tmp_path / "records"
    folder.mkdir()
    target = folder / "car_20261122T021500Z_0001.tsv.gz.json"
    (folder / (target.name + ".tmp")).symlink_to(victim)
    write_atomic(target, b'{"ok": true}\n')
    assert victim.read_text() == "not ECCM's\n"
    assert target.read_bytes() == b'{"ok": true}\n' and not target.is_symlink()
