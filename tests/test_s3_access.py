"""Credentials, buckets and restricted keys, against SeaweedFS with access keys enforced.

Each failure keeps every file, logs one clear line for a series of failing runs, and keeps
the same text for STATUS (``Uploader.last_error``); fixing the cause lets the files flow
without a restart, and never makes a second copy.
"""

from __future__ import annotations

import json
import logging
import uuid
from pathlib import Path

import pytest

from eccm.clock import SystemClock
from eccm.config import Config
from eccm.sim.s3 import LocalS3
from eccm.upload.keys import car_prefix, probe_key
from eccm.upload.s3client import S3Timeouts
from eccm.upload.uploader import Uploader
from tests.s3server import (
    CAR,
    READ_WRITE,
    WRITE_ONLY,
    make_closed_file,
    make_config,
)
from tests.waiting import wait_until

QUICK = S3Timeouts(connect=2.0, read=5.0, attempts=1)


def loud_upload_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "eccm.upload.uploader" and r.levelno >= logging.WARNING
    ]


def new_bucket(server: LocalS3, deny: list[str] | None = None) -> str:
    """A bucket of its own, optionally with a policy that denies ``deny`` to everyone."""
    name = f"b{uuid.uuid4().hex[:12]}"
    admin = server.client()
    admin.create_bucket(Bucket=name)
    if deny:
        policy = {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Effect": "Deny",
                    "Principal": "*",
                    "Action": [a for a in deny if a != "s3:DeleteObject"],
                    "Resource": [f"arn:aws:s3:::{name}"],
                },
                {
                    "Effect": "Deny",
                    "Principal": "*",
                    "Action": ["s3:DeleteObject"],
                    "Resource": [f"arn:aws:s3:::{name}/*"],
                },
            ],
        }
        admin.put_bucket_policy(Bucket=name, Policy=json.dumps(policy))
    return name


def as_identity(server: LocalS3, name: str) -> dict[str, str]:
    ident = server.identities[name]
    return {"S3_SERVER_AK": ident.access_key, "S3_SERVER_SK": ident.secret_key}


def data_objects(server: LocalS3, cfg: Config, bucket: str | None = None) -> dict[str, int]:
    client = server.client()
    out: dict[str, int] = {}
    pages = client.get_paginator("list_objects_v2").paginate(
        Bucket=bucket or server.bucket, Prefix=car_prefix(cfg.s3_key_prefix, CAR)
    )
    for page in pages:
        for obj in page.get("Contents", []):
            out[obj["Key"]] = obj["Size"]
    out.pop(probe_key(cfg.s3_key_prefix, CAR), None)
    return out


