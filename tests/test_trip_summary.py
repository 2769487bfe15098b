"""Trip summary files: atomic writing, checkpoints and their recovery, naming, the disk
budget, and the upload to a real S3 server (SeaweedFS) under the partitioned prefix."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import textwrap
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from eccm.clock import SystemClock
from eccm.sim.s3 import LocalS3
from eccm.store.budget import MIB, DiskSettings, enforce, inventory
from eccm.store.names import parse_summary_name, summary_name
from eccm.trip.summary import SummaryWriter
from eccm.upload.keys import car_prefix, plan, probe_key
from eccm.upload.s3client import S3Timeouts
from eccm.upload.uploader import Uploader
from tests.s3server import CAR, get_object, list_objects, make_closed_file, make_config
from tests.waiting import wait_until

QUICK = S3Timeouts(connect=2.0, read=2.0, attempts=2)
TRIP = "20261121T235500Z"  # the trip starts before midnight UTC and runs into the next day


def doc(trip: str = TRIP, **extra: Any) -> dict[str, Any]:
    return {
        "schema_version": 1,
        "kind": "trip_summary",
        "car": CAR,
        "trip": trip,
        "complete": True,
        "first_time": "2026-11-21T23:55:00.000Z",
        "last_time": "2026-11-22T00:10:00.000Z",
        "totals": {"distance_km": 12.5, "fuel_l": 0.9},
        "minutes": [],
        **extra,
    }


# -- naming ----------------------------------------------------------------------------
def test_summary_names() -> None:
    name = summary_name("my_car.v2", TRIP)
    assert name == "my_car.v2_20261121T235500Z_summary.json"
    parsed = parse_summary_name(name)
    assert parsed is not None
    assert (parsed.car, parsed.trip, parsed.trip_date) == ("my_car.v2", TRIP, "2026-11-21")
    for other in (
        name + ".part",
        name + ".tmp",
        f"{CAR}_{TRIP}_0001.tsv.gz.json",
        f"{CAR}_20261399T000000Z_summary.json",
        f"{CAR}_{TRIP}_summary.json.gz",
    ):
        assert parse_summary_name(other) is None, other


def test_plan_lists_summaries_apart_from_data_files() -> None:
    names = [
        summary_name(CAR, TRIP),
        summary_name(CAR, TRIP) + ".part",
        summary_name(CAR, TRIP) + ".part.tmp",
        f"{CAR}_{TRIP}_0001.tsv.gz",
        f"{CAR}_{TRIP}_0001.tsv.gz.json",
    ]
    p = plan(names)
    assert [s.name for s in p.summaries] == [summary_name(CAR, TRIP)]
    assert [d.name for d in p.ready] == [f"{CAR}_{TRIP}_0001.tsv.gz"]
    assert p.orphan_sidecars == ()


# -- writing ---------------------------------------------------------------------------
def test_final_summary_is_written_atomically_and_replaces_the_checkpoint(tmp_path: Path) -> None:
    w = SummaryWriter(tmp_path, CAR)
    written: list[Path] = []
    w.add_written_listener(written.append)
    part = w.write_checkpoint(doc(complete=False))
    assert part.name == summary_name(CAR, TRIP) + ".part"
    assert json.loads(part.read_text())["complete"] is False
    final = w.write_final(doc())
    assert final is not None and final.name == summary_name(CAR, TRIP)
    loaded = json.loads(final.read_text())
    assert loaded["file"] == final.name and loaded["complete"] is True
    assert sorted(p.name for p in tmp_path.iterdir()) == [final.name]
    assert written == [final] and w.written == 1


def test_an_existing_summary_is_never_overwritten(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    w = SummaryWriter(tmp_path, CAR)
    first = w.write_final(doc(totals={"distance_km": 1.0}))
    assert first is not None
    assert w.write_final(doc(totals={"distance_km": 2.0})) is None
    assert json.loads(first.read_text())["totals"] == {"distance_km": 1.0}
    assert "exists already" in caplog.text
    # nor one already uploaded and kept in uploaded/
    (tmp_path / "uploaded").mkdir()
    os.replace(first, tmp_path / "uploaded" / first.name)
    assert w.write_final(doc()) is None


def test_nan_is_refused_and_reported_not_written(tmp_path: Path) -> None:
    w = SummaryWriter(tmp_path, CAR)
    w.finish(doc(totals={"distance_km": float("nan")}))  # not started: written in place
    assert w.last_error is not None and "Out of range float" in w.last_error
    assert list(tmp_path.iterdir()) == []


def test_the_writer_thread_writes_what_was_queued_before_stop(tmp_path: Path) -> None:
    w = SummaryWriter(tmp_path / "records", CAR)
    w.start()
    for minute in range(3):
        w.checkpoint(doc(complete=False, minutes=[{"minute": minute}]))
    w.finish(doc())
    w.stop(timeout=30)
    names = sorted(p.name for p in (tmp_path / "records").iterdir())
    assert names == [summary_name(CAR, TRIP)]
    w.finish(doc("20261122T000000Z"))  # after stop: still written, in the caller's thread
    assert (tmp_path / "records" / summary_name(CAR, "20261122T000000Z")).is_file()


def test_recovery_turns_a_checkpoint_into_the_trips_summary(tmp_path: Path) -> None:
    w = SummaryWriter(tmp_path, CAR)
    w.write_checkpoint(doc(complete=False, minutes=[{"minute": "2026-11-21T23:55:00Z"}]))
    w.write_checkpoint(doc("20261122T010000Z", complete=False))
    w.write_final(doc("20261122T010000Z"))  # this one finished: its checkpoint is gone
    (tmp_path / (summary_name(CAR, TRIP) + ".tmp")).write_bytes(b"{half")
    (tmp_path / "someone-elses.json.part").write_bytes(b"x")

    again = SummaryWriter(tmp_path, CAR)
    found: list[Path] = []
    again.add_written_listener(found.append)
    recovered = again.recover()
    assert [p.name for p in recovered] == [summary_name(CAR, TRIP)] and found == recovered
    loaded = json.loads(recovered[0].read_text())
    assert loaded["complete"] is False and loaded["recovered"] is True
    assert loaded["minutes"] == [{"minute": "2026-11-21T23:55:00Z"}]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [
            summary_name(CAR, TRIP),
            summary_name(CAR, "20261122T010000Z"),
            "someone-elses.json.part",
        ]
    )


def test_a_power_cut_mid_trip_leaves_a_summary_at_the_next_start(tmp_path: Path) -> None:
    """A real process writes checkpoints and dies by SIGKILL; the next start recovers."""
    script = textwrap.dedent(
        f"""
        import os, signal, sys
        from pathlib import Path
        from eccm.trip.summary import SummaryWriter
        w = SummaryWriter(Path({str(tmp_path)!r}), {CAR!r})
        w.start()
        for minute in range(5):
            w.checkpoint({{"trip": {TRIP!r}, "complete": False, "minutes": list(range(minute + 1))}})
        w.stop(timeout=30)  # drained, so the last checkpoint is on disk
        os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=60)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()
    assert not (tmp_path / summary_name(CAR, TRIP)).exists()
    SummaryWriter(tmp_path, CAR).start()  # start() recovers first
    loaded = json.loads((tmp_path / summary_name(CAR, TRIP)).read_text())
    assert loaded["minutes"] == [0, 1, 2, 3, 4] and loaded["recovered"] is True


