"""Local retention and the disk budget of the record directory (SPEC §4).

Only ECCM's own files count and only they are ever deleted: data files, their sidecars,
trip summaries and open ``.part`` files at the top level, and what lies in ``uploaded/``. A record directory
of ``.`` (the default) must not see the virtualenv counted against the budget, let alone
deleted.

Order when over budget: uploaded files oldest first; then the oldest not-yet-uploaded
files, each logged as an ERROR (newest data wins, like a dashcam). Open files are counted
but never deleted. "Oldest" is the order in which the recorder named the files (its
ledger), then the trip's start from the file name; never the file's mtime: the Pi has no
real-time clock. A Pi without one and without a fix yet boots to a time earlier than its
previous boot's trips (fake-hwclock restores the last save; without it, 1970): by the
names alone, its newest drive would look oldest and be deleted first.

No file is deleted for its age on the word of one clock. A clock that jumps forward (a bogus
GNSS time, NTP stepping a fake-hwclock boot time) would make every file look old at once, and
LOCAL_RETENTION_DAYS would empty ``uploaded/`` of data minutes old. So a file expires only
when every witness of its age agrees it is older than the retention:

- its trip time (the name) against the caller's clock (GNSS-corrected wall time);
- its mtime against the system clock, which wrote that mtime (a jump of the corrected clock
  alone, the usual case, leaves this witness unmoved);
- the monotonic clock, for files this process saw appear: such a file is at most as old as
  the monotonic time since the last look at which it was not there yet. No wall clock can
  move this witness, so files written during this run are safe from any step of both.

A witness that cannot be read (no mtime, a file present at this process's first look) does
not vote. The disk budget (MAX_LOCAL_STORAGE_MB, newest data wins) ignores ages and still
applies.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from eccm.clock import Clock
from eccm.config import Config
from eccm.store.ledger import Ledger
from eccm.store.names import (
    AGE,
    GZ,
    PART,
    UPLOADED_DIR,
    DataName,
    parse_data_name,
    parse_sidecar_name,
    parse_single_name,
)

log = logging.getLogger(__name__)

MIB = 1024 * 1024
DAY = 86400.0
# Room the recorder needs on the file system whatever the budget says: a file being
# closed and its compressed copy (FILE_ROTATION_MAX_BYTES is 16 MiB by default), the
# sidecars, the ledger, the trip summaries.
RESERVE = 64 * MIB
ROOM_LOG_EVERY = 3600.0
# When uploaded files last went for want of room (monotonic), per record folder: the log.
_room_said: dict[Path, float] = {}


@dataclass(frozen=True)
class Item:
    """A data file with its sidecar: they are deleted together."""

    name: DataName
    paths: tuple[Path, ...]
    size: int


@dataclass(frozen=True)
class Inventory:
    uploaded: tuple[Item, ...]  # in uploaded/
    pending: tuple[Item, ...]  # closed (sidecar present), not uploaded yet
    other_bytes: int  # open .part files and files not yet closed: counted, never deleted

    @property
    def total(self) -> int:
        return (
            sum(i.size for i in self.uploaded)
            + sum(i.size for i in self.pending)
            + self.other_bytes
        )


@dataclass(frozen=True)
class DiskPlan:
    expired: tuple[Item, ...]  # uploaded, older than LOCAL_RETENTION_DAYS
    evict_uploaded: tuple[Item, ...]  # uploaded, deleted for the budget
    evict_pending: tuple[Item, ...]  # NOT uploaded, deleted for the budget: data lost


def written_order(ledger: Sequence[str]) -> Callable[[Item], tuple[int, DataName]]:
    """A sort key, oldest first: the position in ``ledger`` (the names the recorder
    handed out, in order) of the item's file, or of its trip's last file for a summary;
    items the ledger no longer knows (trimmed: older trips) come first, by name."""
    position: dict[str, int] = {}
    trip_position: dict[tuple[str, str], int] = {}
    for i, name in enumerate(ledger):
        position[name] = i
        dn = parse_data_name(name)
        if dn is not None:
            trip_position[(dn.car, dn.trip)] = i

    def key(item: Item) -> tuple[int, DataName]:
        name = item.name
        stem = name.name.removesuffix(AGE).removesuffix(GZ)
        found = position.get(stem, trip_position.get((name.car, name.trip), -1))
        return found, name

    return key


def plan_disk(
    inv: Inventory,
    budget_bytes: int,
    now: float,
    retention_days: float,
    young: frozenset[str] = frozenset(),
    ledger: Sequence[str] = (),
    room_needed: int = 0,
) -> DiskPlan:
    """Pure: what to delete so that retention holds and the total fits the budget.

    ``young``: names of files another witness (mtime, monotonic) says are younger than the
    retention: never expired, whatever ``now`` says; the budget may still evict them.
    ``ledger``: the recorder's names in the order it handed them out (written_order).
    ``room_needed``: bytes the file system lacks (the disk is smaller than the budget, or
    shared): uploaded files go for it too, files not yet uploaded only for the budget.
    """
    cutoff = now - retention_days * DAY
    oldest_first = written_order(ledger)
    uploaded = sorted(inv.uploaded, key=oldest_first)
    expired = tuple(i for i in uploaded if i.name.trip_epoch <= cutoff and i.name.name not in young)
    expired_names = {i.name.name for i in expired}
    freed = sum(i.size for i in expired)
    total = inv.total - freed
    evict_up: list[Item] = []
    for item in uploaded:
        if total <= budget_bytes and freed >= room_needed:
            break
        if item.name.name in expired_names:
            continue
        evict_up.append(item)
        total -= item.size
        freed += item.size
    evict_pend: list[Item] = []
    for item in sorted(inv.pending, key=oldest_first):
        if total <= budget_bytes:
            break
        evict_pend.append(item)
        total -= item.size
    return DiskPlan(
        expired=expired, evict_uploaded=tuple(evict_up), evict_pending=tuple(evict_pend)
    )


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def _group(folder: Path, names: Sequence[str], uploaded: bool) -> tuple[list[Item], int]:
    """Data files with their sidecars as Items; bytes of other ECCM files beside them.

    In uploaded/ every ECCM file is uploaded, so each may go: a data file whose sidecar
    is still at the top level waiting for its own upload, or a sidecar left alone. At the
    top level a data file without its sidecar is still being closed, and a sidecar
    without its data file still has to be uploaded: counted, never deleted.
    """
    present = set(names)
    items: list[Item] = []
    other = 0
    for name in names:
        if name.endswith(PART):
            other += _size(folder / name)
            continue
        sm = parse_single_name(name)
        if sm is not None:
            # Sorted with its trip, ahead of the trip's data files (seq 0).
            key = DataName(trip=sm.trip, seq=0, car=sm.car, name=name)
            items.append(Item(name=key, paths=(folder / name,), size=_size(folder / name)))
            continue
        dn = parse_data_name(name)
        if dn is not None:
            paths = [folder / name]
            if dn.sidecar in present:
                paths.append(folder / dn.sidecar)
            if dn.sidecar in present or uploaded:
                items.append(Item(name=dn, paths=tuple(paths), size=sum(_size(p) for p in paths)))
            else:
                other += _size(folder / name)
            continue
        sn = parse_sidecar_name(name)
        if sn is not None and sn.name not in present:
            if uploaded:
                items.append(Item(name=sn, paths=(folder / name,), size=_size(folder / name)))
            else:
                other += _size(folder / name)
    return items, other


def _free_bytes(folder: Path) -> int | None:
    """Bytes an unprivileged writer may still put on the file system of ``folder``."""
    try:
        st = os.statvfs(folder)
    except OSError:
        return None
    return st.f_bavail * st.f_frsize


def list_files(folder: Path) -> list[str]:
    """The names of the regular files in ``folder``: none when it does not exist or this
    user may not read it (a drive not mounted yet under a mount point the user may not
    enter, a path under a file): the recorder's ERROR line says why, once."""
    try:
        with os.scandir(folder) as it:
            return [e.name for e in it if e.is_file(follow_symlinks=False)]
    except (FileNotFoundError, NotADirectoryError, PermissionError):
        return []


