"""STATUS's disk fields: the record directory's size against MAX_LOCAL_STORAGE_MB."""

from __future__ import annotations

from pathlib import Path

from eccm.backend import DISK_LOOK_S, DaemonBackend
from eccm.clock import FakeClock
from eccm.config import parse
from eccm.hub import Hub
from eccm.sample import Layout
from eccm.store.budget import MIB, DiskSettings


def test_status_gives_the_disk_in_use_against_the_budget(tmp_path: Path) -> None:
    cfg = parse(
        {
            "CAR_IDENTIFIER": "my-car",
            "RECORD_DIRECTORY_LOCATION": str(tmp_path),
            "MAX_LOCAL_STORAGE_MB": "3",
        }
    )
    clock = FakeClock()
    backend = DaemonBackend(
        disk=DiskSettings.from_config(cfg), hub=Hub(clock, 2.0, Layout((), (), False)), link=None
    )
    (tmp_path / "my-car_20261203T100000Z_0001.tsv.gz").write_bytes(b"x" * 1000)
    (tmp_path / "uploaded").mkdir()
    (tmp_path / "uploaded" / "my-car_20261202T100000Z_0001.tsv.gz").write_bytes(b"x" * 500)
    status = backend.status()
    assert status["disk_budget_bytes"] == 3 * MIB
    assert status["disk_used_bytes"] == 1500
    # Looked at again only after DISK_LOOK_S: a dashboard polling STATUS lists no directory.
    (tmp_path / "my-car_20261203T110000Z_0002.tsv.gz").write_bytes(b"x" * 2000)
    assert backend.status()["disk_used_bytes"] == 1500
    clock.advance(DISK_LOOK_S)
    assert backend.status()["disk_used_bytes"] == 3500


def test_status_without_a_record_directory_says_nothing_of_the_disk() -> None:
    status = DaemonBackend(hub=Hub(FakeClock(), 2.0, Layout((), (), False)), link=None).status()
    assert status["disk_used_bytes"] is None and status["disk_budget_bytes"] is None
