"""The recorder: samples → rotating CSV/TSV files, fsynced, closed atomically, with sidecars.

``on_sample`` runs in the OBD thread and only enqueues; one writer thread owns every file
operation, so the OBD loop never waits for the SD card. A file is written as
``x.tsv.part``, closed by an atomic rename, compressed, and finished by its sidecar
``x.tsv.gz.json`` (sidecar.py). At start, ``recover`` finishes whatever a crash or a power
cut interrupted, so no corrupt or half-closed file is ever uploaded.

The parts: rotation.py decides when a file closes, writer.py does the file operations of
one file, recovery.py finishes leftovers (at start, and after the disk failed), ledger.py
hands out names never used before. Here: ``RotatingWriter`` (no thread) does what the writer
thread does to the files, item by item: rollover, disk failures and their retries, the row
counts; ``DiskTrouble`` says so in the log; ``Recorder`` is the thread, its queue and the
listeners.
"""

from __future__ import annotations

import errno
import logging
import os
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from eccm.clock import Clock
from eccm.sample import Sample
from eccm.store.drops import QUEUE, WRITE, DropCounter, Report
from eccm.store.ledger import KEEP, LEDGER, TRIPS_KEEP, Ledger
from eccm.store.mailbox import Mailbox
from eccm.store.names import trip_ids
from eccm.store.recovery import Leftovers, RecordDirError, Recovery, fsync_quiet, leftover_stems
from eccm.store.rotation import Reason, RotationPolicy, flush_due
from eccm.store.settings import RecordSettings
from eccm.store.sidecar import StepHook
from eccm.store.writer import FileWriter, OpenFile, Sealer

if TYPE_CHECKING:
    from eccm.config import Config

__all__ = [
    "LEDGER",
    "ClosedListener",
    "DiskTrouble",
    "Recorder",
    "RotatingWriter",
    "fsync_quiet",
]

log = logging.getLogger(__name__)

_LEDGER_KEEP = KEEP  # recent names kept whole in the ledger (ledger.py)
_LEDGER_TRIPS = TRIPS_KEEP
_TICK = 0.25  # seconds: how often an idle writer checks flush, age and retries
# Seconds the writer lets rows gather once it is writing (see mailbox.py): a row reaches
# its file at most this much later, never later than FILE_FLUSH_INTERVAL asks for it to
# be on the disk (0: each row at once).
_ROW_BATCH = 0.25
_REPORT_EVERY = 60.0  # seconds between two lines about dropped rows or disk trouble
# A retry on a disk that is visibly still full or read-only costs one statvfs
# (_looks_writable), not the recovery of the files left behind.
_ROOM = 64 * 1024  # free bytes for a retry to be worth it: a row, a meta file, a sidecar

ClosedListener = Callable[[Path], None]


def _no_facts() -> Mapping[str, str]:
    return {}