# -- disk budget -------------------------------------------------------------------------
def test_summaries_count_in_the_disk_budget_and_expire_when_uploaded(tmp_path: Path) -> None:
    cfg = make_config(tmp_path, MAX_LOCAL_STORAGE_MB="1", LOCAL_RETENTION_DAYS="1")
    w = SummaryWriter(tmp_path, CAR)
    # An uploaded summary of an earlier run (there before this process first looked, and
    # written in 2020 as its name says: retention asks the file's own time too).
    (tmp_path / "uploaded").mkdir()
    kept = w.write_final(doc("20200102T000000Z"))
    assert kept is not None
    os.replace(kept, tmp_path / "uploaded" / kept.name)
    stamp = datetime(2020, 1, 2, tzinfo=UTC).timestamp()
    os.utime(tmp_path / "uploaded" / kept.name, (stamp, stamp))
    old = w.write_final(doc("20200101T000000Z", pad="x" * (MIB // 2)))
    new = w.write_final(doc("20990101T000000Z", pad="y" * (MIB // 2)))
    assert old is not None and new is not None
    inv = inventory(tmp_path)
    assert sorted(i.name.name for i in inv.pending) == sorted([old.name, new.name])
    report = enforce(
        DiskSettings.from_config(cfg), SystemClock()
    )  # over 1 MB: the oldest not-yet-uploaded goes
    assert report.evicted_pending == [old.name]
    assert new.exists() and not old.exists()
    assert report.expired == 1
    assert not (tmp_path / "uploaded" / kept.name).exists()  # past LOCAL_RETENTION_DAYS


# -- upload ------------------------------------------------------------------------------
def test_a_summary_is_uploaded_verified_once_under_its_trip_start_date(
    s3_http: LocalS3, tmp_path: Path
) -> None:
    cfg = make_config(tmp_path, s3_http, S3_DELETE_AFTER_UPLOAD="no")
    data = make_closed_file(tmp_path, trip=TRIP, first_time="2026-11-22T00:00:01.000Z")
    w = SummaryWriter(tmp_path, CAR)
    summary = w.write_final(doc())
    assert summary is not None
    body = summary.read_bytes()
    w.write_checkpoint(doc("20261122T020000Z", complete=False))  # a trip still running

    up = Uploader.from_config(cfg, SystemClock(), timeouts=QUICK)
    assert up.queue_length() == 2
    report = up.run_once()
    assert report.error is None and report.kept == [] and report.uploaded == 2

    prefix = f"{cfg.s3_key_prefix}/car={CAR}"
    key = f"{prefix}/date=2026-11-21/{summary.name}"
    objects = list_objects(s3_http, car_prefix(cfg.s3_key_prefix, CAR))
    objects.pop(probe_key(cfg.s3_key_prefix, CAR), None)
    assert set(objects) == {
        key,
        f"{prefix}/date=2026-11-22/{data.name}",  # the data file: date of its first row
        f"{prefix}/date=2026-11-22/{data.name}.json",
    }
    assert get_object(s3_http, key) == body
    head = s3_http.client().head_object(Bucket=s3_http.bucket, Key=key)
    assert head["Metadata"]["sha256"] == hashlib.sha256(body).hexdigest()
    assert head["ContentType"] == "application/json"
    assert (tmp_path / "uploaded" / summary.name).read_bytes() == body
    assert (tmp_path / (summary_name(CAR, "20261122T020000Z") + ".part")).exists()

    # the same summary again (a retry after a crash between upload and archive): one object
    os.replace(tmp_path / "uploaded" / summary.name, summary)
    again = up.run_once()
    assert (again.uploaded, again.already_present, again.bytes_sent) == (1, 1, 0)
    after = list_objects(s3_http, car_prefix(cfg.s3_key_prefix, CAR))
    after.pop(probe_key(cfg.s3_key_prefix, CAR), None)
    assert after == objects


def test_the_uploader_is_woken_by_a_written_summary(s3_http: LocalS3, tmp_path: Path) -> None:
    cfg = make_config(tmp_path, s3_http, S3_SYNC_INTERVAL="3600")
    make_closed_file(tmp_path, trip=TRIP)
    up = Uploader.from_config(cfg, SystemClock(), timeouts=QUICK)
    up.start()
    try:
        # the first run, at start, takes the data file; the next is an hour away
        wait_until(lambda: up.queue_length() == 0, 60, "the first upload run")
        w = SummaryWriter(tmp_path, CAR)
        w.add_written_listener(lambda _p: up.wake())
        w.write_final(doc())
        wait_until(lambda: up.queue_length() == 0, 60, "the summary to be uploaded")
    finally:
        up.stop(timeout=10)
    assert list(tmp_path.iterdir()) == []
