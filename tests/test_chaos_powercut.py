"""Chaos: the ignition cuts the power again and again, at random moments.

`eccm run` (a real subprocess) records a simulated car (ELM327 emulator) and a simulated
GNSS receiver, rotates files every second and uploads them to a local S3 server; the test
SIGKILLs it many times in a row (at random, right after a file closes or opens, while the
uploader is busy) and starts it again each time. At the end it stops cleanly, runs
`eccm upload`, and checks what a user of the bucket relies on: every object is a valid
gzip of complete lines matching its sidecar, no file was uploaded twice under two keys,
nothing was deleted locally without a verified object, no row is in two files, and every
trip summary is valid JSON.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from datetime import datetime
from pathlib import Path

from eccm.sim.gnss import NmeaPty, Route
from eccm.sim.s3 import LocalS3
from eccm.upload.keys import parse_data_name, parse_summary_name
from tests import s3server
from tests.waiting import wait_until

CAR = "chaos-car"
CYCLES = 10
ROUTE = Route(latitude=45.0, longitude=7.0, radius=150.0, speed=10.0)


class Run:
    """One `eccm run`; its stderr is read line by line so that a kill can follow an event."""

    def __init__(self, config: Path, argv: list[str] | None = None) -> None:
        self.proc = subprocess.Popen(
            argv or [sys.executable, "-m", "eccm.cli", "run", "--config", str(config)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        self.lines: list[str] = []
        self._cond = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for raw in self.proc.stderr:
            with self._cond:
                self.lines.append(raw.decode(errors="replace"))
                self._cond.notify_all()

    def wait_for(self, needle: str, timeout: float, *, new: bool = True) -> bool:
        """Until a new line (any line with ``new=False``) containing ``needle`` appears;
        False on timeout."""
        deadline = time.monotonic() + timeout
        with self._cond:
            seen = len(self.lines) if new else 0
            while True:
                if any(needle in line for line in self.lines[seen:]):
                    return True
                left = deadline - time.monotonic()
                if left <= 0 or self.proc.poll() is not None:
                    return False
                self._cond.wait(left)

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait(timeout=30)
        self._reader.join(10)

    def terminate(self) -> tuple[int, str]:
        self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout=40)
        self._reader.join(10)
        return code, "".join(self.lines)


def closing(records: Path, timeout: float) -> bool:
    """Until a close is half done (renamed, compressing, sidecar being written)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with os.scandir(records) as it:
            if any(e.name.endswith((".tsv", ".tmp")) for e in it):
                return True
        time.sleep(0.0005)
    return False


def rows_of(data: bytes) -> list[list[str]]:
    text = gzip.decompress(data).decode("utf-8")
    assert text.endswith("\n"), "the last line is incomplete"
    return list(csv.reader(io.StringIO(text), delimiter="\t"))


