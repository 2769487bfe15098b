"""Closed files → S3: upload, verify, then delete or archive; keep the disk budget.

Every closed file reaches the bucket once, verified, through outages and power cuts:

- the key depends only on the file (name and first row), so a retry never makes a second
  copy under another name;
- each PUT carries Content-MD5 (the server checks the bytes) and the file's sha256 as user
  metadata; where the server honours ``If-None-Match: *`` (probed once) an existing object
  is never overwritten, elsewhere a HEAD before the PUT does the same job;
- a HEAD confirms size and sha256 of the data object before the local file is deleted
  or moved to ``uploaded/`` (the sidecar, small, is confirmed by the server's Content-MD5
  check and the MD5 ETag it answers); the data object goes first, its sidecar second (a
  data object with a sidecar is complete);
- a SIGKILL anywhere leaves the local file in place until the bucket holds a verified
  copy; the next run finds the object already there (412 or HEAD) and finishes the job;
- another eccm process on the same folder (`eccm upload` beside the daemon) may archive
  any file at any moment: a data file gone mid-way was verified by that process, and this
  run finishes its sidecar (after a HEAD) instead of reporting it kept or leaving it.

The parts, each in its module of eccm/upload/:

- ``keys``: which files are due, in which order, under which S3 key (pure);
- ``schedule``: when the next run is due, backoff after failures (pure, injected clock);
- ``verify``: what "verified in the bucket" means, what the server's answers say (pure);
- ``outcome``: the run's report, which failures end a run, how loudly to log (pure);
- ``transfer``: one object sent (PUT or multipart) and proven (HEAD);
- ``files``: one local file sent, then archived; files that changed or vanished;
- ``probe``: whether the server honours conditional create, asked once;
- ``run``: one run over every due file, on a few worker threads;
- ``uploader`` (here): the thread, its schedule, and the status STATUS reads.

The thread asks the ``UploadSchedule`` when the next run is due and waits on its wake event
until then; recording never waits for it (``wake()`` only sets an event). It prints nothing:
``run_once`` reports each file through ``on_file`` and returns an ``UploadReport``; ``eccm
upload`` (eccm/cli.py) turns those into a progress bar and its messages.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from typing import Any

from eccm.clock import Clock
from eccm.config import Config
from eccm.sample import iso_utc
from eccm.store.sidecar import StepHook
from eccm.upload.outcome import LOGGER_NAME, OutcomeLog, UploadReport, human
from eccm.upload.run import (
    MULTIPART_THRESHOLD,
    PART_SIZE,
    UPLOAD_WORKERS,
    Runner,
    queue_length,
)
from eccm.upload.s3client import DEFAULT_TIMEOUTS, Failure, S3Timeouts
from eccm.upload.schedule import UploadSchedule
from eccm.upload.settings import UploadSettings

log = logging.getLogger(LOGGER_NAME)

# The wait is on a threading.Event (real time) while the due time is on the injected clock:
# the clock is read again at least this often, so a clock other than the system's is followed.
_MAX_WAIT = 5.0


class Uploader:
    """The upload's thread and its status: runs when the schedule says, on ``wake()``, and
    once more at ``stop()``; ``run_once()`` for `eccm upload`. Runs never overlap."""

    @classmethod
    def from_config(cls, cfg: Config, clock: Clock, **options: Any) -> Uploader:
        """An uploader of ``cfg``'s upload keys (nothing of the upload sees the rest)."""
        return cls(UploadSettings.from_config(cfg), clock, **options)

    def __init__(
        self,
        settings: UploadSettings,
        clock: Clock,
        *,
        timeouts: S3Timeouts = DEFAULT_TIMEOUTS,
        multipart_threshold: int = MULTIPART_THRESHOLD,
        part_size: int = PART_SIZE,
        workers: int = UPLOAD_WORKERS,
        log_outcome: bool = True,
        step_hook: StepHook | None = None,
        conditional: bool | None = None,
    ) -> None:
        """``step_hook`` is called with each step name of eccm.upload.steps.STEPS as a
        file's upload gets there (in the worker thread that uploads it); the crash tests
        SIGKILL there. ``conditional``: whether the server honours If-None-Match, None to
        ask it once. ``log_outcome=False``: the caller reports each run's outcome itself."""
        self.settings = settings
        self._clock = clock
        self._runner = Runner(
            settings,
            clock,
            timeouts=timeouts,
            multipart_threshold=multipart_threshold,
            part_size=part_size,
            workers=workers,
            step_hook=step_hook,
            conditional=conditional,
        )
        self._outcome_log = OutcomeLog(loud=log_outcome)
        self._run_lock = threading.Lock()
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._stop_deadline = float("inf")
        self._thread: threading.Thread | None = None
        # Swapped under _schedule_lock: runs conclude in the caller's thread (run_once) as
        # well as in the uploader's.
        self._schedule_lock = threading.Lock()
        self._schedule = UploadSchedule.starting(
            settings.sync_interval, settings.sync_jitter, clock.monotonic()
        )
        # Status, read by STATUS on the socket.
        self.last_upload: str | None = None
        self.last_error: str | None = None
        self.objects_uploaded = 0

    # ---- status -------------------------------------------------------------------

    @property
    def consecutive_failures(self) -> int:
        """Failed runs since the last good one (0 when the last run went through)."""
        return self._schedule.consecutive_failures

    def queue_length(self) -> int:
        """Closed files (and trip summaries) waiting for upload, including those whose
        data object is verified and whose sidecar still has to go up."""
        return queue_length(self.settings)

    @property
    def conditional(self) -> bool | None:
        """Does the server honour If-None-Match: *? None until a run has asked."""
        return self._runner.conditional

    def client(self) -> Any:
        """The boto3 client of the runs, built at the first call."""
        return self._runner.client()

    # ---- thread -------------------------------------------------------------------

    def start(self) -> None:
        """Run in a thread of its own: now, then every S3_SYNC_INTERVAL + jitter."""
        if self._thread is not None:
            return
        self._stopping.clear()
        self._runner.sweep = True
        self._thread = threading.Thread(target=self._loop, name="eccm-uploader", daemon=True)
        self._thread.start()

    def wake(self) -> None:
        """Upload now (non-blocking)."""
        self._wake.set()

    def stop(self, timeout: float = 10.0) -> None:
        """One last attempt bounded by ``timeout`` seconds, then return."""
        thread = self._thread
        if thread is None:
            return
        # Real time, not the injected clock: this bound is a promise to the process
        # that is shutting down.
        self._stop_deadline = time.monotonic() + timeout
        self._stopping.set()
        self._wake.set()
        thread.join(timeout)
        if thread.is_alive():
            log.warning(
                "upload still busy after %g s at shutdown; the remaining files are sent at "
                "the next start",
                timeout,
            )
        self._thread = None

    def _reschedule(self, event: Callable[[UploadSchedule, float], UploadSchedule]) -> None:
        with self._schedule_lock:
            self._schedule = event(self._schedule, self._clock.monotonic())

    def _loop(self) -> None:
        self._reschedule(UploadSchedule.woken)  # at once
        while not self._stopping.is_set():
            timeout = min(self._schedule.wait(self._clock.monotonic()), _MAX_WAIT)
            if self._wake.wait(timeout):
                self._wake.clear()
                if self._stopping.is_set():
                    break
                self._reschedule(UploadSchedule.woken)
            if not self._schedule.is_due(self._clock.monotonic()):
                continue
            try:
                self._locked_run(None)
            except Exception:
                log.exception("upload run failed unexpectedly; retrying at the next run")
                self._reschedule(UploadSchedule.crashed)
            else:
                with self._schedule_lock:
                    self._schedule = self._schedule.planned(
                        self._clock.monotonic(), random.random()
                    )
        try:
            self._locked_run(None)
        except Exception:
            log.exception("last upload attempt failed unexpectedly")

    def _out_of_time(self) -> bool:
        return self._stopping.is_set() and time.monotonic() >= self._stop_deadline

    # ---- one run ------------------------------------------------------------------

    def run_once(self, *, on_file: Callable[[str], None] | None = None) -> UploadReport:
        """Upload every closed file now (synchronous); ``on_file(name)`` after each file."""
        return self._locked_run(on_file)

    def _locked_run(self, on_file: Callable[[str], None] | None) -> UploadReport:
        with self._run_lock:
            report, failure = self._runner.run(on_file, self._out_of_time, self._verified)
            self._conclude(report, failure)
            return report

    def _verified(self) -> None:
        """One more file verified in the bucket (called under the run's lock)."""
        self.objects_uploaded += 1
        self.last_upload = iso_utc(self._clock.time())

    def _conclude(self, report: UploadReport, failure: Failure | None) -> None:
        if failure is not None:
            report.error = failure.message
        with self._schedule_lock:
            self._schedule = self._schedule.recorded(failed=failure is not None)
        message = report.problem()
        self.last_error = message
        transient = failure is not None and failure.transient
        line = self._outcome_log.entry(message, transient=transient, now=self._clock.monotonic())
        if line is not None:
            log.log(line[0], "upload: %s", line[1])
        if report.uploaded:
            log.info(
                "uploaded %d file(s) (%s sent) to %s; %d waiting",
                report.uploaded,
                human(report.bytes_sent),
                self.settings.destinations(report.cars),
                report.remaining,
            )
