"""MAX_LOCAL_STORAGE_MB under pressure, with a real S3 server and a real daemon.

Newest data wins (like a dashcam), each eviction of data not yet uploaded is logged once as
an ERROR, the open file is never deleted, and sidecars stay consistent with their data:
no sidecar uploaded without its data, no data object left in the bucket without its
sidecar, and nothing evicted that the run could have sent.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from eccm import config as eccm_config
from eccm.clock import SystemClock
from eccm.config import Config
from eccm.sim.s3 import LocalS3
from eccm.store.budget import MIB
from eccm.upload.s3client import S3Timeouts
from eccm.upload.uploader import Uploader
from tests import s3server
from tests.s3_helpers import bucket_objects, left_behind
from tests.s3server import CAR, FlakyLink, make_closed_file, make_config
from tests.waiting import wait_until

QUICK = S3Timeouts(connect=2.0, read=5.0, attempts=1)


def fill(folder: Path, trip: str, seqs: range, size: int) -> list[Path]:
    return [
        make_closed_file(folder, trip=trip, seq=s, gz=False, payload=os.urandom(size)) for s in seqs
    ]


def names_in(server: LocalS3, cfg: Config, bucket: str | None = None) -> set[str]:
    client = server.client()
    pages = client.get_paginator("list_objects_v2").paginate(
        Bucket=bucket or server.bucket, Prefix=f"{cfg.s3_key_prefix}/car={CAR}/date="
    )
    return {o["Key"].rsplit("/", 1)[1] for page in pages for o in page.get("Contents", [])}


def unreachable(cfg: Config) -> Config:
    return make_config(
        cfg.record_dir,
        None,
        S3_KEY_PREFIX=cfg.s3_key_prefix,
        S3_SERVER_ENDPOINT="http://127.0.0.1:9",
        S3_SERVER_BUCKET=cfg.s3_server_bucket,
        S3_SERVER_AK="a",
        S3_SERVER_SK="s",
        MAX_LOCAL_STORAGE_MB=f"{cfg.max_local_storage_mb:g}",
    )


def test_files_the_run_can_send_are_not_evicted_before_it(
    s3_http: LocalS3, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Regression: the budget was kept before the uploads too, so a car back online with
    # a full disk first deleted its oldest data, then uploaded the rest.
    cfg = make_config(tmp_path, s3_http, MAX_LOCAL_STORAGE_MB="1")
    files = fill(tmp_path, "20261122T021500Z", range(1, 8), 200_000)  # 1.4 MB
    with caplog.at_level(logging.INFO):
        report = Uploader.from_config(cfg, SystemClock(), timeouts=QUICK).run_once()
    assert report.uploaded == 7 and report.error is None
    assert report.disk is not None and report.disk.evicted_pending == []
    assert {f.name for f in files} <= names_in(s3_http, cfg)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


def test_a_verified_data_object_always_gets_its_sidecar_whatever_the_budget_evicts(
    s3_http: LocalS3, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Regression: data and sidecar were archived together after both PUTs. When the
    # sidecar's PUT failed and the car then stayed offline, the budget evicted the pair
    # and the bucket kept a data object without its sidecar (incomplete) for good.
    admin = s3_http.client()
    bucket = f"b{uuid.uuid4().hex[:12]}"
    admin.create_bucket(Bucket=bucket)
    no_sidecars = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Deny",
                "Principal": "*",
                "Action": ["s3:PutObject"],
                "Resource": [f"arn:aws:s3:::{bucket}/*.json"],
            }
        ],
    }
    admin.put_bucket_policy(Bucket=bucket, Policy=json.dumps(no_sidecars))
    cfg = make_config(tmp_path, s3_http, S3_SERVER_BUCKET=bucket, MAX_LOCAL_STORAGE_MB="1")
    (oldest,) = fill(tmp_path, "20261120T080000Z", range(1, 2), 300_000)

    report = Uploader.from_config(cfg, SystemClock(), timeouts=QUICK).run_once()
    assert "on PutObject" in (report.error or ""), report.error
    assert names_in(s3_http, cfg, bucket) == {oldest.name}  # data verified, no sidecar
    assert not oldest.exists() and Path(f"{oldest}.json").exists()  # waits to be finished

    # Offline for days: newer files push the budget; the oldest pending one goes.
    newer = fill(tmp_path, "20261121T080000Z", range(1, 5), 300_000)
    with caplog.at_level(logging.ERROR, logger="eccm.store.budget"):
        report = Uploader.from_config(unreachable(cfg), SystemClock(), timeouts=QUICK).run_once()
    assert report.disk is not None and report.disk.evicted_pending == [newer[0].name]
    assert [r.getMessage() for r in caplog.records if newer[0].name in r.getMessage()]
    assert Path(f"{oldest}.json").exists(), "the sidecar of a verified data object was evicted"

    # Back online, with the right to write sidecars: every data object gets its sidecar.
    admin.delete_bucket_policy(Bucket=bucket)
    report = Uploader.from_config(cfg, SystemClock(), timeouts=QUICK).run_once()
    assert report.error is None and report.remaining == 0
    expected = {oldest.name, *(f.name for f in newer[1:])}
    assert names_in(s3_http, cfg, bucket) == expected | {n + ".json" for n in expected}
    assert [p.name for p in tmp_path.iterdir()] == []


def test_the_daemon_offline_under_a_tiny_budget_keeps_the_newest_data(
    s3_http: LocalS3, tmp_path: Path
) -> None:
    from eccm.sim.car import emulated_car

    records = tmp_path / "records"
    link = FlakyLink((s3_http.host, s3_http.s3_port))
    link.down()  # offline from the start
    # Older trips fill the budget almost to the brim: 2 uploaded, 3 waiting.
    uploaded = fill(records / "uploaded", "20261120T080000Z", range(1, 3), 100_000)
    old = fill(records, "20261121T080000Z", range(1, 4), 310_000)
    config = tmp_path / "config.ini"
    log_file = tmp_path / "eccm.log"
    try:
        with emulated_car("car") as emu:
            values = s3server.config_values(
                records,
                s3_http,
                S3_SERVER_ENDPOINT=link.endpoint,
                OBD_INTERFACE=emu.get_pty(),
                OBD_PROTOCOL="6",
                OBD_SLOW_COMMANDS="COOLANT_TEMP",
                SAMPLE_INTERVAL="0",
                FILE_ROTATION_SECONDS="1",
                FILE_COMPRESSION="none",
                MAX_LOCAL_STORAGE_MB="1",
                S3_SYNC_INTERVAL="2",
                S3_SYNC_JITTER="0",
                LOG_LEVEL="INFO",
            )
            config.write_text("[DEFAULT]\n" + "".join(f"{k}={v}\n" for k, v in values.items()))
            cfg = eccm_config.load(str(config))
            with log_file.open("wb") as out:
                proc = subprocess.Popen(
                    [sys.executable, "-m", "eccm.cli", "run", "--config", str(config)],
                    stdout=subprocess.DEVNULL,
                    stderr=out,
                )
            try:
                # Recording pushes the oldest waiting file out (1 MiB = 1048576 bytes).
                wait_until(lambda: not old[0].exists(), timeout=90, what="an eviction")
                assert all(f.exists() for f in old[1:])
                link.healthy()
                wait_until(
                    lambda: not any(f.exists() for f in old[1:]),
                    timeout=90,
                    what="the backlog to go up",
                )
                proc.send_signal(signal.SIGTERM)
                proc.wait(timeout=60)
            finally:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
    finally:
        link.close()
    log = log_file.read_text(errors="replace")
    assert proc.returncode == 0, log[-3000:]
    assert "Traceback" not in log
    errors = [line for line in log.splitlines() if " ERROR " in line]
    # Each eviction of data not yet uploaded: one ERROR, naming the file, once.
    assert len([e for e in errors if old[0].name in e]) == 1, errors
    assert all("before it was uploaded" in e for e in errors), errors
    assert not any(f.exists() for f in uploaded)  # uploaded files went first

    remote = names_in(s3_http, cfg)
    assert old[0].name not in remote and old[0].name + ".json" not in remote
    assert {f.name for f in old[1:]} | {f.name + ".json" for f in old[1:]} <= remote
    # The daemon's own files: numbered without a gap (the open file was never deleted),
    # each with its sidecar; nothing left behind locally.
    new = sorted(n for n in remote if n.endswith(".tsv") and "20261121T080000Z" not in n)
    assert new and all(n + ".json" in remote for n in new)
    seqs = sorted(int(n.rsplit("_", 1)[1].split(".")[0]) for n in new)
    assert seqs == list(range(1, len(seqs) + 1)), seqs
    assert left_behind(records) == [".eccm-sequence"]
    assert bucket_objects(s3_http, cfg)
    assert MIB == 1048576