def inventory(record_dir: Path) -> Inventory:
    pending, other_top = _group(record_dir, list_files(record_dir), uploaded=False)
    uploaded, other_up = _group(
        record_dir / UPLOADED_DIR, list_files(record_dir / UPLOADED_DIR), uploaded=True
    )
    return Inventory(
        uploaded=tuple(uploaded), pending=tuple(pending), other_bytes=other_top + other_up
    )


class Sightings:
    """The monotonic witness: when this process first saw each file of a directory.

    A name first seen at a look after the first one appeared since the look before, so
    its age is at most the monotonic time since then. Names present at the first look are
    of unknown age (earlier runs); names gone are forgotten.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._last_look: dict[Path, float] = {}
        self._born_after: dict[Path, dict[str, float | None]] = {}

    def max_ages(self, folder: Path, names: Sequence[str], now: float) -> dict[str, float]:
        """Upper bounds of the ages of ``names`` in ``folder`` (only those known)."""
        with self._lock:
            last = self._last_look.get(folder)
            old = self._born_after.get(folder, {})
            born = {n: old.get(n, last) for n in names}
            self._born_after[folder] = born
            self._last_look[folder] = now
        return {n: now - b for n, b in born.items() if b is not None}


# One per process: the uploader and the disk-budget thread look at the same directories.
SIGHTINGS = Sightings()


def _mtime_age(item: Item, system_now: float) -> float | None:
    """Seconds since the newest of the item's files was written, on the system clock."""
    stamps = []
    for p in item.paths:
        try:
            stamps.append(p.stat().st_mtime)
        except OSError:
            continue
    return system_now - max(stamps) if stamps else None


