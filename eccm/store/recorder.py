"""The recorder: samples → rotating CSV/TSV files, fsynced, closed atomically, with sidecars.

``on_sample`` runs in the OBD thread and only enqueues; one writer thread owns every file
operation, so the OBD loop never waits for the SD card. A file is written as
``x.tsv.part``, closed by an atomic rename, compressed, and finished by its sidecar
``x.tsv.gz.json`` (sidecar.py). At start, ``recover`` finishes whatever a crash or a power
cut interrupted, so no corrupt or half-closed file is ever uploaded.
"""

from __future__ import annotations

import contextlib
import csv
import errno
import io
import logging
import os
import queue
import threading
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from eccm.backoff import Backoff
from eccm.clock import Clock
from eccm.config import Config
from eccm.sample import Layout, Sample
from eccm.store import sidecar
from eccm.store.drops import QUEUE, WRITE, DropCounter, Report
from eccm.store.names import (
    GZ,
    META,
    PART,
    SIDECAR,
    TMP,
    UPLOADED_DIR,
    data_name,
    next_seq,
    parse_stem,
    stem_of,
    trim_ledger,
    trip_ids,
)
from eccm.store.rotation import OpenState, Reason, RotationPolicy, flush_due
from eccm.store.sidecar import FileStats, PartMeta, StepHook

log = logging.getLogger(__name__)

# Sequence numbers ever used, so that a trip id repeated after a reboot (a Pi without a
# real-time clock may boot to the same time twice) never reuses the name of a file that
# was uploaded and deleted since: its S3 key would be overwritten.
LEDGER = ".eccm-sequence"
_LEDGER_KEEP = 512
# Older trips keep one line each (their highest name), for years of trips.
_LEDGER_TRIPS = 20_000
_TICK = 0.25  # seconds: how often an idle writer checks flush, age and retries
_REPORT_EVERY = 60.0  # seconds between two lines about dropped rows or disk trouble
# Retries while the disk refuses are at most this far apart, so recording resumes within
# seconds of space returning. A retry on a disk that is visibly still full or read-only
# costs one statvfs (_looks_writable), not the recovery of the files left behind.
_RETRY_CAP = 2.0
_ROOM = 64 * 1024  # free bytes for a retry to be worth it: a row, a meta file, a sidecar

ClosedListener = Callable[[Path], None]


def _no_facts() -> Mapping[str, str]:
    return {}


def _clean(cell: str) -> str:
    # One row is one line: recovery cuts a file back to its last newline, which is only
    # safe if no cell carries a newline of its own.
    if "\n" in cell or "\r" in cell:
        return cell.replace("\r\n", " ").replace("\n", " ").replace("\r", " ")
    return cell


@dataclass
class _Open:
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
    # the file when the disk fails, and are then counted as dropped (_account_lost).
    synced_size: int = 0
    synced_rows: int = 0

    @property
    def part(self) -> Path:
        return self.stem.with_name(self.stem.name + PART)

    def state(self) -> OpenState:
        return OpenState(self.trip, self.layout, self.opened_at, self.size, self.stats.rows)


