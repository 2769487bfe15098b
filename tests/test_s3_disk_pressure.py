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
import uuid
from pathlib import Path

import pytest

from eccm.clock import SystemClock
from eccm.config import Config
from eccm.s3client import S3Timeouts
from eccm.s3local import LocalS3
from eccm.uploader import Uploader
from tests import s3server
from tests.s3server import CAR, make_closed_file, make_config

s3_http = s3server.s3_http

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
        report = Uploader(cfg, SystemClock(), timeouts=QUICK).run_once()
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

    report = Uploader(cfg, SystemClock(), timeouts=QUICK).run_once()
    assert "on PutObject" in (report.error or ""), report.error
    assert names_in(s3_http, cfg, bucket) == {oldest.name}  # data verified, no sidecar
    assert not oldest.exists() and Path(f"{oldest}.json").exists()  # waits to be finished

    # Offline for days: newer files push the budget; the oldest pending one goes.
    newer = fill(tmp_path, "20261121T080000Z", range(1, 5), 300_000)
    with caplog.at_level(logging.ERROR, logger="eccm.diskbudget"):
        report = Uploader(unreachable(cfg), SystemClock(), timeouts=QUICK).run_once()
    assert report.disk is not None and report.disk.evicted_pending == [newer[0].name]
    assert [r.getMessage() for r in caplog.records if newer[0].name in r.getMessage()]
    assert Path(f"{oldest}.json").exists(), "the sidecar of a verified data object was evicted"

    # Back online, with the right to write sidecars: every data object gets its sidecar.
    admin.delete_bucket_policy(Bucket=bucket)
    report = Uploader(cfg, SystemClock(), timeouts=QUICK).run_once()
    assert report.error is None and report.remaining == 0
    expected = {oldest.name, *(f.name for f in newer[1:])}
    assert names_in(s3_http, cfg, bucket) == expected | {n + ".json" for n in expected}
    assert [p.name for p in tmp_path.iterdir()] == []
