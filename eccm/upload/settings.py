"""The configuration keys the upload uses, taken from ``Config`` in one place.

The uploader, its S3 client and its error messages see these and nothing else of the
50-odd keys of config.ini, so what an upload depends on is read here at a glance.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from eccm.clock import Clock
from eccm.config import Config
from eccm.store.budget import DiskReport, DiskSettings, enforce
from eccm.upload.keys import car_prefix, probe_key


class DiskKeeper(Protocol):
    """The record directory's disk budget (eccm/store/budget.py), kept around each run."""

    def __call__(self, clock: Clock, *, evict_pending: bool) -> DiskReport: ...


@dataclass(frozen=True)
class UploadSettings:
    record_dir: Path  # RECORD_DIRECTORY_LOCATION
    car: str  # CAR_IDENTIFIER
    endpoint: str  # S3_SERVER_ENDPOINT; empty: uploads are off
    bucket: str  # S3_SERVER_BUCKET
    region: str  # S3_SERVER_REGION
    access_key: str  # S3_SERVER_AK; empty: boto3's default credential chain
    secret_key: str = field(repr=False)  # S3_SERVER_SK
    verify_tls: bool | str  # S3_VERIFY_TLS: yes, no, or a CA bundle's path
    key_prefix: str  # S3_KEY_PREFIX
    delete_after_upload: bool  # S3_DELETE_AFTER_UPLOAD
    sync_interval: float  # S3_SYNC_INTERVAL
    sync_jitter: float  # S3_SYNC_JITTER
    # The store owns the budget (MAX_LOCAL_STORAGE_MB, LOCAL_RETENTION_DAYS); bound to its
    # keys here, the uploader only says when. None: no budget (settings made by hand).
    keep_disk: DiskKeeper | None = field(default=None, repr=False, compare=False)
    # FILE_ENCRYPTION_RECIPIENTS: with any, only .age files are uploaded (crypto/encrypt.py
    # seals the plaintext ones first).
    recipients: tuple[str, ...] = ()

    @property
    def enabled(self) -> bool:
        return bool(self.endpoint)

    @property
    def car_prefix(self) -> str:
        """Everything this car writes lies under this prefix (ends with '/')."""
        return car_prefix(self.key_prefix, self.car)

    def destinations(self, cars: Iterable[str]) -> str:
        """Where files of ``cars`` went, for a message: this car's prefix, unless the
        folder held files of other cars (a CAR_IDENTIFIER changed since), which went to
        theirs."""
        every = sorted(set(cars))
        if set(every) <= {self.car}:
            return f"s3://{self.bucket}/{self.car_prefix}"
        return ", ".join(f"s3://{self.bucket}/{car_prefix(self.key_prefix, c)}" for c in every)

    @property
    def probe_key(self) -> str:
        return probe_key(self.key_prefix, self.car)

    @classmethod
    def from_config(cls, cfg: Config) -> UploadSettings:
        disk = DiskSettings.from_config(cfg)

        def keep_disk(clock: Clock, *, evict_pending: bool) -> DiskReport:
            return enforce(disk, clock, evict_pending=evict_pending)

        return cls(
            record_dir=cfg.record_dir,
            car=cfg.car_identifier,
            endpoint=cfg.s3_server_endpoint,
            bucket=cfg.s3_server_bucket,
            region=cfg.s3_server_region,
            access_key=cfg.s3_server_ak,
            secret_key=cfg.s3_server_sk,
            verify_tls=cfg.s3_verify_tls,
            key_prefix=cfg.s3_key_prefix,
            delete_after_upload=cfg.s3_delete_after_upload,
            sync_interval=cfg.s3_sync_interval,
            sync_jitter=cfg.s3_sync_jitter,
            keep_disk=keep_disk,
            recipients=cfg.file_encryption_recipients,
        )