def check_bucket(
    s3: LocalS3, prefix: str, records: Path, seen: dict[str, str]
) -> tuple[dict[str, int], int]:
    """What a user of the bucket relies on, after a clean stop and `eccm upload`.

    ``seen``: every closed data file noticed locally during the test, with its sha256.
    Returns the data objects (key → size) and the number of rows in them.
    """
    assert not list(records.glob("*.part")), "a .part outlived the clean stop"
    assert not list(records.glob("*.tmp")), "a temp file outlived the clean stop"
    leftovers = [p.name for p in records.iterdir() if p.is_file() and not p.name.startswith(".")]
    assert leftovers == [], f"not uploaded: {leftovers}"

    client = s3.client()
    objects = s3server.list_objects(s3, prefix + "/")
    data_keys = {k: v for k, v in objects.items() if parse_data_name(k.rsplit("/", 1)[1])}
    by_name = Counter(k.rsplit("/", 1)[1] for k in objects)
    twice = [n for n, c in by_name.items() if c > 1]
    assert twice == [], f"uploaded under two keys: {twice}"
    missing = set(seen) - {k.rsplit("/", 1)[1] for k in data_keys}
    assert not missing, f"closed files deleted without an object: {missing}"

    all_rows: Counter[tuple[str, ...]] = Counter()
    header: list[str] | None = None
    for key in sorted(data_keys):
        name = key.rsplit("/", 1)[1]
        body = client.get_object(Bucket=s3.bucket, Key=key)["Body"].read()
        side = json.loads(client.get_object(Bucket=s3.bucket, Key=key + ".json")["Body"].read())
        assert side["file"] == name
        assert side["sha256"] == hashlib.sha256(body).hexdigest()
        assert seen.get(name, side["sha256"]) == side["sha256"], f"{name} changed once closed"
        assert side["size"] == len(body)
        rows = rows_of(body)
        header = header or rows[0]
        assert rows[0] == header, f"{name}: another header"
        assert side["rows"] == len(rows) - 1, name
        assert [c["name"] for c in side["columns"]] == header
        assert side["first_time"] == rows[1][0] and side["last_time"] == rows[-1][0]
        assert f"/date={rows[1][0][:10]}/" in key
        for row in rows[1:]:
            assert len(row) == len(header), f"{name}: a short row {row}"
            assert row[2] == name.split("_")[1]
            all_rows[tuple(row)] += 1
    dup = [r for r, c in all_rows.items() if c > 1]
    assert dup == [], f"{len(dup)} rows are in two files, e.g. {dup[:2]}"
    summaries = [k for k in objects if parse_summary_name(k.rsplit("/", 1)[1])]
    assert summaries, "no trip summary"
    for key in summaries:
        doc = json.loads(client.get_object(Bucket=s3.bucket, Key=key)["Body"].read())
        assert doc["kind"] == "trip_summary" and doc["car"] == CAR
        assert f"/date={doc['trip'][:4]}-{doc['trip'][4:6]}-{doc['trip'][6:8]}/" in key
    return data_keys, sum(all_rows.values())


