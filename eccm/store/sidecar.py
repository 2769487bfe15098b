"""Closing a data file for good: compression, hash, sidecar, each step crash-safe.

Every step leaves the directory in a state that ``Recorder.recover`` can finish: a rename
is atomic and only follows an fsync, and the sidecar is written last, so a data file
with a sidecar is complete (the uploader relies on that). The same functions serve a
normal close and recovery, so both produce the same files.
"""

from __future__ import annotations

import contextlib
import csv
import errno
import gzip
import hashlib
import json
import logging
import math
import os
import shutil
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from eccm import __version__
from eccm.store.names import GZ, META, SIDECAR, TMP

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
FACT_KEYS = ("obd", "vin", "protocol", "adapter", "elm_voltage", "fast_hz", "slow_hz")
# Facts that are numbers: the hub keeps every fact as text, a sidecar gives them as STATUS does.
NUMERIC_FACTS = frozenset({"elm_voltage", "fast_hz", "slow_hz"})
# Files are read in blocks of this size to be hashed and compressed: below glibc's mmap
# threshold, so the block is reused from the heap rather than mapped anew (1 MiB blocks
# made every rotation of a full-rate file cost a few MB of RSS for a moment).
CHUNK = 64 * 1024

# Points of the close sequence a crash test can stop at (see StepHook).
SYNCED = "synced"  # .part flushed and fsynced, still named .part
RENAMED = "renamed"  # .part renamed to x.tsv, before compression
GZIP_WRITTEN = "gzip_written"  # x.tsv.gz.tmp written and fsynced, not yet renamed
COMPRESSED = "compressed"  # x.tsv.gz in place, x.tsv not yet removed
PLAIN_REMOVED = "plain_removed"  # x.tsv removed, no sidecar yet
SIDECAR_TMP = "sidecar_tmp"  # sidecar temp written, not yet renamed
SIDECAR_WRITTEN = "sidecar_written"  # sidecar in place, meta not yet removed
STEPS = (SYNCED, RENAMED, GZIP_WRITTEN, COMPRESSED, PLAIN_REMOVED, SIDECAR_TMP, SIDECAR_WRITTEN)

StepHook = Callable[[str], None]


def _no_hook(step: str) -> None:
    return None


def fsync_dir(directory: Path) -> None:
    """Make renames and removals in ``directory`` survive a power cut."""
    fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    except OSError as exc:
        # Some file systems (and some FUSE mounts) cannot sync a directory; their
        # renames are then as durable as they get.
        if exc.errno not in (errno.EINVAL, errno.ENOTSUP, errno.EBADF):
            raise
    finally:
        os.close(fd)


def write_atomic(
    path: Path, data: bytes, hook: StepHook = _no_hook, before_rename: str | None = None
) -> None:
    """temp + fsync + rename + fsync of the directory: readers see all or nothing."""
    tmp = path.with_name(path.name + TMP)
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()  # a power cut's leftover, or a symlink planted in a shared folder
    try:
        # O_EXCL | O_NOFOLLOW: a fresh file, never written through a link someone put there.
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
    except OSError:
        # A full disk: a half-written temp would only take more of the space that is short.
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    if before_rename:
        hook(before_rename)
    os.replace(tmp, path)
    fsync_dir(path.parent)


def remove(path: Path) -> bool:
    try:
        path.unlink()
    except FileNotFoundError:
        return False
    return True


def file_digest(path: Path) -> tuple[str, int]:
    """(sha256 hex, size) of a file as it is on disk."""
    h = hashlib.sha256()
    size = 0
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
            size += len(chunk)
    return h.hexdigest(), size


@dataclass
class FileStats:
    """What the sidecar says about the rows, counted while writing or by scanning."""

    rows: int = 0
    first_time: str | None = None
    last_time: str | None = None
    time_sources: set[str] = field(default_factory=set)

    def add(self, time_utc: str, time_source: str | None) -> None:
        self.rows += 1
        if self.first_time is None:
            self.first_time = time_utc
        self.last_time = time_utc
        if time_source:
            self.time_sources.add(time_source)

    @property
    def time_source(self) -> str:
        if len(self.time_sources) > 1:
            return "mixed"
        return next(iter(self.time_sources), "unknown")


@dataclass
class PartMeta:
    """``x.tsv.part.meta.json``: what recovery cannot read back from the rows themselves."""

    columns: list[dict[str, str]]
    separator: str
    facts: dict[str, str] = field(default_factory=dict)
    time_sources: list[str] = field(default_factory=list)

    def to_json(self) -> bytes:
        doc = {
            "schema_version": SCHEMA_VERSION,
            "columns": self.columns,
            "separator": self.separator,
            "facts": self.facts,
            "time_sources": self.time_sources,
        }
        return json.dumps(doc, ensure_ascii=False).encode("utf-8")


def meta_path(stem: Path) -> Path:
    return stem.with_name(stem.name + META)