class DiskTrouble:
    """Disk trouble and dropped rows in the log: the trouble said once when it starts (the
    rate permitting), then in the reports of dropped rows (at most one line per
    ``_REPORT_EVERY``, each with its exact count), and once more when it is over."""

    def __init__(
        self, clock: Clock, drops: DropCounter, queue_size: int, in_writer: Callable[[], bool]
    ) -> None:
        self._clock = clock
        self._drops = drops
        self._queue_size = queue_size
        self._in_writer = in_writer
        self.last_error: str | None = None  # None as soon as writing works again
        self._since: float | None = None  # monotonic start of the disk trouble
        self._logged = False  # its start (or its drops) was logged: log its end
        self._last_cause = ""  # the last disk error, for a report after it is over

    def error(self, message: str) -> None:
        self.last_error = message
        self._last_cause = message
        if self._since is not None:
            return
        now = self._clock.monotonic()
        self._since = now
        self._logged = False
        report = self._drops.claim(now)
        if report is None:
            return  # a line in the last minute: the next report says it, with the count
        extra = f" ({_rows(report.rows)} dropped before it)" if report.rows else ""
        log.error("%s; rows are dropped until it works again%s", message, extra)
        self._logged = True

    def works_again(self, now: float) -> None:
        if self.last_error is None:
            return
        self.last_error = None
        since, self._since = self._since, None
        if not self._logged:
            return  # nothing was said of it: its drops go into the next report
        self._logged = False
        report = self._drops.take(now)
        log.info(
            "recording works again%s: %s dropped since the last report, %d since the start",
            "" if since is None else f" after {now - since:.0f} s",
            _rows(report.rows),
            self._drops.total,
        )

    def report(self, now: float) -> None:
        """Log the rows dropped since the last line, if a line is due."""
        report = self._drops.due(now)
        if report is not None:
            self._log_report(report)

    def _log_report(self, report: Report) -> None:
        causes: list[str] = []
        if n := report.by_cause.get(WRITE, 0):
            causes.append(f"{n} not written: {self.last_error or self._last_cause}")
        if n := report.by_cause.get(QUEUE, 0):
            causes.append(
                f"{n} with the recorder queue full ({self._queue_size} rows waiting: the "
                "disk is too slow)"
            )
        span = f" in the last {report.seconds:.0f} s" if report.seconds >= 1 else ""
        log.error(
            "%s dropped%s (%s); %d since the start",
            _rows(report.rows),
            span,
            "; ".join(causes),
            self._drops.total,
        )
        if self._since is not None and self._in_writer():
            # Said during the outage, so its end is said too (the writer's state: the
            # OBD thread reports queue overflows only).
            self._logged = True


