"""LOCAL_RETENTION_DAYS and MAX_LOCAL_STORAGE_MB (SPEC §4)."""

from __future__ import annotations

import logging
import os
import socket
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from eccm.clock import FakeClock
from eccm.store.budget import MIB, DiskSettings, Inventory, Item, enforce, inventory, plan_disk
from eccm.store.ledger import Ledger
from eccm.upload.keys import DataName, parse_data_name
from eccm.upload.s3client import S3Timeouts
from eccm.upload.uploader import Uploader
from tests.s3server import CAR, make_closed_file, make_config

NOW = datetime(2026, 12, 1, tzinfo=UTC).timestamp()


def item(day: int, seq: int = 1, size: int = 100) -> Item:
    dn = parse_data_name(f"c_202611{day:02d}T120000Z_{seq:04d}.tsv.gz")
    assert isinstance(dn, DataName)
    return Item(name=dn, paths=(Path(dn.name), Path(dn.sidecar)), size=size)


def names(items: tuple[Item, ...]) -> list[str]:
    return [i.name.name for i in items]


def test_under_budget_nothing_goes() -> None:
    inv = Inventory(uploaded=(item(28),), pending=(item(29),), other_bytes=50)
    p = plan_disk(inv, budget_bytes=250, now=NOW, retention_days=15)
    assert p.expired == p.evict_uploaded == p.evict_pending == ()


def test_retention_removes_old_uploaded_files_only() -> None:
    inv = Inventory(uploaded=(item(10), item(20), item(5)), pending=(item(1),), other_bytes=0)
    p = plan_disk(inv, budget_bytes=10**9, now=NOW, retention_days=15)
    # 2026-11-16 12:00 is the boundary: the 5th and the 10th are older; pending is kept.
    assert names(p.expired) == names((item(5), item(10)))
    assert p.evict_pending == ()


def test_over_budget_uploaded_go_first_then_oldest_pending() -> None:
    inv = Inventory(
        uploaded=(item(27), item(26)),
        pending=(item(29, 2), item(28), item(29, 1)),
        other_bytes=100,  # the open file: counted, never deleted
    )
    # Total 600; to fit 250: both uploaded (-200), then the two oldest pending (-200).
    p = plan_disk(inv, budget_bytes=250, now=NOW, retention_days=15)
    assert names(p.evict_uploaded) == names((item(26), item(27)))
    assert names(p.evict_pending) == names((item(28), item(29, 1)))


def test_expired_files_count_toward_the_budget() -> None:
    inv = Inventory(uploaded=(item(1), item(27)), pending=(item(28),), other_bytes=0)
    p = plan_disk(inv, budget_bytes=200, now=NOW, retention_days=15)
    assert names(p.expired) == names((item(1),))
    assert p.evict_uploaded == p.evict_pending == ()


def test_a_budget_smaller_than_the_open_file_empties_the_closed_ones() -> None:
    inv = Inventory(uploaded=(item(27),), pending=(item(28),), other_bytes=10_000)
    p = plan_disk(inv, budget_bytes=1000, now=NOW, retention_days=15)
    assert len(p.evict_uploaded) == len(p.evict_pending) == 1


def _fill(folder: Path, seqs: range, payload: int) -> list[Path]:
    return [
        make_closed_file(folder, seq=s, gz=False, payload=bytes([65 + s]) * payload) for s in seqs
    ]


