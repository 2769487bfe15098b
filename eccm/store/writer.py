"""One data file: open it as ``x.tsv.part``, write rows, flush, and seal it.

No thread and no decisions: the recorder decides when to rotate (rotation.py) and what to
do when the disk refuses; this module only does the file operations, in the order that
keeps a crash safe (python-can's writer under its ``BaseRotatingLogger`` is the model: the
file is renamed only after the writer stopped, so a reader never sees an open file).
"""

from __future__ import annotations

import contextlib
import csv
import io
import logging
import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from eccm.sample import Layout, RowCells, Sample
from eccm.store import sidecar
from eccm.store.ledger import Ledger
from eccm.store.names import GZ, PART, data_name, extension_of, next_seq, parse_stem
from eccm.store.rotation import OpenState
from eccm.store.sidecar import FileStats, PartMeta, StepHook

log = logging.getLogger(__name__)

Facts = Callable[[], Mapping[str, str]]


def columns_of(layout: Layout) -> list[dict[str, str]]:
    """Each column's name, unit and description, for the meta and the sidecar."""
    return sidecar.columns_info((c, *layout.describe(c)) for c in layout.header)


def columns_now(layout: Layout) -> tuple[list[dict[str, str]], bool]:
    """:func:`columns_of` without waiting, and whether they are complete: while the first
    layout's OBD units are not at hand (python-OBD, which has them, imports while the
    first GNSS rows are written), those columns have an empty unit and description,
    filled in by FileWriter.complete_meta."""
    if layout.described:
        return columns_of(layout), True
    obd = frozenset(layout.obd)
    columns = sidecar.columns_info(
        (c, *(("", "") if c in obd else layout.describe(c))) for c in layout.header
    )
    return columns, False


@dataclass
class OpenFile:
    """The open ``.part`` file and what is known of it."""

    stem: Path  # x.tsv: the final name
    fh: BinaryIO
    trip: str
    layout: Layout
    opened_at: float
    size: int
    stats: FileStats
    meta: PartMeta
    last_flush: float
    dirty: bool = False
    # What the last successful fsync made durable: the rows after it may be lost with
    # the file when the disk fails (rows_on_disk).
    synced_size: int = 0
    synced_rows: int = 0
    # The meta's columns have their units and descriptions (see columns_now).
    described: bool = True

    @property
    def part(self) -> Path:
        return self.stem.with_name(self.stem.name + PART)

    def state(self) -> OpenState:
        return OpenState(self.trip, self.layout, self.opened_at, self.size, self.stats.rows)

    def write(self, data: bytes, first_cell: str, time_source: str) -> None:
        self.fh.write(data)
        self.size += len(data)
        self.dirty = True
        self.stats.add(first_cell, time_source)

    def note_time_source(self, time_source: str) -> None:
        """Keep the meta file's time sources complete, for a recovery after a crash."""
        if time_source not in self.meta.time_sources:
            self.meta.time_sources.append(time_source)
            sidecar.write_atomic(sidecar.meta_path(self.stem), self.meta.to_json())

    def sync(self, now: float) -> None:
        self.fh.flush()
        os.fsync(self.fh.fileno())
        self.last_flush = now
        self.dirty = False
        self.synced_size, self.synced_rows = self.size, self.stats.rows

    def abandon(self) -> None:
        """The disk failed: let go of the file; recovery keeps what reached the disk."""
        with contextlib.suppress(OSError):
            self.fh.close()

    def rows_on_disk(self) -> int:
        """Complete rows of the .part on the disk, as recovery will count them."""
        if self.synced_size >= self.size:
            return self.stats.rows
        lines = 0
        try:
            with open(self.part, "rb") as fh:
                fh.seek(self.synced_size)
                while chunk := fh.read(1 << 16):
                    hole = chunk.find(b"\0")  # recovery cuts at a hole, as here
                    lines += chunk.count(b"\n", 0, len(chunk) if hole == -1 else hole)
                    if hole != -1:
                        break
        except OSError:
            return self.synced_rows
        if self.synced_size == 0:
            lines -= 1  # the header
        return max(self.synced_rows, min(self.stats.rows, self.synced_rows + lines))


class Sealer:
    """Compress a closed x.tsv if configured, write its sidecar, drop its meta.

    Used by a normal close and by recovery alike. ``rows_dropped()`` is the recorder's
    running total: each sidecar carries the rows dropped since the previous one, so a
    reader of the files sees the gaps and the sidecars of a run add up to the total.
    """

    def __init__(
        self,
        *,
        car: str,
        ext: str,
        compression: str,
        hook: StepHook,
        rows_dropped: Callable[[], int],
    ) -> None:
        self._car = car
        self._ext = ext
        self._compression = compression
        self._hook = hook
        self._rows_dropped = rows_dropped
        self._dropped_filed = 0  # dropped rows already told in a sidecar

    def seal(
        self,
        stem: Path,
        trip: str,
        stats: FileStats,
        columns: list[dict[str, str]],
        separator: str,
        facts: Mapping[str, str],
        recovered: bool,
    ) -> Path:
        gz = stem.with_name(stem.name + GZ)
        if gz.exists():
            uploaded, compression = gz, "gzip"
        elif self._compression == "gzip":
            uploaded, compression = sidecar.compress(stem, self._hook), "gzip"
        else:
            uploaded, compression = stem, "none"
        car = parse_stem(stem.name, extension_of(stem.name) or self._ext)
        dropped = self._rows_dropped() - self._dropped_filed
        doc = sidecar.sidecar_doc(
            uploaded,
            car=car[0] if car else self._car,
            trip=trip,
            stats=stats,
            rows_dropped=dropped,
            columns=columns,
            compression=compression,
            separator=separator,
            facts=facts,
            recovered=recovered,
        )
        sidecar.write_sidecar(uploaded, doc, self._hook)
        self._dropped_filed += dropped
        sidecar.remove(sidecar.meta_path(stem))
        return uploaded