def young_items(
    record_dir: Path, inv: Inventory, retention_s: float, monotonic: float, system_now: float
) -> frozenset[str]:
    """Names of uploaded items that the mtime or the monotonic witness says are younger
    than ``retention_s``."""
    folder = record_dir / UPLOADED_DIR
    seen = SIGHTINGS.max_ages(folder, [i.name.name for i in inv.uploaded], monotonic)
    young = set()
    for item in inv.uploaded:
        mtime_age = _mtime_age(item, system_now)
        seen_age = seen.get(item.name.name)
        if (mtime_age is not None and mtime_age < retention_s) or (
            seen_age is not None and seen_age < retention_s
        ):
            young.add(item.name.name)
    return frozenset(young)


@dataclass
class DiskReport:
    expired: int = 0
    evicted_uploaded: int = 0
    evicted_pending: list[str] = field(default_factory=list)
    total_bytes: int = 0


def _remove(item: Item) -> None:
    for p in item.paths:
        # missing_ok: another eccm process (e.g. `eccm upload`) got there first.
        p.unlink(missing_ok=True)


@dataclass(frozen=True)
class DiskSettings:
    """The keys the disk budget uses."""

    record_dir: Path  # RECORD_DIRECTORY_LOCATION
    max_local_storage_mb: float  # MAX_LOCAL_STORAGE_MB
    local_retention_days: float  # LOCAL_RETENTION_DAYS
    reserve_bytes: int = RESERVE  # free room kept by deleting uploaded files

    @classmethod
    def from_config(cls, cfg: Config) -> DiskSettings:
        return cls(cfg.record_dir, cfg.max_local_storage_mb, cfg.local_retention_days)


def enforce(cfg: DiskSettings, clock: Clock, *, evict_pending: bool = True) -> DiskReport:
    """Apply LOCAL_RETENTION_DAYS and MAX_LOCAL_STORAGE_MB to the record directory.

    ``evict_pending=False``: delete uploaded files only (the uploader before a run: what
    the run can send need not be lost to the budget; it evicts after the run).
    """
    inv = inventory(cfg.record_dir)
    budget = int(cfg.max_local_storage_mb * MIB)
    # mtimes were written by the system clock: they are compared with it, not with the
    # injected (corrected) clock, which is the witness being checked.
    young = young_items(
        cfg.record_dir, inv, cfg.local_retention_days * DAY, clock.monotonic(), time.time()
    )
    if not inv.pending and not inv.uploaded:
        # Nothing that could be deleted (nor any need to read the folder's ledger, which
        # a folder this user cannot enter would refuse at every run).
        return DiskReport(total_bytes=inv.total)
    ledger = Ledger(cfg.record_dir, keep=0, trips_keep=0).names()
    free = _free_bytes(cfg.record_dir)
    room_needed = max(0, cfg.reserve_bytes - free) if free is not None else 0
    dp = plan_disk(inv, budget, clock.time(), cfg.local_retention_days, young, ledger, room_needed)
    if not evict_pending:
        dp = DiskPlan(dp.expired, dp.evict_uploaded, ())
    report = DiskReport(total_bytes=inv.total)
    for item in dp.expired:
        _remove(item)
        report.expired += 1
    if dp.expired:
        log.info(
            "deleted %d uploaded file(s) older than LOCAL_RETENTION_DAYS=%g",
            len(dp.expired),
            cfg.local_retention_days,
        )
    for item in dp.evict_uploaded:
        _remove(item)
        report.evicted_uploaded += 1
    if dp.evict_uploaded and inv.total - sum(i.size for i in dp.expired) > budget:
        log.warning(
            "record directory over MAX_LOCAL_STORAGE_MB=%g: deleted %d uploaded file(s), oldest first",
            cfg.max_local_storage_mb,
            len(dp.evict_uploaded),
        )
    elif dp.evict_uploaded:
        # On a small card this is every run's housekeeping: said once an hour.
        now = clock.monotonic()
        said = _room_said.get(cfg.record_dir)
        loud = said is None or now - said >= ROOM_LOG_EVERY
        if loud:
            _room_said[cfg.record_dir] = now
        log.log(
            logging.WARNING if loud else logging.DEBUG,
            "less than %.0f MB free on the disk of %s: deleted %d uploaded file(s), "
            "oldest first (they are in the bucket)",
            cfg.reserve_bytes / MIB,
            cfg.record_dir,
            len(dp.evict_uploaded),
        )
    for item in dp.evict_pending:
        _remove(item)
        report.evicted_pending.append(item.name.name)
        log.error(
            "record directory over MAX_LOCAL_STORAGE_MB=%g: deleted %s (%.1f MB) "
            "before it was uploaded; its data is lost. Raise MAX_LOCAL_STORAGE_MB or "
            "check the S3 upload",
            cfg.max_local_storage_mb,
            item.name.name,
            item.size / MIB,
        )
    report.total_bytes = (
        inv.total
        - sum(i.size for i in dp.expired)
        - sum(i.size for i in dp.evict_uploaded)
        - sum(i.size for i in dp.evict_pending)
    )
    return report
