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

The uploader runs in its own thread, which asks an ``UploadSchedule`` (eccm/upload/schedule.py,
pure, on the injected clock) when the next run is due and waits on its wake event until then;
recording never waits for it (``wake()`` only sets an event). It prints nothing: ``run_once`` reports each
file through ``on_file`` and returns an ``UploadReport``; ``eccm upload`` (eccm/cli.py) turns
those into a progress bar and its messages.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import io
import logging
import os
import queue
import random
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from eccm.clock import Clock
from eccm.config import Config
from eccm.errors import UploadError
from eccm.sample import iso_utc
from eccm.store.budget import MIB, DiskReport, enforce, list_files
from eccm.store.names import UPLOADED_DIR, DataName, SummaryName
from eccm.store.sidecar import StepHook
from eccm.upload.keys import (
    car_prefix,
    content_type,
    object_key,
    parse_sidecar,
    partition_date,
    plan,
    probe_key,
    sidecar_key,
)
from eccm.upload.s3client import (
    DEFAULT_TIMEOUTS,
    Failure,
    S3Timeouts,
    build_client,
    classify,
    error_code,
    http_status,
)
from eccm.upload.schedule import UploadSchedule

log = logging.getLogger(__name__)
_T = TypeVar("_T")

# Files in flight at once: a cellular link is bound by round trips (PUT, HEAD, PUT of the
# sidecar per file), and a backlog after days offline drains several times faster.
UPLOAD_WORKERS = 4
MULTIPART_THRESHOLD = 64 * MIB
PART_SIZE = 16 * MIB
_MAX_PARTS = 10_000
_QUIET_REPEAT = 60.0  # the same failure again within this many seconds is logged at DEBUG
# The wait is on a threading.Event (real time) while the due time is on the injected clock:
# the clock is read again at least this often, so a clock other than the system's is followed.
_MAX_WAIT = 5.0
_PROBE_BODY = b"eccm conditional-create probe: this object may be left in place\n"


# Points in the upload of a data file (or trip summary) where a step hook is called: the
# crash tests (tests/uploader_run.py) SIGKILL the process there, as a power cut would.
BEFORE_PUT = "before_put"  # file read and checked against its sidecar, no PUT sent yet
DURING_PUT = "during_put"  # half of the body read by a single PUT (not multipart)
AFTER_PUT = "after_put"  # PUT answered, the object not yet verified by HEAD
BEFORE_DELETE = "before_delete"  # data object verified, the local data file still here
AFTER_DELETE_DATA = "after_delete_data"  # data file archived, its sidecar not yet sent
STEPS = (BEFORE_PUT, DURING_PUT, AFTER_PUT, BEFORE_DELETE, AFTER_DELETE_DATA)


def _no_hook(step: str) -> None:
    return None