class FileWriter:
    """Opens, encodes rows for, and closes the data files of one recorder."""

    def __init__(
        self,
        *,
        directory: Path,
        car: str,
        ext: str,
        separator: str,
        facts: Facts,
        hook: StepHook,
        ledger: Ledger,
        sealer: Sealer,
    ) -> None:
        self._dir = directory
        self._car = car
        self._ext = ext
        self._sep = separator
        self._facts = facts
        self._hook = hook
        self._ledger = ledger
        self._sealer = sealer
        # csv.writer into a reused buffer: the row's exact bytes are known before they
        # are written, for the size limit.
        self._buf = io.StringIO()
        self._csv = csv.writer(self._buf, delimiter=separator, lineterminator="\n")
        self._cells = RowCells(separator)

    def encode(self, cells: list[str]) -> bytes:
        self._buf.seek(0)
        self._buf.truncate()
        self._csv.writerow(cells)
        return self._buf.getvalue().encode("utf-8")

    def row(self, sample: Sample) -> tuple[list[str], bytes]:
        cells = self._cells.row(sample, self._car)
        return cells, self.encode(cells)

    def open(self, sample: Sample, now: float, left_behind: Callable[[Path], None]) -> OpenFile:
        """A new ``.part`` with its meta file and header. Should writing them fail, the
        stem goes to ``left_behind`` (recovery removes the empty .part and its meta)."""
        self._dir.mkdir(parents=True, exist_ok=True)
        seq = next_seq(self._car, sample.trip_id, self._ledger.known_names())
        while True:
            stem = self._dir / data_name(self._car, sample.trip_id, seq, self._ext)
            layout = sample.layout
            columns, described = columns_now(layout)
            meta = PartMeta(
                columns=columns,
                separator=self._sep,
                facts=sidecar.pick_facts(self._facts()),
            )
            self._ledger.add(stem.name)
            try:
                fh = open(stem.with_name(stem.name + PART), "xb")  # noqa: SIM115 (kept open)
            except FileExistsError:
                seq += 1
                continue
            break
        try:
            sidecar.write_atomic(sidecar.meta_path(stem), meta.to_json())
            header = self.encode(list(layout.header))
            fh.write(header)
        except OSError:
            with contextlib.suppress(OSError):
                fh.close()
            left_behind(stem)
            raise
        f = OpenFile(
            stem,
            fh,
            sample.trip_id,
            layout,
            now,
            len(header),
            FileStats(),
            meta,
            # Never synced: the file's first row reaches the disk at once, the start of a
            # drive does not wait FILE_FLUSH_INTERVAL in the writer's buffer.
            last_flush=-math.inf,
            described=described,
        )
        log.info("recording to %s", f.part.name)
        return f

    def complete_meta(self, f: OpenFile) -> None:
        """Fill in the units and descriptions left out at ``f``'s opening, once they are
        at hand (never waits): the meta file has them for a recovery from then on."""
        if f.described or not f.layout.described:
            return
        f.meta.columns = columns_of(f.layout)
        sidecar.write_atomic(sidecar.meta_path(f.stem), f.meta.to_json())
        f.described = True

    def close(self, f: OpenFile) -> Path | None:
        """Sync, rename and seal ``f``: the data file as it will be uploaded, or None when
        it had no rows (removed). Raises on any failure; recovery can take the files
        from whatever step it stopped at."""
        if not f.described:
            # Closed before python-OBD was imported: its units are waited for now.
            f.meta.columns = columns_of(f.layout)
            f.described = True
        try:
            f.fh.flush()
            os.fsync(f.fh.fileno())
            f.synced_size, f.synced_rows = f.size, f.stats.rows
        finally:
            f.fh.close()
        part = f.part
        self._hook(sidecar.SYNCED)
        if f.stats.rows == 0:
            sidecar.remove(part)
            sidecar.remove(sidecar.meta_path(f.stem))
            sidecar.fsync_dir(self._dir)
            return None
        os.replace(part, f.stem)
        sidecar.fsync_dir(self._dir)
        self._hook(sidecar.RENAMED)
        facts = {**f.meta.facts, **sidecar.pick_facts(self._facts())}
        return self._sealer.seal(
            f.stem, f.trip, f.stats, f.meta.columns, f.meta.separator, facts, False
        )
