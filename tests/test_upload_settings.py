"""UploadSettings: the keys the upload reads, taken from a Config in one place."""

from __future__ import annotations

from pathlib import Path

from eccm import config as eccm_config
from eccm.clock import FakeClock
from eccm.upload.settings import UploadSettings
from eccm.upload.uploader import Uploader
from tests.s3server import make_closed_file

RAW = {
    "CAR_IDENTIFIER": "van7",
    "S3_SERVER_ENDPOINT": "https://s3.example.net",
    "S3_SERVER_BUCKET": "logs",
    "S3_SERVER_REGION": "eu-west-1",
    "S3_SERVER_AK": "AKIDEXAMPLE",
    "S3_SERVER_SK": "s3cr3t-s3cr3t-s3cr3t",
    "S3_VERIFY_TLS": "no",
    "S3_KEY_PREFIX": "fleet/",
    "S3_DELETE_AFTER_UPLOAD": "no",
    "S3_SYNC_INTERVAL": "120",
    "S3_SYNC_JITTER": "7",
}


def test_each_upload_key_is_read_from_the_configuration(tmp_path: Path) -> None:
    cfg = eccm_config.parse({**RAW, "RECORD_DIRECTORY_LOCATION": str(tmp_path)})
    s = UploadSettings.from_config(cfg)
    assert s.record_dir == cfg.record_dir
    assert (s.car, s.endpoint, s.bucket, s.region) == (
        "van7",
        "https://s3.example.net",
        "logs",
        "eu-west-1",
    )
    assert (s.access_key, s.secret_key, s.verify_tls) == (
        "AKIDEXAMPLE",
        "s3cr3t-s3cr3t-s3cr3t",
        False,
    )
    assert (s.delete_after_upload, s.sync_interval, s.sync_jitter) == (False, 120.0, 7.0)
    assert s.enabled
    # The key layout is the README's: {prefix}/car={car}/...
    assert s.car_prefix == "fleet/car=van7/"
    assert s.probe_key == "fleet/car=van7/_eccm_probe"


def test_the_secret_never_shows_in_the_settings_repr(tmp_path: Path) -> None:
    cfg = eccm_config.parse({**RAW, "RECORD_DIRECTORY_LOCATION": str(tmp_path)})
    text = repr(UploadSettings.from_config(cfg))
    assert "s3cr3t" not in text and "AKIDEXAMPLE" in text


def test_no_endpoint_means_uploads_are_off(tmp_path: Path) -> None:
    cfg = eccm_config.parse({"CAR_IDENTIFIER": "c", "RECORD_DIRECTORY_LOCATION": str(tmp_path)})
    assert not UploadSettings.from_config(cfg).enabled


def test_the_disk_budget_comes_bound_to_its_own_keys(tmp_path: Path) -> None:
    cfg = eccm_config.parse(
        {
            "CAR_IDENTIFIER": "c",
            "RECORD_DIRECTORY_LOCATION": str(tmp_path),
            "MAX_LOCAL_STORAGE_MB": "1",
        }
    )
    keep_disk = UploadSettings.from_config(cfg).keep_disk
    assert keep_disk is not None
    payload = bytes(range(256)) * 2800  # 700 kB each: two are over the 1 MB budget
    old = make_closed_file(tmp_path, seq=1, gz=False, payload=payload)
    new = make_closed_file(tmp_path, seq=2, gz=False, payload=payload)
    # Before a run: files waiting for upload are not evicted yet.
    assert keep_disk(FakeClock(), evict_pending=False).evicted_pending == []
    # After it: the oldest goes, newest data wins.
    assert keep_disk(FakeClock(), evict_pending=True).evicted_pending == [old.name]
    assert new.is_file() and not old.exists()


def test_an_uploader_runs_on_settings_made_without_a_configuration(tmp_path: Path) -> None:
    make_closed_file(tmp_path, seq=1)
    settings = UploadSettings(
        record_dir=tmp_path,
        car="c",
        endpoint="",  # uploads off
        bucket="",
        region="",
        access_key="",
        secret_key="",
        verify_tls=True,
        key_prefix="car-logs",
        delete_after_upload=True,
        sync_interval=60.0,
        sync_jitter=0.0,
    )
    up = Uploader(settings, FakeClock())
    assert up.queue_length() == 1
    report = up.run_once()  # uploads off, no disk budget: nothing happens, nothing fails
    assert (report.uploaded, report.remaining, report.error) == (0, 1, None)
