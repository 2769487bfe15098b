"""One upload run: the disk budget around it, the server's facts once, every due file.

Files go up a few at a time (``UPLOAD_WORKERS``): a cellular link is bound by round trips
(PUT, HEAD, PUT of the sidecar per file), and a backlog after days offline drains several
times faster. A problem of one file keeps that file and the run goes on; a problem of the
network or the configuration (eccm/upload/outcome.py's ``aborts_run``) ends the run.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from eccm.clock import Clock
from eccm.crypto.encrypt import seal_pending
from eccm.store.budget import MIB, list_files
from eccm.store.sidecar import StepHook
from eccm.upload.files import FileSender
from eccm.upload.keys import Job, plan
from eccm.upload.outcome import LOGGER_NAME, FileKept, UploadReport, aborts_run
from eccm.upload.probe import probe_conditional_create
from eccm.upload.s3client import (
    DEFAULT_TIMEOUTS,
    Failure,
    NotS3Answer,
    S3Timeouts,
    build_client,
    classify,
)
from eccm.upload.settings import UploadSettings
from eccm.upload.steps import no_hook
from eccm.upload.transfer import ObjectStore

log = logging.getLogger(LOGGER_NAME)
_T = TypeVar("_T")

UPLOAD_WORKERS = 4
MULTIPART_THRESHOLD = 64 * MIB
PART_SIZE = 16 * MIB


class RunAborted(Exception):
    def __init__(self, failure: Failure) -> None:
        super().__init__(failure.message)
        self.failure = failure


def queue_length(settings: UploadSettings) -> int:
    """Closed files (and trip summaries) waiting for upload, sidecars to finish included."""
    return plan(list_files(settings.record_dir), encrypted=bool(settings.recipients)).waiting


class Runner:
    """Does runs, one at a time (the caller serialises them); keeps what a run learns about
    the server (its client, whether it honours conditional create) for the next."""

    def __init__(
        self,
        settings: UploadSettings,
        clock: Clock,
        *,
        timeouts: S3Timeouts = DEFAULT_TIMEOUTS,
        multipart_threshold: int = MULTIPART_THRESHOLD,
        part_size: int = PART_SIZE,
        workers: int = UPLOAD_WORKERS,
        step_hook: StepHook | None = None,
        conditional: bool | None = None,
    ) -> None:
        self._s = settings
        self._clock = clock
        self._timeouts = timeouts
        self._workers = max(1, workers)
        self._hook: StepHook = step_hook or no_hook
        self._watch_body = step_hook is not None
        self._multipart_threshold = multipart_threshold
        self._part_size = part_size
        self._conditional = conditional
        self._client: Any = None
        self._store: ObjectStore | None = None
        # Abort multipart uploads a crash left, at the next run that talks to the server.
        self.sweep = False

    @property
    def conditional(self) -> bool | None:
        """Does the server honour If-None-Match: *? None until a run has asked."""
        return self._store.conditional if self._store is not None else self._conditional

    def client(self) -> Any:
        """The boto3 client, built at the first call (boto3 takes a while to import)."""
        if self._client is None:
            self._client = build_client(self._s, self._timeouts)
        return self._client

    def _classify(self, exc: BaseException) -> Failure:
        return classify(exc, self._s, self._timeouts)

    def run(
        self,
        on_file: Callable[[str], None] | None,
        out_of_time: Callable[[], bool],
        on_verified: Callable[[], None],
    ) -> tuple[UploadReport, Failure | None]:
        """Every closed file now. ``on_file(name)`` after each file, ``on_verified()`` for
        each one verified in the bucket (under the run's lock: worker threads call it)."""
        report = UploadReport()
        failure: Failure | None = None
        try:
            # Files this run may send are not evicted before it has tried.
            self._keep_disk(report, evict_pending=not self._s.enabled)
            if self._s.enabled:
                self._upload_all(report, on_file, out_of_time, on_verified)
        except RunAborted as exc:
            failure = exc.failure
        except Exception as exc:
            # A bug, not a foreseeable problem: the traceback goes to DEBUG, the user gets
            # one line, and the thread lives on to retry.
            log.debug("unexpected error in the upload run", exc_info=True)
            failure = Failure(
                "other",
                True,
                f"unexpected error ({type(exc).__name__}: {exc}); files are kept and retried",
            )
        finally:
            self._keep_disk(report, evict_pending=True)
            report.remaining = queue_length(self._s)
        return report, failure

    def _keep_disk(self, report: UploadReport, *, evict_pending: bool) -> None:
        if self._s.keep_disk is None:
            return
        try:
            report.disk = self._s.keep_disk(self._clock, evict_pending=evict_pending)
        except OSError as exc:
            log.error("cannot keep the disk budget of %s: %s", self._s.record_dir, exc)

    def _ready_store(self) -> ObjectStore:
        """The store, once the server's facts are known; RunAborted when it cannot say."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            if self._store is None:
                self._store = ObjectStore(
                    self.client(),
                    self._s.bucket,
                    conditional=self._conditional,
                    multipart_threshold=self._multipart_threshold,
                    part_size=self._part_size,
                    hook=self._hook,
                    watch_body=self._watch_body,
                )
            store = self._store
            if store.conditional is None:
                store.conditional = probe_conditional_create(store, self._s.probe_key)
            if self.sweep or store.stale_parts:
                found = store.abort_stale_multipart(self._s.car_prefix, self._classify)
                store.stale_parts = False
                # A sweep that found some sweeps again at the next run (an abort may have
                # to be repeated, see abort_stale_multipart); one that found none ends it.
                self.sweep = found > 0
        except (BotoCoreError, ClientError, NotS3Answer) as exc:
            raise RunAborted(self._classify(exc)) from exc
        return store

    def _upload_all(
        self,
        report: UploadReport,
        on_file: Callable[[str], None] | None,
        out_of_time: Callable[[], bool],
        on_verified: Callable[[], None],
    ) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        if self._s.recipients:
            seal_pending(self._s.record_dir, self._s.recipients)
        jobs = plan(list_files(self._s.record_dir), encrypted=bool(self._s.recipients)).jobs()
        if not jobs:
            return  # idle: no request at all, so an offline car logs nothing
        store = self._ready_store()
        lock = threading.Lock()  # the report, and the caller's callbacks

        def tally(sent: Sequence[int]) -> None:
            with lock:
                report.verified(sent)
                on_verified()

        sender = FileSender(self._s, store, self._hook, tally)
        aborted: list[RunAborted] = []

        def one(job: Job) -> None:
            if aborted:
                return
            if out_of_time():
                report.interrupted = True
                return
            kept: str | None = None
            try:
                sender.send(job)
            except FileKept as exc:
                kept = str(exc)
            # Before OSError: botocore's timeout and TLS errors are OSErrors too, and they
            # are the network's fault, not this file's.
            except (BotoCoreError, ClientError, NotS3Answer) as exc:
                failure = self._classify(exc)
                if aborts_run(failure):
                    with lock:
                        aborted.append(RunAborted(failure))
                    return
                kept = f"{job.name.name}: {failure.message}"
            except OSError as exc:
                kept = f"{job.name.name}: local file error ({exc}); kept"
            with lock:
                if kept is not None:
                    report.kept.append(kept)
                else:
                    report.cars.add(job.name.car)
                if on_file is not None:
                    on_file(job.name.name)

        in_parallel(one, jobs, self._workers)
        if aborted:
            raise aborted[0]


def in_parallel(fn: Callable[[_T], None], items: Sequence[_T], workers: int) -> None:
    """Run ``fn`` over ``items`` on up to ``workers`` threads; re-raise the first error.

    Daemon threads rather than a ThreadPoolExecutor, whose threads the interpreter joins at
    exit: a worker stuck on a hung server must not hold up the shutdown of ``eccm run``
    after stop() has given up waiting.
    """
    if workers <= 1 or len(items) <= 1:
        for item in items:
            fn(item)
        return
    pending: queue.SimpleQueue[_T] = queue.SimpleQueue()
    for item in items:
        pending.put(item)
    errors: list[BaseException] = []

    def work() -> None:
        while not errors:
            try:
                item = pending.get_nowait()
            except queue.Empty:
                return
            try:
                fn(item)
            except BaseException as exc:
                errors.append(exc)
                return

    threads = [
        threading.Thread(target=work, name=f"eccm-upload-{i}", daemon=True)
        for i in range(min(workers, len(items)))
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
