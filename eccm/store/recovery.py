"""What the recorder does with leftovers: at start, and after the disk failed.

A crash or a power cut may leave a ``.part`` (cut back to its last complete row, renamed,
sealed), or a close stopped at any step of sidecar.STEPS (taken from where it stopped).
The same steps finish the files a disk failure left behind once the disk works again;
``Leftovers`` is the pure schedule of those retries, on the injected clock.
"""

from __future__ import annotations

import csv
import logging
import os
import zlib
from dataclasses import dataclass, field
from pathlib import Path

from eccm.backoff import Backoff
from eccm.config import default_separator
from eccm.sample import Layout
from eccm.store import sidecar
from eccm.store.ledger import Ledger
from eccm.store.names import (
    GZ,
    META,
    PART,
    SIDECAR,
    TMP,
    any_stem,
    data_name,
    extension_of,
    next_seq,
    parse_stem,
)
from eccm.store.writer import Sealer

log = logging.getLogger(__name__)

# Retries while the disk refuses are at most this far apart, so recording resumes within
# seconds of space returning.
RETRY_CAP = 2.0


def fsync_quiet(directory: Path) -> None:
    """Sync a directory after a removal; a failure only risks the removal being undone."""
    try:
        sidecar.fsync_dir(directory)
    except OSError as exc:
        log.debug("fsync of %s failed: %s", directory, exc)


class RecordDirError(Exception):
    """The record directory cannot be created or read; the message says what to do."""


def leftover_stems(directory: Path) -> list[str]:
    """The stems (x.tsv) of every data file in ``directory``, open, closed or half-closed,
    whatever its extension (MONITORING_FILE_EXTENSION may have changed since a power cut
    left it open); creates the directory when it is missing."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise RecordDirError(
            f"cannot create RECORD_DIRECTORY_LOCATION {str(directory)!r}: {exc} "
            "(create it, or give the user ECCM runs as the right to write there)"
        ) from exc
    try:
        names = sorted(os.listdir(directory))
    except OSError as exc:
        raise RecordDirError(
            f"cannot read RECORD_DIRECTORY_LOCATION {str(directory)!r}: {exc}"
        ) from exc
    return sorted({s for n in names if (s := any_stem(n)) is not None})


@dataclass
class Leftovers:
    """Files a failure left behind, and when to try finishing them again (no I/O).

    ``retry_at`` is None while the disk works. A retry that is due may still be put off
    (``not_yet``) when the disk visibly still refuses, at the current backoff delay.
    """

    pending: list[Path] = field(default_factory=list)
    backoff: Backoff = field(default_factory=lambda: Backoff(base=0.5, factor=2.0, cap=RETRY_CAP))
    retry_at: float | None = None

    @property
    def failing(self) -> bool:
        return self.retry_at is not None

    def failed(self, now: float) -> None:
        self.backoff = self.backoff.failed()
        self.retry_at = now + self.backoff.delay()

    def due(self, now: float) -> bool:
        return self.retry_at is None or now >= self.retry_at

    def not_yet(self, now: float) -> None:
        self.retry_at = now + self.backoff.delay()

    def succeeded(self) -> None:
        self.retry_at = None
        self.backoff = self.backoff.succeeded()


class Recovery:
    """Brings the files of one stem (x.tsv and its .part, .gz, meta, sidecar, temps) to a
    closed state."""

    def __init__(self, *, car: str, ext: str, separator: str, ledger: Ledger, sealer: Sealer):
        self._car = car
        self._ext = ext
        self._sep = separator
        self._ledger = ledger
        self._sealer = sealer

    def recover_stem(self, stem: Path) -> list[Path]:
        """The data files closed (as they will be uploaded). Raises OSError when the disk
        refuses; it may be called again for the same stem."""
        d = stem.parent
        gz = stem.with_name(stem.name + GZ)
        part = stem.with_name(stem.name + PART)
        meta_file = sidecar.meta_path(stem)
        for suffix in (GZ + TMP, SIDECAR + TMP, GZ + SIDECAR + TMP, META + TMP):
            sidecar.remove(stem.with_name(stem.name + suffix))
        if any(stem.with_name(stem.name + s).exists() for s in (SIDECAR, GZ + SIDECAR)):
            # Closed; only the meta of the open file may have outlived the close.
            sidecar.remove(meta_file)
            return []
        if part.exists() and (stem.exists() or gz.exists()):
            # Cannot happen while sequence numbers only grow; if it does, keep both.
            moved = self.recover_stem(self._move_part_aside(stem))
            return moved + self.recover_stem(stem)
        if part.exists():
            lines = sidecar.cut_to_last_line(part)
            if lines < 2:
                log.info("removing %s: no complete row", part.name)
                sidecar.remove(part)
                sidecar.remove(meta_file)
                fsync_quiet(d)
                return []
            os.replace(part, stem)
            sidecar.fsync_dir(d)
        if gz.exists():
            if sidecar.remove(stem):
                fsync_quiet(d)  # the .gz is complete: renames are atomic
            source = gz
        elif stem.exists():
            sidecar.cut_to_last_line(stem)
            source = stem
        else:
            sidecar.remove(meta_file)  # a meta without data: the file never got a row
            return []
        meta = sidecar.read_meta(stem)
        separator = meta.separator if meta else self._separator_of(stem)
        try:
            header, stats = sidecar.scan(source, separator)
        except (OSError, EOFError, ValueError, zlib.error, csv.Error) as exc:
            # A compressed file that does not read back: keep it, out of the uploader's way.
            bad = source.with_name(source.name + ".corrupt")
            os.replace(source, bad)
            log.error(
                "%s is unreadable (%s): renamed to %s, not uploaded", source.name, exc, bad.name
            )
            return []
        if stats.rows == 0:
            log.info("removing %s: no rows", source.name)
            sidecar.remove(source)
            sidecar.remove(meta_file)
            fsync_quiet(d)
            return []
        if meta is not None:
            stats.time_sources = set(meta.time_sources)
        columns = meta.columns if meta and [c["name"] for c in meta.columns] == header else None
        if columns is None:
            columns = sidecar.columns_info((c, *Layout((), (), True).describe(c)) for c in header)
        parsed = parse_stem(stem.name, self._ext_of(stem))
        trip = parsed[1] if parsed else ""
        facts = meta.facts if meta else {}
        path = self._sealer.seal(stem, trip, stats, columns, separator, facts, True)
        log.info("recovered %s: %d rows", path.name, stats.rows)
        return [path]

    def _ext_of(self, stem: Path) -> str:
        return extension_of(stem.name) or self._ext

    def _separator_of(self, stem: Path) -> str:
        """The configured separator for a file of the configured extension; for one an
        earlier configuration left, its extension's default (better than a wrong guess:
        a .tsv read with , would be one column)."""
        ext = self._ext_of(stem)
        return self._sep if ext == self._ext else default_separator(ext)

    def _move_part_aside(self, stem: Path) -> Path:
        ext = self._ext_of(stem)
        parsed = parse_stem(stem.name, ext)
        car, trip = parsed[:2] if parsed else (self._car, "")
        seq = next_seq(car, trip, self._ledger.known_names())
        new = stem.with_name(data_name(car, trip, seq, ext))
        self._ledger.add(new.name)
        log.warning(
            "%s%s collides with a closed file: renamed to %s%s", stem.name, PART, new.name, PART
        )
        os.replace(stem.with_name(stem.name + PART), new.with_name(new.name + PART))
        meta = sidecar.meta_path(stem)
        if meta.exists():
            os.replace(meta, sidecar.meta_path(new))
        return new