class Recorder:
    """A hub listener that writes every sample to the data files of SPEC §3.

    Status attributes (written by the writer thread, read by anyone): ``current_file``
    (name of the open ``.part`` file or None), ``rows_in_file``, ``files_closed``,
    ``rows_written`` (rows in the files), ``rows_dropped`` (every other row handed to
    ``on_sample``: ``rows_written + rows_dropped`` is every row, once the writer has it),
    ``last_error`` (None as soon as writing works again).
    """

    def __init__(
        self,
        cfg: Config,
        clock: Clock,
        facts: Callable[[], Mapping[str, str]] | None = None,
        *,
        queue_size: int = 5_000,
        step_hook: StepHook | None = None,
    ) -> None:
        """``step_hook`` is called with each step name of the close sequence
        (sidecar.STEPS); crash tests use it to die at a chosen point."""
        self.cfg = cfg
        self.clock = clock
        self._facts = facts or _no_facts
        self._hook: StepHook = step_hook or (lambda step: None)
        self._dir = cfg.record_dir
        self._ext = cfg.monitoring_file_extension
        self._sep = cfg.separator
        self._car = cfg.car_identifier
        self._policy = RotationPolicy(cfg.file_rotation_seconds, cfg.file_rotation_max_bytes)
        self._queue: queue.Queue[tuple[str, object]] = queue.Queue(maxsize=queue_size)
        self._listeners: list[ClosedListener] = []
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._stopped = False
        self._open: _Open | None = None
        self._trip_ids: set[str] | None = None  # trip ids of every file ever named (lazy)
        # csv.writer into a reused buffer: the row's exact bytes are known before they
        # are written, for the size limit.
        self._buf = io.StringIO()
        self._csv = csv.writer(self._buf, delimiter=self._sep, lineterminator="\n")
        # Error state: files to finish once the disk works again, and when to try.
        self._pending: list[Path] = []
        self._backoff = Backoff(base=0.5, factor=2.0, cap=_RETRY_CAP)
        self._retry_at: float | None = None
        self._drops = DropCounter(_REPORT_EVERY)
        self._dropped_filed = 0  # dropped rows already told in a sidecar
        self._outage_since: float | None = None  # monotonic start of the disk trouble
        self._outage_logged = False  # its start (or its drops) was logged: log its end
        self._last_cause = ""  # the last disk error, for a report after it is over
        self._settled = False  # the row being written is counted (written or dropped)

        self.current_file: str | None = None
        self.rows_in_file = 0
        self.files_closed = 0
        self.rows_written = 0
        self.last_error: str | None = None

    # -- public API --------------------------------------------------------------------
    @property
    def rows_dropped(self) -> int:
        """Rows lost: queue overflow, the disk refused them, or they went with a file the
        disk failed before they reached it."""
        return self._drops.total

    @property
    def queued(self) -> int:
        """Rows and requests waiting for the writer thread."""
        return self._queue.qsize()

    def add_closed_listener(self, fn: ClosedListener) -> None:
        """``fn(path)`` runs in the writer thread once a file and its sidecar are final."""
        with self._lock:
            self._listeners.append(fn)

    def start(self) -> None:
        """Finish what a crash left behind, then start the writer thread."""
        with self._lock:
            if self._thread is not None or self._stopped:
                return
        self.recover()
        thread = threading.Thread(target=self._run, name="eccm-recorder", daemon=True)
        with self._lock:
            self._thread = thread
        thread.start()
        if not self.cfg.file_recording:
            log.info("FILE_RECORDING=no: no data files are written")

    def recover(self) -> list[Path]:
        """Close every leftover ``.part`` and finish interrupted closes.

        Runs before the writer starts (``start`` calls it). Returns the data files it
        closed, as they will be uploaded.
        """
        with self._lock:
            if self._thread is not None and self._thread.is_alive():
                raise RuntimeError("Recorder.recover() runs before start(), not beside the writer")
        try:
            self._dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            self._error(
                f"cannot create RECORD_DIRECTORY_LOCATION {str(self._dir)!r}: {exc} "
                "(create it, or give the user ECCM runs as the right to write there)"
            )
            return []
        try:
            names = sorted(os.listdir(self._dir))
        except OSError as exc:
            self._error(f"cannot read RECORD_DIRECTORY_LOCATION {str(self._dir)!r}: {exc}")
            return []
        stems = sorted({s for n in names if (s := stem_of(n, self._ext)) is not None})
        closed: list[Path] = []
        for stem in stems:
            try:
                closed.extend(self._recover_stem(self._dir / stem))
            except OSError as exc:
                # Retried by the writer like a failed close (a full disk may leave a file
                # without its sidecar): once the disk works again it is closed and
                # uploaded, without a restart.
                self._error(f"cannot recover {stem}: {getattr(exc, 'strerror', None) or exc}")
                self._pending.append(self._dir / stem)
                self._backoff = self._backoff.failed()
                self._retry_at = self.clock.monotonic() + self._backoff.delay()
        if closed:
            log.info("recovered %d file(s) left open or half-closed", len(closed))
        for path in closed:
            self._notify(path)
        return closed

    def on_sample(self, sample: Sample) -> None:
        """Queue a row; never waits for the disk (called from the OBD thread)."""
        if self._stopped or not self.cfg.file_recording:
            return
        try:
            self._queue.put_nowait(("sample", sample))
        except queue.Full:
            now = self.clock.monotonic()
            self._drops.add(QUEUE, now)
            self._report(now)

    def on_trip_end(self, trip_id: str) -> None:
        if self._stopped:
            return
        self._put(("trip_end", trip_id))

    def rotate_now(self, timeout: float = 10.0) -> None:
        """Close the open file now and wait (up to ``timeout``) until it is closed."""
        with self._lock:
            thread = self._thread
        if thread is None or not thread.is_alive() or self._stopped:
            return
        if threading.current_thread() is thread:
            self._close(Reason.REQUESTED)
            return
        done = threading.Event()
        self._put(("rotate", done))
        if not done.wait(timeout):
            log.warning("the recorder did not close its file within %.0f s", timeout)

    def stop(self, timeout: float = 60.0) -> None:
        """Write what is queued, close the open file, end the thread. Idempotent."""
        with self._lock:
            if self._stopped:
                return
            self._stopped = True
            thread = self._thread
        if thread is None:
            return
        self._put(("stop", None), timeout=timeout)
        thread.join(timeout)
        if thread.is_alive():
            log.error("the recorder thread did not finish within %.0f s", timeout)

    # -- writer thread -----------------------------------------------------------------
    def _put(self, item: tuple[str, object], timeout: float = 10.0) -> None:
        try:
            self._queue.put(item, timeout=timeout)
        except queue.Full:
            log.error("recorder queue full: %s request lost", item[0])

    def _run(self) -> None:
        while True:
            try:
                item = self._queue.get(timeout=_TICK)
            except queue.Empty:
                item = None
            kind = ""
            try:
                if item is None:
                    self._idle()
                    continue
                self._report(self.clock.monotonic())
                kind, arg = item
                if kind == "sample":
                    assert isinstance(arg, Sample)
                    self._write(arg)
                elif kind == "trip_end":
                    if self._open is not None and self._open.trip == arg:
                        self._close(Reason.TRIP_END)
                elif kind == "rotate":
                    assert isinstance(arg, threading.Event)
                    self._close(Reason.REQUESTED)
                    arg.set()
                elif kind == "stop":
                    self._close(Reason.STOP)
                    if self._pending:
                        self._retry_pending()
                    return
            except Exception as exc:
                # Never let one bad row or a bug in a listener end the recording.
                log.exception("recorder error")
                self.last_error = f"internal error: {exc}"
                if kind == "sample" and not self._settled:
                    self._drop()

    def _idle(self) -> None:
        now = self.clock.monotonic()
        self._report(now)
        f = self._open
        if f is not None:
            if self._policy.idle(f.state(), now) is not None:
                self._close(Reason.AGE)
            elif f.dirty and flush_due(self.cfg.file_flush_interval, f.last_flush, now):
                try:
                    self._sync(f)
                except OSError as exc:
                    self._fail(f"cannot write {f.part.name}", exc)
        elif self._pending and self._retry_due(now):
            self._retry_pending()

    def _write(self, sample: Sample) -> None:
        now = self.clock.monotonic()
        self._settled = False
        if self._retry_at is not None and (not self._retry_due(now) or not self._retry_pending()):
            self._drop()
            return
        self._buf.seek(0)
        self._buf.truncate()
        cells = [_clean(c) for c in sample.layout.row(sample, self._car)]
        self._csv.writerow(cells)
        data = self._buf.getvalue().encode("utf-8")
        f = self._open
        reason = self._policy.before_row(
            None if f is None else f.state(), sample.trip_id, sample.layout, len(data), now
        )
        if reason is not None:
            self._close(reason)
            if self._retry_at is not None:  # the close failed: the disk is in trouble
                self._drop()
                return
        try:
            if self._open is None:
                self._open = self._open_file(sample, now)
            f = self._open
            f.fh.write(data)
            f.size += len(data)
            f.dirty = True
            f.stats.add(cells[0], sample.time_source)
            # Counted with the file: should the disk fail before the row reaches it, the
            # rows of the file that are not on the disk are moved to the dropped ones.
            self.rows_written += 1
            self._settled = True
            if sample.time_source not in f.meta.time_sources:
                f.meta.time_sources.append(sample.time_source)
                sidecar.write_atomic(sidecar.meta_path(f.stem), f.meta.to_json())
            self.rows_in_file = f.stats.rows
            if flush_due(self.cfg.file_flush_interval, f.last_flush, now):
                self._sync(f)
        except OSError as exc:
            where = self._open.part.name if self._open else str(self._dir)
            self._fail(f"cannot write {where}", exc)  # first: the drop is reported with it
            if not self._settled:
                self._drop()
            return
        if self.last_error is not None and not self._pending:
            self._works_again(now)

    def _sync(self, f: _Open) -> None:
        f.fh.flush()
        os.fsync(f.fh.fileno())
        f.last_flush = self.clock.monotonic()
        f.dirty = False
        f.synced_size, f.synced_rows = f.size, f.stats.rows

    def _open_file(self, sample: Sample, now: float) -> _Open:
        self._dir.mkdir(parents=True, exist_ok=True)
        seq = next_seq(self._car, sample.trip_id, self._known_names())
        while True:
            stem = self._dir / data_name(self._car, sample.trip_id, seq, self._ext)
            layout = sample.layout
            meta = PartMeta(
                columns=sidecar.columns_info((c, *layout.describe(c)) for c in layout.header),
                separator=self._sep,
                facts=sidecar.pick_facts(self._facts()),
            )
            self._ledger_add(stem.name)
            try:
                fh = open(stem.with_name(stem.name + PART), "xb")  # noqa: SIM115 (kept open)
            except FileExistsError:
                seq += 1
                continue
            break
        try:
            sidecar.write_atomic(sidecar.meta_path(stem), meta.to_json())
            self._buf.seek(0)
            self._buf.truncate()
            self._csv.writerow(layout.header)
            header = self._buf.getvalue().encode("utf-8")
            fh.write(header)
        except OSError:
            with contextlib.suppress(OSError):
                fh.close()
            self._pending.append(stem)  # recovery removes the empty .part and its meta
            raise
        f = _Open(stem, fh, sample.trip_id, layout, now, len(header), FileStats(), meta, now)
        self.current_file = f.part.name
        self.rows_in_file = 0
        log.info("recording to %s", f.part.name)
        return f

    def _close(self, reason: Reason) -> None:
        f = self._open
        if f is None:
            return
        self._open = None
        self.current_file = None
        self.rows_in_file = 0
        try:
            path = self._finish_open(f)
        except Exception as exc:
            # Whatever step failed, recovery can take the files from where they are.
            self._account_lost(f)
            self._fail(f"cannot close {f.part.name}", exc)
            self._pending.append(f.stem)
            return
        if path is None:
            log.info("removed %s: no rows (%s)", f.part.name, reason)
            return
        self.files_closed += 1
        log.info("closed %s: %d rows (%s)", path.name, f.stats.rows, reason)
        self._notify(path)

    def _finish_open(self, f: _Open) -> Path | None:
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
        return self._seal(f.stem, f.trip, f.stats, f.meta.columns, f.meta.separator, facts, False)

    def _seal(
        self,
        stem: Path,
        trip: str,
        stats: FileStats,
        columns: list[dict[str, str]],
        separator: str,
        facts: Mapping[str, str],
        recovered: bool,
    ) -> Path:
        """Compress a closed x.tsv if configured, write its sidecar, drop its meta."""
        gz = stem.with_name(stem.name + GZ)
        if gz.exists():
            uploaded, compression = gz, "gzip"
        elif self.cfg.file_compression == "gzip":
            uploaded, compression = sidecar.compress(stem, self._hook), "gzip"
        else:
            uploaded, compression = stem, "none"
        car = parse_stem(stem.name, self._ext)
        # Rows dropped since the previous sidecar: a reader of the files sees the gaps,
        # and the sidecars of a run add up to its rows_dropped.
        dropped = self.rows_dropped - self._dropped_filed
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

    # -- recovery ----------------------------------------------------------------------
    def _recover_stem(self, stem: Path) -> list[Path]:
        """Bring the files of one stem to a closed state; the data files closed."""
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
            moved = self._recover_stem(self._move_part_aside(stem))
            return moved + self._recover_stem(stem)
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
        separator = meta.separator if meta else self._sep
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
        parsed = parse_stem(stem.name, self._ext)
        trip = parsed[1] if parsed else ""
        facts = meta.facts if meta else {}
        path = self._seal(stem, trip, stats, columns, separator, facts, True)
        log.info("recovered %s: %d rows", path.name, stats.rows)
        return [path]

    def _move_part_aside(self, stem: Path) -> Path:
        parsed = parse_stem(stem.name, self._ext)
        car, trip = parsed[:2] if parsed else (self._car, "")
        seq = next_seq(car, trip, self._known_names())
        new = stem.with_name(data_name(car, trip, seq, self._ext))
        self._ledger_add(new.name)
        log.warning(
            "%s%s collides with a closed file: renamed to %s%s", stem.name, PART, new.name, PART
        )
        os.replace(stem.with_name(stem.name + PART), new.with_name(new.name + PART))
        meta = sidecar.meta_path(stem)
        if meta.exists():
            os.replace(meta, sidecar.meta_path(new))
        return new

    # -- names -------------------------------------------------------------------------
    def trip_used(self, trip_id: str) -> bool:
        """Whether any file of this car ever carried ``trip_id`` (data files, sidecars,
        trip summaries, here, under uploaded/ or in the ledger of sequence numbers)."""
        with self._lock:
            if self._trip_ids is None:
                self._trip_ids = trip_ids(self._car, self._known_names())
            return trip_id in self._trip_ids

    def _known_names(self) -> list[str]:
        names: list[str] = []
        for d in (self._dir, self._dir / UPLOADED_DIR):
            with contextlib.suppress(FileNotFoundError):
                names.extend(os.listdir(d))
        names.extend(self._ledger())
        return names

    def _ledger_text(self) -> str:
        try:
            return (self._dir / LEDGER).read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return ""

    def _ledger(self) -> list[str]:
        return self._ledger_text().splitlines()

    def _ledger_add(self, name: str) -> None:
        parsed = parse_stem(name, self._ext)
        with self._lock:
            if self._trip_ids is not None and parsed is not None:
                self._trip_ids.add(parsed[1])
        path = self._dir / LEDGER
        text = self._ledger_text()
        names = text.splitlines()
        if len(names) >= 2 * _LEDGER_KEEP:
            kept = trim_ledger([*names, name], _LEDGER_KEEP, _LEDGER_TRIPS)
            # Rewritten only when that saves a good many lines, not at every file.
            if len(kept) <= len(names) + 1 - _LEDGER_KEEP:
                sidecar.write_atomic(path, "".join(n + "\n" for n in kept).encode())
                return
        # A power cut mid-append leaves half a line: end it, or this name would be glued
        # to it and lost.
        torn = b"\n" if text and not text.endswith("\n") else b""
        with open(path, "ab") as f:
            f.write(torn + name.encode() + b"\n")
            f.flush()
            os.fsync(f.fileno())

    # -- errors ------------------------------------------------------------------------
    def _fail(self, what: str, exc: Exception) -> None:
        """The disk refused: keep the thread alive, drop the open file, retry later."""
        message = f"{what}: {getattr(exc, 'strerror', None) or exc}{_advice(exc)}"
        self._error(message)
        f = self._open
        if f is not None:
            self._open = None
            self.current_file = None
            self.rows_in_file = 0
            # A failing close loses the buffered tail; recovery keeps what reached the disk.
            with contextlib.suppress(OSError):
                f.fh.close()
            self._account_lost(f)
            self._pending.append(f.stem)
        now = self.clock.monotonic()
        self._backoff = self._backoff.failed()
        self._retry_at = now + self._backoff.delay()

    def _account_lost(self, f: _Open) -> None:
        """Move the rows of a failed file that never reached the disk from written to
        dropped, so that rows_written is what the files hold once recovered."""
        lost = f.stats.rows - self._rows_on_disk(f)
        if lost > 0:
            log.debug("%s: %d rows had not reached the disk when it failed", f.part.name, lost)
            self.rows_written -= lost  # first, so written + dropped never counts a row twice
            self._drops.add(WRITE, self.clock.monotonic(), lost)

    def _rows_on_disk(self, f: _Open) -> int:
        """Complete rows of ``f``'s .part on the disk, as recovery will count them."""
        if f.synced_size >= f.size:
            return f.stats.rows
        lines = 0
        try:
            with open(f.part, "rb") as fh:
                fh.seek(f.synced_size)
                while chunk := fh.read(1 << 16):
                    hole = chunk.find(b"\0")  # recovery cuts at a hole, as here
                    lines += chunk.count(b"\n", 0, len(chunk) if hole == -1 else hole)
                    if hole != -1:
                        break
        except OSError:
            return f.synced_rows
        if f.synced_size == 0:
            lines -= 1  # the header
        return max(f.synced_rows, min(f.stats.rows, f.synced_rows + lines))

    def _error(self, message: str) -> None:
        """Disk trouble: said once when it starts (the rate permitting), then in the
        reports of dropped rows, and once more when it is over (_works_again)."""
        self.last_error = message
        self._last_cause = message
        if self._outage_since is not None:
            return
        now = self.clock.monotonic()
        self._outage_since = now
        self._outage_logged = False
        report = self._drops.claim(now)
        if report is None:
            return  # a line in the last minute: the next report says it, with the count
        extra = f" ({_rows(report.rows)} dropped before it)" if report.rows else ""
        log.error("%s; rows are dropped until it works again%s", message, extra)
        self._outage_logged = True

    def _works_again(self, now: float) -> None:
        if self.last_error is None:
            return
        self.last_error = None
        since, self._outage_since = self._outage_since, None
        if not self._outage_logged:
            return  # nothing was said of it: its drops go into the next report
        self._outage_logged = False
        report = self._drops.take(now)
        log.info(
            "recording works again%s: %s dropped since the last report, %d since the start",
            "" if since is None else f" after {now - since:.0f} s",
            _rows(report.rows),
            self.rows_dropped,
        )

    def _report(self, now: float) -> None:
        """Log the rows dropped since the last line, if a line is due (once a minute)."""
        report = self._drops.due(now)
        if report is not None:
            self._log_report(report)

    def _log_report(self, report: Report) -> None:
        causes: list[str] = []
        if n := report.by_cause.get(WRITE, 0):
            causes.append(f"{n} not written: {self.last_error or self._last_cause}")
        if n := report.by_cause.get(QUEUE, 0):
            causes.append(
                f"{n} with the recorder queue full ({self._queue.maxsize} rows waiting: the "
                "disk is too slow)"
            )
        span = f" in the last {report.seconds:.0f} s" if report.seconds >= 1 else ""
        log.error(
            "%s dropped%s (%s); %d since the start",
            _rows(report.rows),
            span,
            "; ".join(causes),
            self.rows_dropped,
        )
        if self._outage_since is not None and threading.current_thread() is self._thread:
            # Said during the outage, so its end is said too (the writer's state: the
            # OBD thread reports queue overflows only).
            self._outage_logged = True

    def _drop(self) -> None:
        now = self.clock.monotonic()
        self._drops.add(WRITE, now)
        self._settled = True
        self._report(now)

    def _retry_due(self, now: float) -> bool:
        if self._retry_at is None:
            return True
        if now < self._retry_at:
            return False
        if self._looks_writable():
            return True
        self._retry_at = now + self._backoff.delay()
        return False

    def _looks_writable(self) -> bool:
        """False when a retry would surely fail again: the file system is read-only, or
        it has less than _ROOM free. Anything else is for the retry itself to find out."""
        try:
            st = os.statvfs(self._dir)
        except (OSError, AttributeError):
            return True  # gone (a USB stick): the retry creates the folder or says why
        if st.f_flag & getattr(os, "ST_RDONLY", 1):
            return False
        if st.f_blocks == 0 or st.f_frsize == 0:
            return True  # a file system that does not tell
        # root may write into the blocks ext4 reserves for it (f_bfree), others not.
        blocks = st.f_bfree if _is_root() else st.f_bavail
        return blocks * st.f_frsize >= _ROOM

    def _retry_pending(self) -> bool:
        """Finish the files a failure left behind. True when the disk works again."""
        had_pending = bool(self._pending)
        while self._pending:
            stem = self._pending[0]
            try:
                paths = self._recover_stem(stem)
            except Exception as exc:
                self._error(f"cannot close {stem.name}: {getattr(exc, 'strerror', None) or exc}")
                self._backoff = self._backoff.failed()
                self._retry_at = self.clock.monotonic() + self._backoff.delay()
                return False
            self._pending.pop(0)
            for path in paths:
                self.files_closed += 1
                self._notify(path)
        self._retry_at = None
        self._backoff = self._backoff.succeeded()
        if had_pending:
            log.info("the files left by the failure are closed")
            self._works_again(self.clock.monotonic())
        return True

    def _notify(self, path: Path) -> None:
        with self._lock:
            listeners = list(self._listeners)
        for fn in listeners:
            try:
                fn(path)
            except Exception:
                log.exception("closed-file listener %r failed for %s", fn, path.name)


def fsync_quiet(directory: Path) -> None:
    """Sync a directory after a removal; a failure only risks the removal being undone."""
    try:
        sidecar.fsync_dir(directory)
    except OSError as exc:
        log.debug("fsync of %s failed: %s", directory, exc)


def _rows(n: int) -> str:
    return f"{n} row" if n == 1 else f"{n} rows"


def _is_root() -> bool:
    geteuid = getattr(os, "geteuid", None)
    return geteuid is not None and geteuid() == 0


def _advice(exc: Exception) -> str:
    """What a user can do about a disk error (the errno alone does not say)."""
    code = getattr(exc, "errno", None)
    if code == errno.EROFS:
        return (
            " (the file system is mounted read-only: often a damaged SD card after a power "
            "cut; check it with fsck, or point RECORD_DIRECTORY_LOCATION elsewhere)"
        )
    if code in (errno.EACCES, errno.EPERM):
        return " (give the user ECCM runs as the right to write in RECORD_DIRECTORY_LOCATION)"
    if code in (errno.ENOSPC, errno.EDQUOT):
        return " (the disk is full: lower MAX_LOCAL_STORAGE_MB or free some space)"
    return ""