class RotatingWriter:
    """What the writer thread does to the files, one queued item at a time: no thread,
    no queue (python-can's ``BaseRotatingLogger``: ``RotationPolicy`` is its
    ``should_rollover``, ``close`` + ``FileWriter.open`` its ``do_rollover``).

    Owns the open file, the leftovers of a disk failure and their retries, and the row
    counts: a row handed to ``write`` is counted once, written or dropped.
    """

    def __init__(
        self,
        settings: RecordSettings,
        clock: Clock,
        *,
        writer: FileWriter,
        recovery: Recovery,
        drops: DropCounter,
        trouble: DiskTrouble,
        notify: ClosedListener,
    ) -> None:
        self.settings = settings
        self.clock = clock
        self._dir = settings.record_dir
        self._policy = RotationPolicy(settings.rotation_seconds, settings.rotation_max_bytes)
        self._writer = writer
        self._recovery = recovery
        self._drops = drops
        self._trouble = trouble
        self._notify = notify
        self.open: OpenFile | None = None
        self.left = Leftovers()  # files to finish once the disk works again, and when
        self.settled = False  # the row being written is counted (written or dropped)
        self.current_file: str | None = None
        self.rows_in_file = 0
        self.files_closed = 0
        self.rows_written = 0

    def idle(self) -> None:
        now = self.clock.monotonic()
        self._trouble.report(now)
        f = self.open
        if f is not None:
            if self._policy.idle(f.state(), now) is not None:
                self.close(Reason.AGE)
                return
            try:
                if f.dirty and flush_due(self.settings.flush_interval, f.last_flush, now):
                    f.sync(self.clock.monotonic())
                self._writer.complete_meta(f)
            except OSError as exc:
                self._fail(f"cannot write {f.part.name}", exc)
        elif self.left.pending and self._retry_due(now):
            self.retry_pending()

    def trip_end(self, trip_id: object) -> None:
        if self.open is not None and self.open.trip == trip_id:
            self.close(Reason.TRIP_END)

    def write(self, sample: Sample) -> None:
        now = self.clock.monotonic()
        self.settled = False
        if self.left.failing and (not self._retry_due(now) or not self.retry_pending()):
            self.drop()
            return
        cells, data = self._writer.row(sample)
        f = self.open
        reason = self._policy.before_row(
            None if f is None else f.state(), sample.trip_id, sample.layout, len(data), now
        )
        if reason is not None:
            self.close(reason)
            if self.left.failing:  # the close failed: the disk is in trouble
                self.drop()
                return
        try:
            if self.open is None:
                self.open = self._writer.open(sample, now, self.left.pending.append)
                self.current_file = self.open.part.name
                self.rows_in_file = 0
            f = self.open
            f.write(data, cells[0], sample.time_source)
            # Counted with the file: should the disk fail before the row reaches it, the
            # rows of the file that are not on the disk are moved to the dropped ones.
            self.rows_written += 1
            self.settled = True
            f.note_time_source(sample.time_source)
            self.rows_in_file = f.stats.rows
            if flush_due(self.settings.flush_interval, f.last_flush, now):
                f.sync(self.clock.monotonic())
            self._writer.complete_meta(f)
        except OSError as exc:
            where = self.open.part.name if self.open else str(self._dir)
            self._fail(f"cannot write {where}", exc)  # first: the drop is reported with it
            if not self.settled:
                self.drop()
            return
        if self._trouble.last_error is not None and not self.left.pending:
            self._trouble.works_again(now)

    def close(self, reason: Reason) -> None:
        f = self.open
        if f is None:
            return
        self.open = None
        self.current_file = None
        self.rows_in_file = 0
        try:
            path = self._writer.close(f)
        except Exception as exc:
            # Whatever step failed, recovery can take the files from where they are.
            self._account_lost(f)
            self._fail(f"cannot close {f.part.name}", exc)
            self.left.pending.append(f.stem)
            return
        if path is None:
            log.info("removed %s: no rows (%s)", f.part.name, reason)
            return
        self.files_closed += 1
        log.info("closed %s: %d rows (%s)", path.name, f.stats.rows, reason)
        self._notify(path)

    def drop(self) -> None:
        now = self.clock.monotonic()
        self._drops.add(WRITE, now)
        self.settled = True
        self._trouble.report(now)

    def retry_pending(self) -> bool:
        """Finish the files a failure left behind. True when the disk works again."""
        had_pending = len(self.left.pending)
        gone: list[str] = []
        while self.left.pending:
            stem = self.left.pending[0]
            if _gone(stem):
                gone.append(stem.name)
                self.left.pending.pop(0)
                continue
            try:
                paths = self._recovery.recover_stem(stem)
            except Exception as exc:
                self._trouble.error(f"cannot close {stem.name}: {_why(exc)}")
                self.left.failed(self.clock.monotonic())
                return False
            self.left.pending.pop(0)
            for path in paths:
                self.files_closed += 1
                self._notify(path)
        self.left.succeeded()
        if gone:
            log.warning(
                "%s left RECORD_DIRECTORY_LOCATION before it could be closed (the folder was "
                "emptied, or its drive swapped, while ECCM ran): its rows are where it was "
                "written, not in the bucket",
                ", ".join(gone),
            )
        if had_pending:
            if len(gone) < had_pending:
                log.info("the files left by the failure are closed")
            self._trouble.works_again(self.clock.monotonic())
        return True

    def _fail(self, what: str, exc: Exception) -> None:
        """The disk refused: keep the thread alive, drop the open file, retry later."""
        self._trouble.error(f"{what}: {_why(exc)}{_advice(exc)}")
        f = self.open
        if f is not None:
            self.open = None
            self.current_file = None
            self.rows_in_file = 0
            # A failing close loses the buffered tail; recovery keeps what reached the disk.
            f.abandon()
            self._account_lost(f)
            self.left.pending.append(f.stem)
        self.left.failed(self.clock.monotonic())

    def _account_lost(self, f: OpenFile) -> None:
        """Move the rows of a failed file that never reached the disk from written to
        dropped, so that rows_written is what the files hold once recovered."""
        lost = f.stats.rows - f.rows_on_disk()
        if lost > 0:
            log.debug("%s: %d rows had not reached the disk when it failed", f.part.name, lost)
            self.rows_written -= lost  # first, so written + dropped never counts a row twice
            self._drops.add(WRITE, self.clock.monotonic(), lost)

    def _retry_due(self, now: float) -> bool:
        if not self.left.due(now):
            return False
        if not self.left.failing or _looks_writable(self._dir):
            return True
        self.left.not_yet(now)
        return False


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
        settings: RecordSettings,
        clock: Clock,
        facts: Callable[[], Mapping[str, str]] | None = None,
        *,
        queue_size: int = 5_000,
        step_hook: StepHook | None = None,
    ) -> None:
        """``step_hook`` is called with each step name of the close sequence
        (sidecar.STEPS); crash tests use it to die at a chosen point."""
        self.settings = settings
        self.clock = clock
        hook: StepHook = step_hook or (lambda step: None)
        self._dir = settings.record_dir
        self._ext = settings.ext
        car, sep = settings.car, settings.separator
        self._queue: Mailbox[tuple[str, object]] = Mailbox(queue_size)
        # Seconds rows gather once the writer writes (_ROW_BATCH); read when it starts.
        # 0 writes each row as it comes: tests that hand rows over one at a time.
        self.row_batch = _ROW_BATCH
        self._listeners: list[ClosedListener] = []
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._stopped = False
        self._names = Ledger(self._dir, _LEDGER_KEEP, _LEDGER_TRIPS)
        self._drops = DropCounter(_REPORT_EVERY)
        self._trouble = DiskTrouble(
            clock, self._drops, queue_size, lambda: threading.current_thread() is self._thread
        )
        sealer = Sealer(
            car=car,
            ext=self._ext,
            compression=settings.compression,
            hook=hook,
            rows_dropped=lambda: self._drops.total,
        )
        self._recovery = Recovery(
            car=car, ext=self._ext, separator=sep, ledger=self._names, sealer=sealer
        )
        writer = FileWriter(
            directory=self._dir,
            car=car,
            ext=self._ext,
            separator=sep,
            facts=facts or _no_facts,
            hook=hook,
            ledger=self._names,
            sealer=sealer,
        )
        self._files = RotatingWriter(
            settings,
            clock,
            writer=writer,
            recovery=self._recovery,
            drops=self._drops,
            trouble=self._trouble,
            notify=self._notify,
        )

    @classmethod
    def from_config(cls, cfg: Config, clock: Clock, **options: Any) -> Recorder:
        """A recorder of ``cfg``'s recording keys (nothing of the recorder sees the rest)."""
        return cls(RecordSettings.from_config(cfg), clock, **options)

    # -- public API --------------------------------------------------------------------
    @property
    def current_file(self) -> str | None:
        return self._files.current_file

    @property
    def rows_in_file(self) -> int:
        return self._files.rows_in_file

    @property
    def files_closed(self) -> int:
        return self._files.files_closed

    @property
    def rows_written(self) -> int:
        return self._files.rows_written

    @property
    def rows_dropped(self) -> int:
        """Rows lost: queue overflow, the disk refused them, or they went with a file the
        disk failed before they reached it."""
        return self._drops.total

    @property
    def last_error(self) -> str | None:
        return self._trouble.last_error

    @property
    def queued(self) -> int:
        """Rows and requests waiting for the writer thread."""
        return len(self._queue)

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
        if not self.settings.recording:
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
            stems = leftover_stems(self._dir)
        except RecordDirError as exc:
            self._trouble.error(str(exc))
            return []
        closed: list[Path] = []
        left = self._files.left
        for stem in stems:
            try:
                closed.extend(self._recovery.recover_stem(self._dir / stem))
            except OSError as exc:
                # Retried by the writer like a failed close (a full disk may leave a file
                # without its sidecar): once the disk works again it is closed and
                # uploaded, without a restart.
                self._trouble.error(f"cannot recover {stem}: {_why(exc)}")
                left.pending.append(self._dir / stem)
                left.failed(self.clock.monotonic())
        if closed:
            log.info("recovered %d file(s) left open or half-closed", len(closed))
        for path in closed:
            self._notify(path)
        return closed

    def on_sample(self, sample: Sample) -> None:
        """Queue a row; never waits for the disk (called from the OBD thread)."""
        if self._stopped or not self.settings.recording:
            return
        if not self._queue.put_row(("sample", sample)):
            now = self.clock.monotonic()
            self._drops.add(QUEUE, now)
            self._trouble.report(now)

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
            self._files.close(Reason.REQUESTED)
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
        self._put(("stop", None))
        thread.join(timeout)
        if thread.is_alive():
            log.error("the recorder thread did not finish within %.0f s", timeout)

    # -- the ledger, for the tests of its trimming (test_chaos_time) ----------------------
    def _known_names(self) -> list[str]:
        return self._names.known_names()

    def _ledger(self) -> list[str]:
        return self._names.names()

    def _ledger_add(self, name: str) -> None:
        self._names.add(name)

    # -- writer thread -----------------------------------------------------------------
    def _put(self, item: tuple[str, object]) -> None:
        # Requests are few and never refused (rows are, when the queue is full).
        self._queue.put(item)

    def _run(self) -> None:
        files = self._files
        mailbox = self._queue
        batch = min(self.row_batch, self.settings.flush_interval)
        while True:
            item = mailbox.get(_TICK)
            kind = ""
            try:
                if item is None:
                    files.idle()
                    continue
                self._trouble.report(self.clock.monotonic())
                kind, arg = item
                if kind == "sample":
                    assert isinstance(arg, Sample)
                    files.write(arg)
                    if batch > 0 and not mailbox:
                        mailbox.nap(batch)
                elif kind == "trip_end":
                    files.trip_end(arg)
                elif kind == "rotate":
                    assert isinstance(arg, threading.Event)
                    files.close(Reason.REQUESTED)
                    arg.set()
                elif kind == "stop":
                    files.close(Reason.STOP)
                    if files.left.pending:
                        files.retry_pending()
                    return
            except Exception as exc:
                # Never let one bad row or a bug in a listener end the recording.
                log.exception("recorder error")
                self._trouble.last_error = f"internal error: {exc}"
                if kind == "sample" and not files.settled:
                    files.drop()

    def _notify(self, path: Path) -> None:
        with self._lock:
            listeners = list(self._listeners)
        for fn in listeners:
            try:
                fn(path)
            except Exception:
                log.exception("closed-file listener %r failed for %s", fn, path.name)


