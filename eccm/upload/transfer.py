"""Sending one object and proving it arrived: boto3 PUT or multipart, Content-MD5, HEAD.

``ObjectStore.ensure(key, source)`` makes a key hold exactly a file's bytes and says whether
it sent them now or found them there; it never overwrites an object with other content.
What the answers mean is decided in eccm/upload/verify.py; which files, in which order, and
what happens to the local copy afterwards is eccm/upload/files.py's business.
"""

from __future__ import annotations

import base64
import hashlib
import io
import logging
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

from eccm.store.sidecar import StepHook
from eccm.upload.keys import content_type
from eccm.upload.outcome import LOGGER_NAME, FileKept
from eccm.upload.s3client import Failure, NotS3Answer, error_code, http_status
from eccm.upload.steps import AFTER_PUT, BEFORE_PUT, DURING_PUT
from eccm.upload.verify import (
    Digest,
    RemoteState,
    etag_confirms,
    is_not_found,
    is_precondition_failed,
    part_size_for,
    remote_state,
)

log = logging.getLogger(LOGGER_NAME)


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


class ObjectStore:
    """One bucket through one boto3 client, shared by the run's worker threads.

    ``conditional``: does the server honour ``If-None-Match: *``? None until probed
    (eccm/upload/probe.py). Where it does, an existing object is never overwritten; where
    it does not, a HEAD before the PUT does the same job.
    """

    def __init__(
        self,
        client: Any,
        bucket: str,
        *,
        conditional: bool | None,
        multipart_threshold: int,
        part_size: int,
        hook: StepHook,
        watch_body: bool,
    ) -> None:
        self.client = client
        self.bucket = bucket
        self.conditional = conditional
        # A multipart upload whose abort failed (typically the link that broke it): the
        # sweep at the start of the next run gets it (a daemon may run for weeks).
        self.stale_parts = False
        # Uploads this store completed: a sweep soon after may still see one listed
        # (SeaweedFS drops it from the listing a moment later), and aborting a completed
        # upload is at best an error, at worst (a server that deletes the parts' data) harm.
        self._completed: deque[str] = deque(maxlen=64)
        self._multipart_threshold = multipart_threshold
        self._part_size = part_size
        self._hook = hook
        # The body is watched for DURING_PUT only when somebody listens: a daemon's PUT
        # reads a plain file.
        self._watch_body = watch_body

    def ensure(self, key: str, source: Path | bytes, digest: Digest, name: str) -> bool:
        """Make ``key`` hold exactly ``source``; True if sent now, False if already there.

        FileKept when the key holds other content (never overwritten) or the object does
        not match after the upload."""
        from botocore.exceptions import ClientError

        etag = ""
        if self.conditional:
            try:
                etag = self.put(key, source, digest, conditional=True)
            except ClientError as exc:
                if not is_precondition_failed(http_status(exc), error_code(exc)):
                    raise
                state = self.remote_state(key, digest.size, digest.sha256)
                if state == "same":
                    return False
                raise self._conflict(key, name, state) from exc
        else:
            state = self.remote_state(key, digest.size, digest.sha256)
            if state == "same":
                return False
            if state == "different":
                raise self._conflict(key, name, state)
            etag = self.put(key, source, digest, conditional=False)
        if isinstance(source, Path):
            self._hook(AFTER_PUT)
        elif etag_confirms(etag, digest):
            # A sidecar: the server checked Content-MD5 and its ETag repeats that MD5, so
            # it holds these bytes; the HEAD per file is spent on the data object.
            return True
        if self.remote_state(key, digest.size, digest.sha256) != "same":
            raise FileKept(
                f"{name}: s3://{self.bucket}/{key} does not match after the upload (size or "
                "sha256 metadata); kept, retried at the next run"
            )
        return True

    def _conflict(self, key: str, name: str, state: RemoteState) -> FileKept:
        where = f"s3://{self.bucket}/{key}"
        if state == "absent":
            return FileKept(f"{name}: the server refused to create {where}; retried")
        return FileKept(
            f"{name}: {where} already exists with different content; the local "
            "file is kept and the object is not overwritten (two cars with the same "
            "CAR_IDENTIFIER?)"
        )

    def remote_state(self, key: str, size: int, sha256: str) -> RemoteState:
        """A HEAD of ``key`` against a file of ``size`` and ``sha256``."""
        from botocore.exceptions import ClientError

        try:
            head = self.client.head_object(Bucket=self.bucket, Key=key)
        except ClientError as exc:
            if is_not_found(http_status(exc), error_code(exc)):
                return remote_state(None, size, sha256)
            raise
        if not head.get("ETag"):
            raise NotS3Answer("HEAD")
        return remote_state(head, size, sha256)

    def put(self, key: str, source: Path | bytes, digest: Digest, *, conditional: bool) -> str:
        """PUT (or multipart upload) of ``source``; the ETag the server answered."""
        args: dict[str, Any] = {
            "Bucket": self.bucket,
            "Key": key,
            "Metadata": {"sha256": digest.sha256},
            "ContentType": content_type(key),
        }
        if conditional:
            args["IfNoneMatch"] = "*"
        if isinstance(source, bytes):
            answer = self.client.put_object(Body=source, ContentMD5=digest.content_md5, **args)
            return _etag(answer)
        self._hook(BEFORE_PUT)
        if digest.size > self._multipart_threshold:
            self._put_multipart(source, digest, args)
            return ""
        body: io.FileIO
        if self._watch_body:
            body = _HalfwayBody(source, digest.size, lambda: self._hook(DURING_PUT))
        else:
            body = io.FileIO(source, "rb")
        with body:
            answer = self.client.put_object(
                Body=body, ContentMD5=digest.content_md5, ContentLength=digest.size, **args
            )
        return _etag(answer)

    def _put_multipart(self, path: Path, digest: Digest, args: dict[str, Any]) -> None:
        # Hand-written rather than boto3's upload_file: s3transfer sends no Content-MD5 per
        # part under request_checksum_calculation="when_required", and we want the
        # conditional create on CompleteMultipartUpload.
        client = self.client
        bucket, key = args["Bucket"], args["Key"]
        condition = {"IfNoneMatch": args["IfNoneMatch"]} if "IfNoneMatch" in args else {}
        created = client.create_multipart_upload(
            Bucket=bucket, Key=key, Metadata=args["Metadata"], ContentType=args["ContentType"]
        )
        upload_id = created["UploadId"]
        part_size = part_size_for(digest.size, self._part_size)
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
            self._completed.append(upload_id)
        except BaseException:
            # The next run looks again either way: a part still being stored may outlive
            # its upload's abort (see abort_stale_multipart).
            self.stale_parts = True
            try:
                client.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=upload_id)
            except Exception as exc:
                log.debug("could not abort multipart upload of %s: %s", key, exc)
            raise

    def abort_stale_multipart(self, prefix: str, classify: Callable[[Exception], Failure]) -> int:
        """Abort multipart uploads a crash left under ``prefix`` (they cost money); how
        many were aborted (an abort refused, as to a key without the right, is not
        counted: the sweeps do not go on for it).

        S3 says an abort may have to be repeated: a part still on its way when the upload
        is aborted (the link broke mid-part and the server is still writing what came)
        can store itself after the abort. SeaweedFS then lists the upload again.
        """
        from botocore.exceptions import ClientError

        try:
            pages = self.client.get_paginator("list_multipart_uploads").paginate(
                Bucket=self.bucket, Prefix=prefix
            )
            stale = [
                (u["Key"], u["UploadId"])
                for page in pages
                for u in page.get("Uploads", [])
                if u["UploadId"] not in self._completed
            ]
        except ClientError as exc:
            kind = classify(exc).kind
            if kind == "other":  # a server without the listing
                log.debug("cannot list multipart uploads: %s", exc)
                return 0
            if kind == "access":
                # A fleet key is often allowed PutObject/GetObject on its prefix and no
                # more: that must not stop every upload, only this tidying.
                log.info(
                    "this key may not list multipart uploads (%s): parts left by a crash "
                    "are not aborted; an AbortIncompleteMultipartUpload lifecycle rule on "
                    "the bucket does that",
                    error_code(exc) or http_status(exc),
                )
                return 0
            raise
        aborted = 0
        for key, upload_id in stale:
            try:
                self.client.abort_multipart_upload(Bucket=self.bucket, Key=key, UploadId=upload_id)
                log.info("aborted a stale multipart upload of %s", key)
                aborted += 1
            except ClientError as exc:
                log.debug("cannot abort multipart upload of %s: %s", key, exc)
        return aborted


def _etag(answer: Any) -> str:
    """A PUT's ETag; every S3 server sends one, a web page in its place does not."""
    etag = str(answer.get("ETag") or "")
    if not etag:
        raise NotS3Answer("PUT")
    return etag