def test_enforce_on_real_files(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    cfg = make_config(tmp_path, None, MAX_LOCAL_STORAGE_MB="1", LOCAL_RETENTION_DAYS="15")
    up_dir = tmp_path / "uploaded"
    uploaded = _fill(up_dir, range(1, 4), 200_000)
    pending = _fill(tmp_path, range(4, 8), 250_000)
    part = tmp_path / f"{CAR}_20261122T040000Z_0001.tsv.part"
    part.write_bytes(b"x" * 150_000)
    unready = make_closed_file(tmp_path, seq=9, gz=False, payload=b"y" * 50_000, sidecar=False)
    # Not ours: neither counted nor touched (RECORD_DIRECTORY_LOCATION may be ".").
    foreign = tmp_path / "venv-blob.bin"
    foreign.write_bytes(b"z" * 3 * MIB)

    clock = FakeClock(start=datetime(2026, 11, 23, tzinfo=UTC).timestamp())
    with caplog.at_level(logging.INFO, logger="eccm.store.budget"):
        report = enforce(DiskSettings.from_config(cfg), clock)

    # 0.6 MB uploaded, 1 MB pending, 0.2 MB not closed: all uploaded go, then one pending.
    assert report.evicted_uploaded == 3
    assert report.evicted_pending == [pending[0].name]
    assert not any(p.exists() for p in uploaded)
    assert not pending[0].exists() and not (tmp_path / (pending[0].name + ".json")).exists()
    assert all(p.exists() for p in pending[1:])
    assert part.exists() and unready.exists() and foreign.exists()
    assert report.total_bytes <= MIB
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1 and pending[0].name in errors[0].message
    assert "data is lost" in errors[0].message
    assert inventory(tmp_path).total == report.total_bytes


def test_retention_on_real_files_uses_the_trip_time(tmp_path: Path) -> None:
    cfg = make_config(tmp_path, None, LOCAL_RETENTION_DAYS="2")
    up_dir = tmp_path / "uploaded"
    old = make_closed_file(up_dir, trip="20261110T080000Z")
    new = make_closed_file(up_dir, trip="20261121T080000Z")
    orphan = make_closed_file(up_dir, trip="20261101T080000Z")
    orphan.unlink()  # a crash left only its sidecar
    pending_old = make_closed_file(tmp_path, trip="20261101T080000Z")
    # Their mtimes agree (the system clock was right): a file goes only when both say old.
    for p in [*up_dir.iterdir(), *tmp_path.iterdir()]:
        if p.is_file():
            stamp = time.time() - 40 * 86400
            os.utime(p, (stamp, stamp))
    clock = FakeClock(start=datetime(2026, 11, 22, tzinfo=UTC).timestamp())
    report = enforce(DiskSettings.from_config(cfg), clock)
    assert report.expired == 2
    assert not old.exists() and not (up_dir / (orphan.name + ".json")).exists()
    assert new.exists() and pending_old.exists()
    clock.advance(2 * 86400)
    assert enforce(DiskSettings.from_config(cfg), clock).expired == 1 and not new.exists()


def test_the_budget_holds_while_the_server_is_unreachable(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cfg = make_config(
        tmp_path,
        None,
        S3_SERVER_ENDPOINT=f"http://127.0.0.1:{port}",
        S3_SERVER_BUCKET="b",
        S3_SERVER_AK="a",
        S3_SERVER_SK="s",
        MAX_LOCAL_STORAGE_MB="1",
    )
    files = _fill(tmp_path, range(1, 8), 200_000)
    up = Uploader.from_config(cfg, FakeClock(), timeouts=S3Timeouts(connect=1, read=1, attempts=1))
    report = up.run_once()
    assert report.error is not None and "cannot reach" in report.error
    assert report.disk is not None and report.disk.total_bytes <= MIB
    assert [f.exists() for f in files] == [False, False, True, True, True, True, True]


def test_an_archived_data_file_whose_sidecar_waits_goes_before_data_not_uploaded(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # S3_DELETE_AFTER_UPLOAD=no: a data file moves to uploaded/ once verified, its sidecar
    # follows after its own upload. Regression: such a data file was counted but never
    # deleted, so the budget evicted data that was not uploaded anywhere instead.
    cfg = make_config(tmp_path, None, MAX_LOCAL_STORAGE_MB="1")
    done = make_closed_file(tmp_path, trip="20261120T080000Z", gz=False, payload=b"u" * 600_000)
    (tmp_path / "uploaded").mkdir()
    done.rename(tmp_path / "uploaded" / done.name)
    waiting = _fill(tmp_path, range(1, 3), 300_000)  # newer trip, not uploaded
    clock = FakeClock(start=datetime(2026, 11, 23, tzinfo=UTC).timestamp())
    with caplog.at_level(logging.INFO, logger="eccm.store.budget"):
        report = enforce(DiskSettings.from_config(cfg), clock)
    assert report.evicted_uploaded == 1 and report.evicted_pending == []
    assert not (tmp_path / "uploaded" / done.name).exists()
    assert (tmp_path / (done.name + ".json")).exists()  # still to be uploaded: kept
    assert all(f.exists() for f in waiting)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


# ---------------------------------------------------------------- issue 10 item 2
def test_a_clock_jumped_decades_ahead_deletes_no_uploaded_file_for_its_age(
    tmp_path: Path,
) -> None:
    # Files uploaded minutes ago (their mtime says so, on the system clock), then one bogus
    # GNSS sentence (or anything else) moves the corrected clock to 2068: none is expired.
    cfg = make_config(tmp_path, None, LOCAL_RETENTION_DAYS="7")
    up_dir = tmp_path / "uploaded"
    files = [make_closed_file(up_dir, trip=f"2026112{d}T080000Z") for d in range(3)]
    clock = FakeClock(start=datetime(2068, 12, 31, tzinfo=UTC).timestamp())
    report = enforce(DiskSettings.from_config(cfg), clock)
    assert report.expired == 0
    assert all(p.exists() for p in files)


def test_a_file_this_process_saw_appear_is_not_old_whatever_both_clocks_say(
    tmp_path: Path,
) -> None:
    cfg = make_config(tmp_path, None, LOCAL_RETENTION_DAYS="7")
    up_dir = tmp_path / "uploaded"
    clock = FakeClock(start=datetime(2026, 11, 22, tzinfo=UTC).timestamp())
    enforce(DiskSettings.from_config(cfg), clock)  # the first look: the directory is empty
    clock.advance(60.0)
    fresh = make_closed_file(up_dir, trip="20261122T000000Z")
    # Both clocks stepped forward a month (NTP from a fake-hwclock, and GNSS with it).
    month_ago = time.time() - 31 * 86400
    for p in (fresh, Path(f"{fresh}.json")):
        os.utime(p, (month_ago, month_ago))
    clock.set_wall(clock.time() + 31 * 86400)
    assert enforce(DiskSettings.from_config(cfg), clock).expired == 0 and fresh.exists()
    clock.advance(8 * 86400.0)  # a week of monotonic time later it is old by every witness
    assert enforce(DiskSettings.from_config(cfg), clock).expired == 1 and not fresh.exists()


def test_the_budget_still_applies_to_files_too_young_to_expire() -> None:
    inv = Inventory(uploaded=(item(5), item(27)), pending=(item(28),), other_bytes=0)
    young = frozenset({item(5).name.name})
    p = plan_disk(inv, budget_bytes=150, now=NOW, retention_days=15, young=young)
    # The 5th is not expired (a witness says it is young) but goes first for the budget.
    assert p.expired == ()
    assert names(p.evict_uploaded) == names((item(5), item(27)))


def test_over_budget_the_files_written_first_go_first_whatever_their_clock_said(
    tmp_path: Path,
) -> None:
    """A Pi without a real-time clock (fake-hwclock, or none at all) and no fix yet boots
    to a time earlier than the trips of its previous boot: the newest trip has the oldest
    name. Offline and over budget, the files recorded first must go first (newest data
    wins); going by the names deleted the newest drive. The ledger of names (in the order
    they were handed out) knows which came first."""
    cfg = make_config(tmp_path, None, MAX_LOCAL_STORAGE_MB="1", LOCAL_RETENTION_DAYS="15")
    ledger = Ledger(tmp_path, keep=1000, trips_keep=1000)
    # Boot 1: 2026-11-22 20:00, its clock restored by fake-hwclock; boot 2 starts again at
    # the last save, 18:00, the same evening.
    trips = ["20261122T200000Z", "20261122T180000Z"]
    made = []
    for trip in trips:
        for seq in (1, 2):
            ledger.add(f"{CAR}_{trip}_{seq:04d}.tsv")
            made.append(
                make_closed_file(tmp_path, trip=trip, seq=seq, gz=False, payload=b"r" * 300_000)
            )
    report = enforce(DiskSettings.from_config(cfg), FakeClock(start=NOW))
    # 1.2 MB for a budget of 1 MiB: one file goes, the first one written.
    assert report.evicted_pending == [made[0].name], report.evicted_pending
    assert all(p.exists() for p in made[1:])