def read_meta(stem: Path) -> PartMeta | None:
    path = meta_path(stem)
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
        return PartMeta(
            columns=[
                {
                    "name": str(c["name"]),
                    "unit": str(c["unit"]),
                    "description": str(c["description"]),
                }
                for c in doc["columns"]
            ],
            separator=str(doc["separator"]),
            facts={str(k): str(v) for k, v in doc.get("facts", {}).items()},
            time_sources=[str(s) for s in doc.get("time_sources", [])],
        )
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        log.warning("ignoring unreadable %s (%s): columns get no units", path.name, exc)
        return None


def columns_info(layout_columns: Iterable[tuple[str, str, str]]) -> list[dict[str, str]]:
    return [{"name": n, "unit": u, "description": d} for n, u, d in layout_columns]


def pick_facts(facts: Mapping[str, str]) -> dict[str, str]:
    """vin/protocol/adapter, the car battery at the adapter and the achieved rates, whatever
    case the link used for the key."""
    out: dict[str, str] = {}
    for key, value in facts.items():
        low = key.lower()
        if low in FACT_KEYS and value:
            out[low] = str(value)
    return out


def _fact_value(key: str, value: str) -> str | float | None:
    if key not in NUMERIC_FACTS:
        return value
    try:
        number = float(value)
    except ValueError:
        return None
    return number if math.isfinite(number) else None


# -- the close sequence ----------------------------------------------------------------
def compress(plain: Path, hook: StepHook = _no_hook) -> Path:
    """x.tsv → x.tsv.gz atomically, then remove x.tsv. Returns the .gz path."""
    gz = plain.with_name(plain.name + GZ)
    tmp = gz.with_name(gz.name + TMP)
    with open(plain, "rb") as src, open(tmp, "wb") as raw:
        # mtime=0 and a fixed level make the output a function of the input alone, so a
        # close redone by recovery yields the same bytes (and the same sha256).
        with gzip.GzipFile(
            filename=plain.name, mode="wb", fileobj=raw, compresslevel=6, mtime=0
        ) as z:
            shutil.copyfileobj(src, z, CHUNK)
        raw.flush()
        os.fsync(raw.fileno())
    hook(GZIP_WRITTEN)
    os.replace(tmp, gz)
    fsync_dir(gz.parent)
    hook(COMPRESSED)
    remove(plain)
    fsync_dir(plain.parent)
    hook(PLAIN_REMOVED)
    return gz


def sidecar_doc(
    uploaded: Path,
    *,
    car: str,
    trip: str,
    stats: FileStats,
    rows_dropped: int,
    columns: Sequence[Mapping[str, str]],
    compression: str,
    separator: str,
    facts: Mapping[str, str],
    recovered: bool,
) -> dict[str, Any]:
    sha256, size = file_digest(uploaded)
    doc: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "car": car,
        "trip": trip,
        "file": uploaded.name,
        "rows": stats.rows,
        # Rows this run of ECCM dropped since the sidecar before this one (a full disk,
        # a disk too slow for the queue); 0 for a file recovered at start.
        "rows_dropped": rows_dropped,
        "first_time": stats.first_time,
        "last_time": stats.last_time,
        "time_source": stats.time_source,
        "columns": [dict(c) for c in columns],
        "size": size,
        "sha256": sha256,
        "compression": compression,
        "separator": separator,
    }
    for key, value in pick_facts(facts).items():
        doc[key] = _fact_value(key, value)
    doc["recovered"] = recovered
    doc["eccm_version"] = __version__
    return doc


def write_sidecar(uploaded: Path, doc: Mapping[str, Any], hook: StepHook = _no_hook) -> Path:
    path = uploaded.with_name(uploaded.name + SIDECAR)
    data = json.dumps(doc, ensure_ascii=False, indent=1).encode("utf-8") + b"\n"
    write_atomic(path, data, hook, before_rename=SIDECAR_TMP)
    hook(SIDECAR_WRITTEN)
    return path


# -- reading back (recovery) -----------------------------------------------------------
def cut_to_last_line(path: Path) -> int:
    """Drop a partial last line (and anything after a hole of zeros); fsync.

    Returns the number of complete lines kept. A power cut can leave half a row, or on
    some file systems a tail of NUL bytes where the data never reached the disk.
    """
    data = path.read_bytes()
    end = len(data)
    hole = data.find(b"\x00")
    if hole != -1:
        end = hole
    last = data.rfind(b"\n", 0, end)
    keep = last + 1  # 0 when there is no complete line at all
    if keep != len(data):
        log.info("%s: dropping %d bytes of an incomplete last line", path.name, len(data) - keep)
        with open(path, "r+b") as f:
            f.truncate(keep)
            f.flush()
            os.fsync(f.fileno())
    return data.count(b"\n", 0, keep)


def scan(path: Path, separator: str) -> tuple[list[str], FileStats]:
    """(header, stats) of a data file, plain or gzip, as a reader of the upload sees it."""
    stats = FileStats()
    header: list[str] = []
    if path.name.endswith(GZ):
        f: TextIO = gzip.open(path, "rt", encoding="utf-8", errors="replace", newline="")  # noqa: SIM115
    else:
        f = open(path, encoding="utf-8", errors="replace", newline="")  # noqa: SIM115
    with f:
        reader = csv.reader(f, delimiter=separator)
        for record in reader:
            if not record:
                continue
            if not header:
                header = record
                continue
            stats.add(record[0], None)
    return header, stats
