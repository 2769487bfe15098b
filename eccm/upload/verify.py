"""What "verified in the bucket" means, and what the server's answers say: pure decisions.

No I/O: the sender (eccm/upload/transfer.py) asks the server and hands the answers here.

- an object holds a file when its size and its ``sha256`` user metadata match the file's
  (a HEAD tells both); the local copy goes only then;
- a small object (a sidecar) sent with Content-MD5 is also proven by an ETag that repeats
  that MD5: the server checked the bytes and says it stored them;
- a 412 to ``If-None-Match: *`` means the key exists (the server honours conditional
  create); 400/501 to it means the server does not know the header.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from eccm.upload.keys import SidecarInfo

RemoteState = Literal["same", "different", "absent"]

# S3 allows 10000 parts in a multipart upload.
MAX_PARTS = 10_000


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


def matches_sidecar(info: SidecarInfo, digest: Digest) -> bool:
    """Is the data file still what the recorder described? (bit rot, a damaged card)"""
    return info.sha256 == digest.sha256 and info.size == digest.size


def remote_state(head: Mapping[str, Any] | None, size: int, sha256: str) -> RemoteState:
    """The object against a file of ``size`` and ``sha256``; ``head`` None: no object."""
    if head is None:
        return "absent"
    same = (
        head.get("ContentLength") == size
        and head.get("Metadata", {}).get("sha256", "").lower() == sha256
    )
    return "same" if same else "different"


def etag_confirms(etag: str, digest: Digest) -> bool:
    """A single PUT's ETag is the MD5 of the body on S3 and on the compatible servers."""
    return etag.strip('"').lower() == digest.md5.hex()


def is_not_found(status: int, code: str) -> bool:
    return status == 404 or code in ("404", "NoSuchKey", "NotFound")


def is_precondition_failed(status: int, code: str) -> bool:
    return status == 412 or code == "PreconditionFailed"


def probe_verdict(status: int, code: str) -> bool | None:
    """A conditional PUT's error: True (it honours If-None-Match), False (it does not know
    the header), None (another error: the run's problem, not the probe's)."""
    if is_precondition_failed(status, code):
        return True
    if status in (400, 501) or code in ("NotImplemented", "InvalidArgument"):
        return False
    return None


def part_size_for(size: int, part_size: int) -> int:
    """``part_size``, or larger parts for a file that would need more than MAX_PARTS."""
    return max(part_size, -(-size // MAX_PARTS))
