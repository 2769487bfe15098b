"""The audit record of a trouble-code clear: ``{CAR}_{YYYYMMDDTHHMMSSZ}_dtc-clear.json``.

A clear erases what a mechanic needs (the codes, the freeze frame, the readiness
monitors); the service (:meth:`eccm.service.Service.confirm_clear`) reads them first and
hands this writer one record per clear, and per refusal. The record is written atomically
next to the data files, so it is complete once it exists, and the uploader sends it like
a trip summary (:func:`eccm.store.names.parse_single_name`). ``seal`` (encryption, when
FILE_ENCRYPTION_RECIPIENTS is set) turns the JSON bytes into the bytes stored and names
the suffix they get, so that no plaintext record ever touches the disk.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Callable, Mapping
from pathlib import Path

from eccm.config import Config
from eccm.sample import iso_utc
from eccm.store.names import AGE, audit_name
from eccm.store.sidecar import write_atomic

log = logging.getLogger(__name__)

SCHEMA = 1
# Seconds tried past the clear's own when its name is taken (two records in one second).
MAX_BUMP = 3600

# (suffix of the stored file, bytes of the plaintext -> bytes stored)
Seal = tuple[str, Callable[[bytes], bytes]]


class AuditWriter:
    """Writes each record it is given; the service calls it from a front end's thread."""

    def __init__(self, record_dir: Path, car: str, seal: Seal | None = None) -> None:
        self._dir = record_dir
        self._car = car
        self._seal = seal
        self._lock = threading.Lock()  # two clears at once must not take the same name

    def __call__(self, record: Mapping[str, object]) -> Path:
        when = record.get("time")
        epoch = float(when) if isinstance(when, int | float) else 0.0
        doc = {"schema": SCHEMA, "car": self._car, **record, "time": iso_utc(epoch)}
        data = (json.dumps(doc, indent=2, allow_nan=False, default=str) + "\n").encode("utf-8")
        suffix = ""
        if self._seal is not None:
            suffix, seal = self._seal
            data = seal(data)
        with self._lock:
            os.makedirs(self._dir, exist_ok=True)
            path = self._free_path(epoch, suffix)
            write_atomic(path, data)
        log.warning("audit record of a DTC clear (%s) written: %s", record.get("outcome"), path)
        return path

    def _free_path(self, epoch: float, suffix: str) -> Path:
        for bump in range(MAX_BUMP):
            name = audit_name(self._car, epoch + bump)
            if not any((self._dir / (name + s)).exists() for s in ("", suffix)):
                return self._dir / (name + suffix)
        raise OSError(f"no free name for an audit record near {iso_utc(epoch)}")


def audit_seal(cfg: Config) -> Seal | None:
    """Encryption of audit records when FILE_ENCRYPTION_RECIPIENTS is set."""
    if not cfg.file_encryption_recipients:
        return None
    from eccm.crypto.encrypt import Encryptor

    return AGE, Encryptor(cfg.record_dir, cfg.file_encryption_recipients).seal_bytes