def test_a_wrong_access_key_is_named_once_and_nothing_is_deleted(
    s3_http: LocalS3, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cfg = make_config(tmp_path, s3_http, S3_SERVER_AK="NOSUCHKEY0000000")
    files = [make_closed_file(tmp_path, seq=i) for i in (1, 2)]
    up = Uploader.from_config(cfg, SystemClock(), timeouts=QUICK)
    with caplog.at_level(logging.INFO, logger="eccm.upload.uploader"):
        for _ in range(3):
            report = up.run_once()
            assert report.uploaded == 0 and report.remaining == 2
    assert up.last_error is not None
    assert "rejected the credentials (InvalidAccessKeyId): check S3_SERVER_AK;" in up.last_error
    assert loud_upload_lines(caplog) == [f"upload: {up.last_error}"]
    assert all(f.is_file() and Path(f"{f}.json").is_file() for f in files)


def test_a_bucket_created_later_is_used_without_a_restart(
    s3_http: LocalS3, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    bucket = f"late{uuid.uuid4().hex[:12]}"
    cfg = make_config(tmp_path, s3_http, S3_SERVER_BUCKET=bucket, S3_SYNC_INTERVAL="1")
    files = {p.name for p in (make_closed_file(tmp_path, seq=i) for i in (1, 2, 3))}
    up = Uploader.from_config(cfg, SystemClock(), timeouts=QUICK)
    with caplog.at_level(logging.INFO, logger="eccm.upload.uploader"):
        up.start()
        try:
            wait_until(lambda: up.consecutive_failures >= 3, timeout=60, what="failing runs")
            assert f"bucket {bucket!r} does not exist" in (up.last_error or "")
            assert "S3_SERVER_BUCKET" in (up.last_error or "")
            assert up.queue_length() == 3
            s3_http.client().create_bucket(Bucket=bucket)
            wait_until(lambda: up.queue_length() == 0, timeout=60, what="the files to flow")
        finally:
            up.stop()
    assert up.last_error is None
    names = {k.rsplit("/", 1)[1] for k in data_objects(s3_http, cfg, bucket)}
    assert names == files | {f + ".json" for f in files}
    loud = loud_upload_lines(caplog)
    assert len(loud) == 1 and "does not exist" in loud[0], loud


def test_a_key_that_may_put_but_not_head_keeps_the_files_then_a_fixed_key_finishes(
    s3_http: LocalS3, tmp_path: Path
) -> None:
    cfg = make_config(tmp_path, s3_http, **as_identity(s3_http, WRITE_ONLY))
    f = make_closed_file(tmp_path)
    content = f.read_bytes()
    up = Uploader.from_config(cfg, SystemClock(), timeouts=QUICK)
    for _ in range(2):
        report = up.run_once()
        assert report.uploaded == 0 and report.remaining == 1
    message = up.last_error or ""
    assert "access denied" in message and "on HeadObject" in message
    assert "s3:GetObject" in message and "a HEAD verifies each upload" in message
    # Unverified, so kept; the data object itself went up (no sidecar: not complete).
    assert f.read_bytes() == content and Path(f"{f}.json").is_file()
    before = data_objects(s3_http, cfg)
    assert list(before) == [f"{cfg.s3_key_prefix}/car={CAR}/date=2026-11-22/{f.name}"]

    # The key gets its rights (here: the configuration gets a better key; a restart).
    fixed = make_config(tmp_path, s3_http, S3_KEY_PREFIX=cfg.s3_key_prefix)
    report = Uploader.from_config(fixed, SystemClock(), timeouts=QUICK).run_once()
    assert report.uploaded == 1 and report.error is None
    after = data_objects(s3_http, cfg)
    assert set(after) == set(before) | {k + ".json" for k in before}
    assert not f.exists()


def test_a_key_without_multipart_listing_or_delete_rights_still_uploads(
    s3_http: LocalS3, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Regression: a key with object rights only (what a narrow fleet policy grants) was
    # refused the listing of stale multipart uploads at start, and that aborted every
    # run of the daemon: nothing was ever uploaded.
    bucket = new_bucket(s3_http, deny=["s3:ListBucketMultipartUploads", "s3:DeleteObject"])
    cfg = make_config(
        tmp_path,
        s3_http,
        S3_SERVER_BUCKET=bucket,
        S3_SYNC_INTERVAL="1",
        **as_identity(s3_http, READ_WRITE),
    )
    make_closed_file(tmp_path, seq=1)
    up = Uploader.from_config(cfg, SystemClock(), timeouts=QUICK)
    with caplog.at_level(logging.INFO, logger="eccm.upload.uploader"):
        up.start()  # the daemon's path: stale multipart uploads are looked for first
        try:
            wait_until(
                lambda: up.objects_uploaded or up.consecutive_failures,
                timeout=60,
                what="the first run",
            )
        finally:
            up.stop()
    assert up.objects_uploaded == 1, up.last_error
    assert any("may not list multipart uploads" in m for m in caplog.messages)
    # Delete denied: the probe object stays (a tiny object no partition glob matches).
    listing = s3_http.client().list_objects_v2(Bucket=bucket).get("Contents", [])
    assert probe_key(cfg.s3_key_prefix, CAR) in {o["Key"] for o in listing}

    # The next start finds the probe object already there: conditional create still known.
    make_closed_file(tmp_path, seq=2)
    again = Uploader.from_config(cfg, SystemClock(), timeouts=QUICK)
    assert again.run_once().uploaded == 1
    assert again.conditional is True


def test_https_against_a_plain_http_server_says_so(s3_http: LocalS3, tmp_path: Path) -> None:
    endpoint = f"https://127.0.0.1:{s3_http.s3_port}"  # the server speaks plain http
    cfg = make_config(tmp_path, s3_http, S3_SERVER_ENDPOINT=endpoint)
    f = make_closed_file(tmp_path)
    report = Uploader.from_config(cfg, SystemClock(), timeouts=QUICK).run_once()
    assert "does not speak TLS" in (report.error or ""), report.error
    assert "S3_SERVER_ENDPOINT=http://" in (report.error or "")
    assert f.is_file()