def upload_all(config: Path) -> None:
    upload = subprocess.run(
        [sys.executable, "-m", "eccm.cli", "upload", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert upload.returncode == 0, upload.stderr


class Closed:
    """Notes every closed data file (with its sha256) seen in the record directory."""

    def __init__(self, records: Path) -> None:
        self.records = records
        self.seen: dict[str, str] = {}

    def note(self) -> None:
        for folder in (self.records, self.records / "uploaded"):
            for side in folder.glob("*.tsv.gz.json"):
                data = side.with_name(side.name[: -len(".json")])
                try:
                    doc = json.loads(side.read_text())
                    digest = hashlib.sha256(data.read_bytes()).hexdigest()
                except (FileNotFoundError, ValueError):
                    continue  # moved meanwhile
                assert doc["sha256"] == digest, f"{data.name} does not match its sidecar"
                self.seen.setdefault(data.name, digest)


def test_repeated_power_cuts_lose_nothing_twice_and_corrupt_nothing(
    car: str, s3_http: LocalS3, tmp_path: Path
) -> None:
    rng = random.Random(int(os.environ.get("ECCM_CHAOS_SEED", "20261122")))
    records = tmp_path / "records"
    config = tmp_path / "config.ini"
    values = s3server.config_values(
        records,
        s3_http,
        CAR_IDENTIFIER=CAR,
        OBD_INTERFACE=car,
        OBD_PROTOCOL="6",
        OBD_SLOW_COMMANDS="COOLANT_TEMP,INTAKE_TEMP",
        GPS_POSITION_MONITORING="yes",
        SAMPLE_INTERVAL="0.1",
        FILE_ROTATION_SECONDS="1",
        FILE_FLUSH_INTERVAL="0.2",
        S3_SYNC_INTERVAL="1",
        S3_SYNC_JITTER="0",
        S3_DELETE_AFTER_UPLOAD="no",
        LOG_LEVEL="INFO",
    )
    prefix = values["S3_KEY_PREFIX"]
    config.write_text("[DEFAULT]\n" + "".join(f"{k}={v}\n" for k, v in values.items()))
    # Every closed data file seen at any moment, with its sha256: none may vanish.
    closed = Closed(records)
    kills = Counter[str]()
    with NmeaPty(ROUTE, rate_hz=5.0) as gnss:
        values_cfg = config.read_text() + f"GPS_INTERFACE={gnss.path}\n"
        config.write_text(values_cfg)
        for _ in range(CYCLES):
            run = Run(config)
            how = rng.choice(["random", "closing", "closed", "opened", "upload"])
            try:
                assert run.wait_for("ECCM running", 60), "".join(run.lines)
                if how == "random":
                    time.sleep(rng.uniform(0.0, 3.0))
                elif how == "closing":
                    kills["mid-close"] += closing(records, 20)
                elif how == "closed":
                    run.wait_for("closed ", 20)
                elif how == "opened":
                    run.wait_for("recording to", 20)
                    time.sleep(rng.uniform(0.0, 0.05))
                else:
                    run.wait_for("closed ", 20)
                    time.sleep(rng.uniform(0.0, 0.3))
            finally:
                run.kill()
            kills[how] += 1
            (tmp_path / f"run{sum(kills.values())}-{how}.log").write_text("".join(run.lines))
            assert "Traceback" not in "".join(run.lines), "".join(run.lines)
            closed.note()
        run = Run(config)
        assert run.wait_for("ECCM running", 60)
        wait_until(lambda: run.wait_for("closed ", 1), timeout=30, what="a file closed")
        code, err = run.terminate()
    assert code == 0, err
    assert "Traceback" not in err, err
    closed.note()
    upload_all(config)
    closed.note()
    data_keys, all_rows = check_bucket(s3_http, prefix, records, closed.seen)
    print(f"kills {dict(kills)}; {len(data_keys)} files, {all_rows} rows")


def test_a_short_trip_cut_by_the_ignition_still_gets_its_summary(car: str, tmp_path: Path) -> None:
    """In a car the power cut is how a trip usually ends: a trip of a few seconds past
    the checkpoint interval must leave a (recovered) summary that agrees with its rows."""
    from eccm.app import SUMMARY_CHECKPOINT_SECONDS
    from eccm.trip.computer import FIRST_CHECKPOINT
    from eccm.trip.summary import SummaryWriter

    records = tmp_path / "records"
    config = tmp_path / "config.ini"
    config.write_text(
        "[DEFAULT]\n"
        f"CAR_IDENTIFIER={CAR}\n"
        f"OBD_INTERFACE={car}\n"
        "OBD_PROTOCOL=6\n"
        "OBD_SLOW_COMMANDS=COOLANT_TEMP\n"
        f"RECORD_DIRECTORY_LOCATION={records}\n"
        "SAMPLE_INTERVAL=0.2\n"
        "FILE_FLUSH_INTERVAL=0.2\n"
    )
    run = Run(config)
    try:
        assert run.wait_for("trip ", 60), "".join(run.lines)
        wait_until(
            lambda: list(records.glob("*_summary.json.part")),
            timeout=SUMMARY_CHECKPOINT_SECONDS + 60,
            what="a checkpoint of the trip summary",
        )
        time.sleep(0.5)  # rows go on after the checkpoint; the cut comes mid-interval
    finally:
        run.kill()
    recovered = SummaryWriter(records, CAR).recover()
    assert len(recovered) == 1
    doc = json.loads(recovered[0].read_text())
    assert doc["complete"] is False and doc["recovered"] is True
    part = next(records.glob("*.tsv.part"))
    rows = [line.split("\t") for line in part.read_text().splitlines()[1:] if line]
    assert 0 < doc["rows"] <= len(rows) + 5  # +5: rows not yet flushed at the checkpoint
    assert doc["first_time"] == rows[0][0]
    assert doc["minutes"], "the minute in progress is in the checkpoint"
    # The first checkpoint comes FIRST_CHECKPOINT (2 s) into the trip, or earlier when a
    # UTC minute closes: it covers at least the shorter of the two.
    first = datetime.fromisoformat(rows[0][0])
    to_minute = 60 - first.second - first.microsecond / 1e6
    assert doc["totals"]["duration_s"] >= min(FIRST_CHECKPOINT, to_minute) - 1
    # ... and comes well before SUMMARY_CHECKPOINT_SECONDS: a car moved a few metres and
    # switched off has its trip in the logbook (it was left out before).
    assert doc["totals"]["duration_s"] < SUMMARY_CHECKPOINT_SECONDS - 2


# A daemon whose wall clock starts at the same instant at every boot, as on a Pi without a
# real-time clock, fake-hwclock or network (botocore still signs with the real clock).
BOOT_CLOCK_DAEMON = """
import sys, time
from eccm.app import Daemon
from eccm.cli import setup_logging
from eccm.config import load

class BootClock:
    def __init__(self, boot):
        self.boot, self.t0 = boot, time.monotonic()
    def time(self):
        return self.boot + time.monotonic() - self.t0
    def monotonic(self):
        return time.monotonic()

cfg = load(sys.argv[1])
setup_logging(cfg.log_level)
sys.exit(Daemon(cfg, BootClock(float(sys.argv[2]))).run())
"""


def test_a_pi_that_boots_to_the_same_time_at_every_power_cut_keeps_trips_apart(
    car: str, s3_http: LocalS3, tmp_path: Path
) -> None:
    """Every boot starts its clock at the same second: the adapter connects after about
    the same time, so every trip would get the same TRIP_ID (and every trip summary the
    same name) unless ids already used are skipped."""
    boots = 3
    records = tmp_path / "records"
    config = tmp_path / "config.ini"
    values = s3server.config_values(
        records,
        s3_http,
        CAR_IDENTIFIER=CAR,
        OBD_INTERFACE=car,
        OBD_PROTOCOL="6",
        OBD_SLOW_COMMANDS="COOLANT_TEMP",
        SAMPLE_INTERVAL="0.1",
        FILE_ROTATION_SECONDS="1",
        FILE_FLUSH_INTERVAL="0.2",
        S3_SYNC_INTERVAL="1",
        S3_DELETE_AFTER_UPLOAD="yes",
    )
    config.write_text("[DEFAULT]\n" + "".join(f"{k}={v}\n" for k, v in values.items()))
    boot = time.time()
    argv = [sys.executable, "-c", BOOT_CLOCK_DAEMON, str(config), str(boot)]
    closed = Closed(records)
    for _ in range(boots):
        run = Run(config, argv)
        try:
            assert run.wait_for("trip ", 60), "".join(run.lines)
            assert run.wait_for("closed ", 30), "".join(run.lines)
            closed.note()
        finally:
            run.kill()
        assert "Traceback" not in "".join(run.lines)
        closed.note()
    run = Run(config, argv)
    assert run.wait_for("trip ", 60)
    # Its first row, not only its start: a stop in between leaves the trip no file (a run
    # under load stopped there and the bucket showed one trip fewer).
    assert run.wait_for(f"recording to {CAR}_", 30, new=False), "".join(run.lines)
    code, err = run.terminate()
    assert code == 0, err
    closed.note()
    upload_all(config)
    closed.note()

    data_keys, _rows = check_bucket(s3_http, values["S3_KEY_PREFIX"], records, closed.seen)
    trips = {key.rsplit("/", 1)[1].split("_")[1] for key in data_keys}
    assert len(trips) == boots + 1, f"trips of different boots share a TRIP_ID: {sorted(trips)}"
    objects = s3server.list_objects(s3_http, values["S3_KEY_PREFIX"] + "/")
    summaries = {k.rsplit("/", 1)[1] for k in objects if k.endswith("_summary.json")}
    # the last run stopped cleanly: its trip has a summary of its own
    assert any(t in name for name in summaries for t in [max(trips)])