def used_trip_ids(directory: Path, car: str, ext: str) -> frozenset[str]:
    """The trip ids any file of ``car`` ever carried: data files, sidecars, parts and trip
    summaries in ``directory`` and under uploaded/, and the ledger of sequence numbers.

    Read once at start-up, before any thread writes or moves a file (the uploader moves
    files to uploaded/ between two directory listings); every trip id after that is
    handed out by this run's trip segmenter, which keeps them.
    """
    try:
        names = Ledger(directory, _LEDGER_KEEP, _LEDGER_TRIPS).known_names()
    except OSError as exc:
        # The recorder reports an unusable directory itself (and retries); the daemon
        # still starts, with trip ids unique within this run.
        # A folder that is not there (it cannot be made) is the recorder's ERROR line.
        level = logging.WARNING if os.path.isdir(directory) else logging.DEBUG
        log.log(level, "could not read the file names in %s: %s", directory, _why(exc))
        return frozenset()
    return frozenset(trip_ids(car, names))


def _gone(stem: Path) -> bool:
    """No file of ``stem`` is left in its folder, or the folder itself is gone: it was
    emptied, or its drive pulled or swapped."""
    try:
        return not any(name.startswith(stem.name) for name in os.listdir(stem.parent))
    except FileNotFoundError:
        return True
    except OSError:
        return False  # not readable now: recovery says why


def _why(exc: BaseException) -> str:
    return str(getattr(exc, "strerror", None) or exc)


def _rows(n: int) -> str:
    return f"{n} row" if n == 1 else f"{n} rows"


def _looks_writable(directory: Path) -> bool:
    """False when a retry would surely fail again: the file system is read-only, or it
    has less than _ROOM free. Anything else is for the retry itself to find out."""
    try:
        st = os.statvfs(directory)
    except (OSError, AttributeError):
        return True  # gone (a USB stick): the retry creates the folder or says why
    if st.f_flag & getattr(os, "ST_RDONLY", 1):
        return False
    if st.f_blocks == 0 or st.f_frsize == 0:
        return True  # a file system that does not tell
    # root may write into the blocks ext4 reserves for it (f_bfree), others not.
    blocks = st.f_bfree if _is_root() else st.f_bavail
    return blocks * st.f_frsize >= _ROOM


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