class _HalfwayBody(io.FileIO):
    """A PUT body that calls ``on_half()`` once, when half of the file has been read."""

    def __init__(self, path: Path, size: int, on_half: Callable[[], None]) -> None:
        super().__init__(path, "rb")
        self._half = max(1, size // 2)
        self._on_half: Callable[[], None] | None = on_half

    def read(self, size: int | None = -1) -> bytes:
        data = super().read(size)
        if self._on_half is not None and self.tell() >= self._half:
            on_half, self._on_half = self._on_half, None
            on_half()
        return data


@dataclass(frozen=True)
class Digest:
    size: int
    sha256: str
    md5: bytes

    @property
    def content_md5(self) -> str:
        return base64.b64encode(self.md5).decode("ascii")


def digest_bytes(data: bytes) -> Digest:
    return Digest(len(data), hashlib.sha256(data).hexdigest(), hashlib.md5(data).digest())


def digest_file(path: Path) -> Digest:
    sha = hashlib.sha256()
    md5 = hashlib.md5()
    size = 0
    with path.open("rb") as f:
        while chunk := f.read(MIB):
            sha.update(chunk)
            md5.update(chunk)
            size += len(chunk)
    return Digest(size, sha.hexdigest(), md5.digest())


@dataclass
class UploadReport:
    uploaded: int = 0  # files now verified in the bucket (sent now, or found there)
    already_present: int = 0  # of which the bucket already held (a retry after a crash)
    bytes_sent: int = 0
    kept: list[str] = field(default_factory=list)  # files kept for a reason of their own
    remaining: int = 0  # closed files still waiting after the run
    error: str | None = None  # why the run stopped, as logged
    interrupted: bool = False  # out of time (the bounded last attempt at stop)
    disk: DiskReport | None = None

    @property
    def ok(self) -> bool:
        return self.error is None and not self.kept and self.remaining == 0


class _RunAborted(Exception):
    def __init__(self, failure: Failure) -> None:
        super().__init__(failure.message)
        self.failure = failure


class _FileKept(Exception):
    """A problem of one file: it stays local, the run goes on with the others."""


class Uploader:
    def __init__(
        self,
        cfg: Config,
        clock: Clock,
        *,
        timeouts: S3Timeouts = DEFAULT_TIMEOUTS,
        multipart_threshold: int = MULTIPART_THRESHOLD,
        part_size: int = PART_SIZE,
        workers: int = UPLOAD_WORKERS,
        log_outcome: bool = True,
        step_hook: StepHook | None = None,
    ) -> None:
        """``step_hook`` is called with each step name of STEPS as a file's upload gets
        there (in the worker thread that uploads it); the crash tests SIGKILL there."""
        self._cfg = cfg
        self._clock = clock
        self._timeouts = timeouts
        self._multipart_threshold = multipart_threshold
        self._part_size = part_size
        self._workers = max(1, workers)
        # False: the caller reports each run's outcome itself (`eccm upload` prints it), so
        # the log's copy goes to DEBUG instead of interleaving with the progress bar.
        self._log_outcome = log_outcome
        self._hook: StepHook = step_hook or _no_hook
        # The body is watched for DURING_PUT only when somebody listens: a daemon's PUT
        # reads a plain file.
        self._watch_body = step_hook is not None
        self._stats_lock = threading.Lock()
        self._dir = cfg.record_dir
        self._client: Any = None
        self._conditional: bool | None = None  # does the server honour If-None-Match: *?
        self._abort_stale = False
        self._run_lock = threading.Lock()
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._stop_deadline = float("inf")
        self._thread: threading.Thread | None = None
        # Swapped under _schedule_lock: runs conclude in the caller's thread (run_once) as
        # well as in the uploader's.
        self._schedule_lock = threading.Lock()
        self._schedule = UploadSchedule.starting(
            cfg.s3_sync_interval, cfg.s3_sync_jitter, clock.monotonic()
        )
        self._last_logged: tuple[str, float] | None = None
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
        todo = plan(list_files(self._dir))
        return len(todo.ready) + len(todo.summaries) + len(todo.orphan_sidecars)

    # ---- thread -------------------------------------------------------------------

    def start(self) -> None:
        """Run in a thread of its own: now, then every S3_SYNC_INTERVAL + jitter."""
        if self._thread is not None:
            return
        self._stopping.clear()
        self._abort_stale = True
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

    def _loop(self) -> None:
        with self._schedule_lock:
            self._schedule = self._schedule.woken(self._clock.monotonic())  # at once
        while not self._stopping.is_set():
            timeout = min(self._schedule.wait(self._clock.monotonic()), _MAX_WAIT)
            if self._wake.wait(timeout):
                self._wake.clear()
                if self._stopping.is_set():
                    break
                with self._schedule_lock:
                    self._schedule = self._schedule.woken(self._clock.monotonic())
            if not self._schedule.is_due(self._clock.monotonic()):
                continue
            try:
                self._locked_run(None)
            except Exception:
                log.exception("upload run failed unexpectedly; retrying at the next run")
                with self._schedule_lock:
                    self._schedule = self._schedule.crashed(self._clock.monotonic())
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
            return self._run(on_file)

    def _run(self, on_file: Callable[[str], None] | None) -> UploadReport:
        report = UploadReport()
        failure: Failure | None = None
        try:
            # Files this run may send are not evicted before it has tried.
            self._keep_disk(report, evict_pending=not self._cfg.s3_enabled)
            if self._cfg.s3_enabled:
                self._upload_all(report, on_file)
        except _RunAborted as exc:
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
            self._keep_disk(report)
            report.remaining = self.queue_length()
        self._conclude(report, failure)
        return report

    def _keep_disk(self, report: UploadReport, *, evict_pending: bool = True) -> None:
        try:
            report.disk = enforce(self._cfg, self._clock, evict_pending=evict_pending)
        except OSError as exc:
            log.error("cannot keep the disk budget of %s: %s", self._dir, exc)

    def _get_client(self) -> Any:
        if self._client is None:
            self._client = build_client(self._cfg, self._timeouts)
        return self._client

    def _classify(self, exc: BaseException) -> Failure:
        return classify(exc, self._cfg, self._timeouts)

    def _upload_all(self, report: UploadReport, on_file: Callable[[str], None] | None) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        todo = plan(list_files(self._dir))
        if not todo.ready and not todo.orphan_sidecars and not todo.summaries:
            return  # idle: no request at all, so an offline car logs nothing
        try:
            client = self._get_client()
            if self._conditional is None:
                self._conditional = self._probe(client)
            if self._abort_stale:
                self._abort_stale_multipart(client)
                self._abort_stale = False
        except (BotoCoreError, ClientError) as exc:
            raise _RunAborted(self._classify(exc)) from exc

        # Orphan sidecars first: each belongs to a file that is already in the bucket.
        jobs: list[tuple[DataName | SummaryName, bool]] = [
            (dn, True) for dn in todo.orphan_sidecars
        ]
        jobs += [(dn, False) for dn in todo.ready]
        jobs += [(sn, False) for sn in todo.summaries]
        aborted: list[_RunAborted] = []

        def one(job: tuple[DataName | SummaryName, bool]) -> None:
            dn, orphan = job
            if aborted:
                return
            if self._out_of_time():
                report.interrupted = True
                return
            kept: str | None = None
            try:
                if isinstance(dn, SummaryName):
                    self._upload_summary(client, dn, report)
                elif orphan:
                    self._finish_orphan(client, dn, report)
                else:
                    self._upload_file(client, dn, report)
            except _FileKept as exc:
                kept = str(exc)
            # Before OSError: botocore's timeout and TLS errors are OSErrors too, and they
            # are the network's fault, not this file's.
            except (BotoCoreError, ClientError) as exc:
                failure = self._classify(exc)
                if failure.kind != "other" or failure.transient:
                    with self._stats_lock:
                        aborted.append(_RunAborted(failure))
                    return
                # An answer about this file only (e.g. too large for the server): the
                # other files still have their chance.
                kept = f"{dn.name}: {failure.message}"
            except OSError as exc:
                kept = f"{dn.name}: local file error ({exc}); kept"
            with self._stats_lock:
                if kept is not None:
                    report.kept.append(kept)
                if on_file is not None:
                    on_file(dn.name)

        _in_parallel(one, jobs, self._workers)
        if aborted:
            raise aborted[0]

    # ---- one file -----------------------------------------------------------------

    def _key_for(self, dn: DataName, first_time: str | None) -> str:
        return object_key(self._cfg.s3_key_prefix, dn.car, partition_date(first_time, dn), dn.name)

    def _upload_file(self, client: Any, dn: DataName, report: UploadReport) -> None:
        # Another eccm process (`eccm upload` beside the daemon) may work on the same file
        # at the same time and archive it at any moment. It archives the data file only
        # once its object is verified, and the sidecar after the data file: a data file
        # gone while its sidecar is still read means "data object in the bucket", and
        # this run finishes the sidecar itself (HEAD first) rather than leave the file
        # half done for a run that may not come, or call it kept.
        data_path = self._dir / dn.name
        side_path = self._dir / dn.sidecar
        try:
            side_raw = side_path.read_bytes()
        except FileNotFoundError:
            return  # both archived meanwhile (the sidecar goes last): nothing left to do
        except OSError as exc:
            raise _FileKept(f"{dn.name}: cannot be read ({exc})") from exc
        try:
            digest = digest_file(data_path)
        except FileNotFoundError:
            self._finish_sidecar(client, dn, side_raw, report)
            return
        except OSError as exc:
            raise _FileKept(f"{dn.name}: cannot be read ({exc})") from exc
        try:
            info = parse_sidecar(side_raw, dn.name)
        except UploadError as exc:
            raise _FileKept(f"{dn.name}: {exc}; kept, not uploaded") from exc
        if info.sha256 != digest.sha256 or info.size != digest.size:
            raise _FileKept(
                f"{dn.name}: its content does not match its sidecar (sha256/size; a damaged "
                "storage card?); kept, not uploaded"
            )
        key = self._key_for(dn, info.first_time)
        try:
            sent_data = self._ensure(client, key, data_path, digest, dn.name)
        except FileNotFoundError:
            # Archived by the other process between our digest and the PUT's open (the
            # only file opened in there): as above.
            self._finish_sidecar(client, dn, side_raw, report)
            return
        # The data object is verified: its local copy goes now, before the sidecar's PUT.
        # What is left if that PUT fails is an orphan sidecar, which always means "data
        # verified in the bucket" and is finished by a later run; the disk budget never
        # evicts one. Were both kept, a long outage could make the budget evict the pair
        # and leave the bucket a data object without its sidecar for good.
        self._hook(BEFORE_DELETE)
        self._archive(data_path)
        self._hook(AFTER_DELETE_DATA)
        sent_side = self._ensure(
            client, sidecar_key(key), side_raw, digest_bytes(side_raw), dn.name
        )
        self._archive(side_path)
        with self._stats_lock:
            report.uploaded += 1
            self.objects_uploaded += 1
            self.last_upload = iso_utc(self._clock.time())
            if sent_data:
                report.bytes_sent += digest.size
            if sent_side:
                report.bytes_sent += len(side_raw)
            if not sent_data and not sent_side:
                report.already_present += 1

    def _upload_summary(self, client: Any, sn: SummaryName, report: UploadReport) -> None:
        """A trip summary: complete once it exists; verified by HEAD like a data file."""
        path = self._dir / sn.name
        try:
            digest = digest_file(path)
        except FileNotFoundError:
            return  # archived meanwhile by another eccm process
        except OSError as exc:
            raise _FileKept(f"{sn.name}: cannot be read ({exc})") from exc
        key = object_key(self._cfg.s3_key_prefix, sn.car, sn.trip_date, sn.name)
        try:
            sent = self._ensure(client, key, path, digest, sn.name)
        except FileNotFoundError:
            return  # archived by another eccm process between the digest and the PUT
        self._archive(path)
        with self._stats_lock:
            report.uploaded += 1
            self.objects_uploaded += 1
            self.last_upload = iso_utc(self._clock.time())
            if sent:
                report.bytes_sent += digest.size
            else:
                report.already_present += 1

    def _finish_orphan(self, client: Any, dn: DataName, report: UploadReport) -> None:
        """A sidecar whose data file is verified in the bucket and archived (the sidecar's
        PUT failed, or a crash came in between): finish the job."""
        side_path = self._dir / dn.sidecar
        try:
            side_raw = side_path.read_bytes()
        except FileNotFoundError:
            return  # finished meanwhile by another eccm process
        except OSError as exc:
            raise _FileKept(f"{dn.sidecar}: cannot be read ({exc})") from exc
        self._finish_sidecar(client, dn, side_raw, report)

    def _finish_sidecar(
        self, client: Any, dn: DataName, side_raw: bytes, report: UploadReport
    ) -> None:
        """Put the sidecar ``side_raw`` once the bucket confirms its data object, then
        archive it: what is left of a file whose data file is no longer here."""
        side_path = self._dir / dn.sidecar
        try:
            info = parse_sidecar(side_raw, dn.name)
        except UploadError as exc:
            raise _FileKept(f"{dn.sidecar}: {exc}; its data file is missing") from exc
        key = self._key_for(dn, info.first_time)
        if self._remote_state(client, key, info.size, info.sha256) != "same":
            raise _FileKept(
                f"{dn.sidecar}: its data file is missing here and not in the bucket; kept"
            )
        sent = self._ensure(client, sidecar_key(key), side_raw, digest_bytes(side_raw), dn.name)
        self._archive(side_path)
        with self._stats_lock:
            report.uploaded += 1
            self.objects_uploaded += 1
            self.last_upload = iso_utc(self._clock.time())
            if sent:
                report.bytes_sent += len(side_raw)
            else:
                report.already_present += 1

    def _ensure(
        self, client: Any, key: str, source: Path | bytes, digest: Digest, name: str
    ) -> bool:
        """Make ``key`` hold exactly ``source``; True if sent now, False if already there."""
        from botocore.exceptions import ClientError

        bucket = self._cfg.s3_server_bucket
        etag = ""
        if self._conditional:
            try:
                etag = self._put(client, key, source, digest, conditional=True)
            except ClientError as exc:
                if http_status(exc) != 412 and error_code(exc) != "PreconditionFailed":
                    raise
                state = self._remote_state(client, key, digest.size, digest.sha256)
                if state == "same":
                    return False
                raise self._conflict(bucket, key, name, state) from exc
        else:
            state = self._remote_state(client, key, digest.size, digest.sha256)
            if state == "same":
                return False
            if state == "different":
                raise self._conflict(bucket, key, name, state)
            etag = self._put(client, key, source, digest, conditional=False)
        if isinstance(source, Path):
            self._hook(AFTER_PUT)
        elif etag.strip('"').lower() == digest.md5.hex():
            # A sidecar: the server checked Content-MD5 and its ETag repeats that MD5, so
            # it holds these bytes; the HEAD per file is spent on the data object.
            return True
        if self._remote_state(client, key, digest.size, digest.sha256) != "same":
            raise _FileKept(
                f"{name}: s3://{bucket}/{key} does not match after the upload (size or "
                "sha256 metadata); kept, retried at the next run"
            )
        return True

    @staticmethod
    def _conflict(bucket: str, key: str, name: str, state: str) -> _FileKept:
        if state == "absent":
            return _FileKept(f"{name}: the server refused to create s3://{bucket}/{key}; retried")
        return _FileKept(
            f"{name}: s3://{bucket}/{key} already exists with different content; the local "
            "file is kept and the object is not overwritten (two cars with the same "
            "CAR_IDENTIFIER?)"
        )

    def _remote_state(self, client: Any, key: str, size: int, sha256: str) -> str:
        """'same', 'different' or 'absent'."""
        from botocore.exceptions import ClientError

        try:
            head = client.head_object(Bucket=self._cfg.s3_server_bucket, Key=key)
        except ClientError as exc:
            if http_status(exc) == 404 or error_code(exc) in ("404", "NoSuchKey", "NotFound"):
                return "absent"
            raise
        same = (
            head.get("ContentLength") == size
            and head.get("Metadata", {}).get("sha256", "").lower() == sha256
        )
        return "same" if same else "different"

    def _put(
        self, client: Any, key: str, source: Path | bytes, digest: Digest, *, conditional: bool
    ) -> str:
        """PUT (or multipart upload) of ``source``; the ETag the server answered."""
        args: dict[str, Any] = {
            "Bucket": self._cfg.s3_server_bucket,
            "Key": key,
            "Metadata": {"sha256": digest.sha256},
            "ContentType": content_type(key),
        }
        if conditional:
            args["IfNoneMatch"] = "*"
        if isinstance(source, bytes):
            answer = client.put_object(Body=source, ContentMD5=digest.content_md5, **args)
            return str(answer.get("ETag", ""))
        self._hook(BEFORE_PUT)
        if digest.size > self._multipart_threshold:
            self._put_multipart(client, source, digest, args)
            return ""
        body: io.FileIO
        if self._watch_body:
            body = _HalfwayBody(source, digest.size, lambda: self._hook(DURING_PUT))
        else:
            body = io.FileIO(source, "rb")
        with body:
            answer = client.put_object(
                Body=body, ContentMD5=digest.content_md5, ContentLength=digest.size, **args
            )
        return str(answer.get("ETag", ""))

    def _put_multipart(self, client: Any, path: Path, digest: Digest, args: dict[str, Any]) -> None:
        # Hand-written rather than boto3's upload_file: s3transfer sends no Content-MD5 per
        # part under request_checksum_calculation="when_required", and we want the
        # conditional create on CompleteMultipartUpload.
        bucket, key = args["Bucket"], args["Key"]
        condition = {"IfNoneMatch": args["IfNoneMatch"]} if "IfNoneMatch" in args else {}
        created = client.create_multipart_upload(
            Bucket=bucket, Key=key, Metadata=args["Metadata"], ContentType=args["ContentType"]
        )
        upload_id = created["UploadId"]
        # S3 allows 10000 parts: larger parts for a file that would need more.
        part_size = max(self._part_size, -(-digest.size // _MAX_PARTS))
        try:
            parts: list[dict[str, Any]] = []
            with path.open("rb") as f:
                number = 1
                while chunk := f.read(part_size):
                    part_md5 = base64.b64encode(hashlib.md5(chunk).digest()).decode("ascii")
                    answer = client.upload_part(
                        Bucket=bucket,
                        Key=key,
                        UploadId=upload_id,
                        PartNumber=number,
                        Body=chunk,
                        ContentMD5=part_md5,
                    )
                    parts.append({"PartNumber": number, "ETag": answer["ETag"]})
                    number += 1
            client.complete_multipart_upload(
                Bucket=bucket,
                Key=key,
                UploadId=upload_id,
                MultipartUpload={"Parts": parts},
                **condition,
            )
        except BaseException:
            try:
                client.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=upload_id)
            except Exception as exc:
                # Typically the link that broke the upload: the sweep at the start of the
                # next run gets it (a daemon may run for weeks without a restart).
                self._abort_stale = True
                log.debug("could not abort multipart upload of %s: %s", key, exc)
            raise

    def _archive(self, path: Path) -> None:
        """Delete (S3_DELETE_AFTER_UPLOAD=yes) or move to uploaded/."""
        try:
            if self._cfg.s3_delete_after_upload:
                path.unlink(missing_ok=True)
                return
            target = self._dir / UPLOADED_DIR
            target.mkdir(exist_ok=True)
            with contextlib.suppress(FileNotFoundError):  # moved by another eccm process
                os.replace(path, target / path.name)
        except OSError as exc:
            raise _FileKept(f"{path.name}: cannot archive it locally ({exc}); kept") from exc

    # ---- once per process -----------------------------------------------------------

    def _probe(self, client: Any) -> bool:
        """Does the server refuse to overwrite under If-None-Match: *? Tried on a tiny
        object of our own: a 412 on the first or second PUT says yes."""
        key = probe_key(self._cfg.s3_key_prefix, self._cfg.car_identifier)
        supported = self._probe_on(client, key)
        deleted = self._delete_probe(client, key)
        if not supported and deleted:
            # Every eccm process of this car probes that one key and deletes it when done:
            # another one (`eccm upload` beside the daemon) that deletes it between our
            # two PUTs makes a server that honours If-None-Match look as if it did not.
            # Asked again on a key no other process uses; this key may delete, so that
            # one is removed too and nothing piles up.
            own = f"{key}.{uuid.uuid4().hex[:12]}"
            supported = self._probe_on(client, own)
            self._delete_probe(client, own)
        if supported:
            log.info("S3 server honours conditional create (If-None-Match)")
        else:
            log.info(
                "S3 server ignores conditional create (If-None-Match): a HEAD before each "
                "PUT keeps existing objects from being overwritten"
            )
        return supported

    def _probe_on(self, client: Any, key: str) -> bool:
        """Two conditional PUTs of the probe body on ``key``: True at the first 412."""
        from botocore.exceptions import ClientError

        digest = digest_bytes(_PROBE_BODY)
        supported = False
        for _ in range(2):
            try:
                self._put(client, key, _PROBE_BODY, digest, conditional=True)
            except ClientError as exc:
                status, code = http_status(exc), error_code(exc)
                if status == 412 or code == "PreconditionFailed":
                    supported = True
                    break
                if status in (400, 501) or code in ("NotImplemented", "InvalidArgument"):
                    break
                raise
        return supported

    def _delete_probe(self, client: Any, key: str) -> bool:
        """Tidy where the key may delete (True); a write-only key leaves one tiny object."""
        from botocore.exceptions import ClientError

        try:
            client.delete_object(Bucket=self._cfg.s3_server_bucket, Key=key)
        except ClientError as exc:
            log.debug("probe object %s left in place: %s", key, exc)
            return False
        return True

    def _abort_stale_multipart(self, client: Any) -> None:
        """Abort multipart uploads a crash left under this car's prefix (they cost money)."""
        from botocore.exceptions import ClientError

        bucket = self._cfg.s3_server_bucket
        prefix = car_prefix(self._cfg.s3_key_prefix, self._cfg.car_identifier)
        try:
            pages = client.get_paginator("list_multipart_uploads").paginate(
                Bucket=bucket, Prefix=prefix
            )
            stale = [(u["Key"], u["UploadId"]) for page in pages for u in page.get("Uploads", [])]
        except ClientError as exc:
            kind = self._classify(exc).kind
            if kind == "other":  # a server without the listing
                log.debug("cannot list multipart uploads: %s", exc)
                return
            if kind == "access":
                # A fleet key is often allowed PutObject/GetObject on its prefix and no
                # more: that must not stop every upload, only this tidying.
                log.info(
                    "this key may not list multipart uploads (%s): parts left by a crash "
                    "are not aborted; an AbortIncompleteMultipartUpload lifecycle rule on "
                    "the bucket does that",
                    error_code(exc) or http_status(exc),
                )
                return
            raise
        for key, upload_id in stale:
            try:
                client.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=upload_id)
                log.info("aborted a stale multipart upload of %s", key)
            except ClientError as exc:
                log.debug("cannot abort multipart upload of %s: %s", key, exc)

    # ---- outcome ------------------------------------------------------------------

    def _conclude(self, report: UploadReport, failure: Failure | None) -> None:
        if failure is not None:
            report.error = failure.message
        with self._schedule_lock:
            self._schedule = self._schedule.recorded(failed=failure is not None)
        message = report.error
        if message is None and report.kept:
            more = f" (and {len(report.kept) - 1} more)" if len(report.kept) > 1 else ""
            message = f"{len(report.kept)} file(s) not uploaded: {report.kept[0]}{more}"
        self.last_error = message
        if message is not None:
            level = logging.WARNING if failure is not None and failure.transient else logging.ERROR
            now = self._clock.monotonic()
            last = self._last_logged
            if not self._log_outcome or (
                last is not None and last[0] == message and now - last[1] < _QUIET_REPEAT
            ):
                level = logging.DEBUG
            else:
                self._last_logged = (message, now)
            log.log(level, "upload: %s", message)
        else:
            self._last_logged = None
        if report.uploaded:
            log.info(
                "uploaded %d file(s) (%s sent) to s3://%s/%s; %d waiting",
                report.uploaded,
                _human(report.bytes_sent),
                self._cfg.s3_server_bucket,
                car_prefix(self._cfg.s3_key_prefix, self._cfg.car_identifier),
                report.remaining,
            )


def _in_parallel(fn: Callable[[_T], None], items: Sequence[_T], workers: int) -> None:
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


def _human(size: int) -> str:
    return f"{size / MIB:.1f} MB" if size >= MIB else f"{size / 1024:.0f} kB"
