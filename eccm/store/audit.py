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
from eccm.store.ledger import KEEP, TRIPS_KEEP, Ledger
from eccm.store.names import AGE, PART, audit_name, parse_audit_name
from eccm.store.sidecar import fsync_dir, remove, write_atomic

log = logging.getLogger(__name__)

SCHEMA = 1
# Seconds tried past the clear's own when its name is taken (two records in one second).
MAX_BUMP = 3600

# (suffix of the stored file, bytes of the plaintext -> bytes stored)
Seal = tuple[str, Callable[[bytes], bytes]]


class AuditWriter:
    """Writes each record it is given; the service calls it from a front end's thread.

    A record with outcome "sending" (written before mode 04 goes out) is kept as
    ``<name>.part``, which the uploader ignores; the final record of the same ``id`` takes
    its name and replaces it. :meth:`recover` (at start-up) turns a ``.part`` that a power
    cut left into its final name: the clear's evidence is kept, its answer unknown.
    """

    def __init__(self, record_dir: Path, car: str, seal: Seal | None = None) -> None:
        self._dir = record_dir
        self._car = car
        self._seal = seal
        self._lock = threading.Lock()  # two clears at once must not take the same name
        self._pending: dict[object, Path] = {}  # record id -> its final path
        # Names already used, also by records uploaded and deleted since (a Pi without a
        # real-time clock boots to the same time again): their keys are taken in the bucket.
        self._ledger = Ledger(record_dir, KEEP, TRIPS_KEEP)

    def __call__(self, record: Mapping[str, object]) -> Path:
        when = record.get("time")
        epoch = float(when) if isinstance(when, int | float) else 0.0
        doc = {"schema": SCHEMA, "car": self._car, **record, "time": iso_utc(epoch)}
        data = (json.dumps(doc, indent=2, allow_nan=False, default=str) + "\n").encode("utf-8")
        suffix = ""
        if self._seal is not None:
            suffix, seal = self._seal
            data = seal(data)
        rid, outcome = record.get("id"), record.get("outcome")
        with self._lock:
            os.makedirs(self._dir, exist_ok=True)
            path = self._pending.pop(rid, None) or self._free_path(epoch, suffix)
            part = path.with_name(path.name + PART)
            if outcome == "sending":
                self._pending[rid] = path
                write_atomic(part, data)
                return part
            write_atomic(path, data)
            if remove(part):
                fsync_dir(self._dir)
        log.warning("audit record of a DTC clear (%s) written: %s", outcome, path)
        return path

    def recover(self) -> list[Path]:
        """Give each ``.part`` a power cut left its final name (start-up, before any clear)."""
        done: list[Path] = []
        try:
            names = os.listdir(self._dir)
        except FileNotFoundError:
            return done
        except OSError:
            if not os.path.isdir(self._dir):
                return done  # it cannot be made: the recorder's ERROR line says so
            raise
        for name in names:
            final = name.removesuffix(PART)
            if final == name or parse_audit_name(final) is None:
                continue
            if (self._dir / final).exists():
                remove(self._dir / name)  # the final record was written: the part is stale
            else:
                os.replace(self._dir / name, self._dir / final)
                log.warning("audit record of a DTC clear cut short by a power cut kept: %s", final)
                done.append(self._dir / final)
            fsync_dir(self._dir)
        return done

    def _free_path(self, epoch: float, suffix: str) -> Path:
        """A name no record ever had (here, under uploaded/, or in the ledger: uploaded and
        deleted), recorded in the ledger before the file is written."""
        known = set(self._ledger.known_names())
        for bump in range(MAX_BUMP):
            name = audit_name(self._car, epoch + bump)
            taken = ("", AGE, PART, AGE + PART)
            if not any(name + s in known for s in taken):
                self._ledger.add(name)
                return self._dir / (name + suffix)
        raise OSError(f"no free name for an audit record near {iso_utc(epoch)}")


def audit_seal(cfg: Config) -> Seal | None:
    """Encryption of audit records when FILE_ENCRYPTION_RECIPIENTS is set."""
    if not cfg.file_encryption_recipients:
        return None
    from eccm.crypto.encrypt import Encryptor

    return AGE, Encryptor(cfg.record_dir, cfg.file_encryption_recipients).seal_bytes
