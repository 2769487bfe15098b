"""One closed file from the record directory into the bucket, then archived locally.

Order, for a data file: the data object is sent and verified, the local data file is
archived (deleted, or moved to ``uploaded/``), then the sidecar is sent and archived. A
sidecar without its data file therefore always means "data object verified in the bucket";
a later run finishes it (after a HEAD) and the disk budget never evicts it.

Another eccm process (`eccm upload` beside the daemon) may work on the same folder and
archive any file at any moment. It archives a data file only once its object is verified,
and the sidecar after the data file, so:

- the sidecar gone: both were archived meanwhile, nothing left to do;
- the data file gone (before our digest, or before our PUT opens it): its object is
  verified; this run finishes the sidecar rather than leave it for a run that may not come,
  or call the file kept;
- a summary gone: archived meanwhile.

A data file that no longer matches its sidecar (sha256 and size) stays here, not uploaded.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Callable, Sequence
from pathlib import Path

from eccm.errors import UploadError
from eccm.store.budget import MIB
from eccm.store.names import UPLOADED_DIR, DataName, SummaryName
from eccm.store.sidecar import StepHook
from eccm.upload.keys import Job, object_key, parse_sidecar, partition_date, sidecar_key
from eccm.upload.outcome import FileKept
from eccm.upload.settings import UploadSettings
from eccm.upload.steps import AFTER_DELETE_DATA, BEFORE_DELETE
from eccm.upload.transfer import ObjectStore
from eccm.upload.verify import Digest, digest_bytes, matches_sidecar

# Called once per file verified in the bucket, with the sizes of the objects sent now.
Tally = Callable[[Sequence[int]], None]


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


class FileSender:
    """Sends the files of one run; safe to call from several worker threads at once."""

    def __init__(
        self, settings: UploadSettings, store: ObjectStore, hook: StepHook, tally: Tally
    ) -> None:
        self._s = settings
        self._dir = settings.record_dir
        self._store = store
        self._hook = hook
        self._tally = tally

    def send(self, job: Job) -> None:
        """FileKept for a problem of this file; botocore and OS errors go to the caller."""
        name = job.name
        if isinstance(name, SummaryName):
            self._summary(name)
        elif job.kind == "orphan":
            self._orphan(name)
        else:
            self._data_file(name)

    def _key_for(self, dn: DataName, first_time: str | None) -> str:
        return object_key(self._s.key_prefix, dn.car, partition_date(first_time, dn), dn.name)

    def _data_file(self, dn: DataName) -> None:
        data_path = self._dir / dn.name
        side_path = self._dir / dn.sidecar
        try:
            side_raw = side_path.read_bytes()
        except FileNotFoundError:
            return  # both archived meanwhile (the sidecar goes last): nothing left to do
        except OSError as exc:
            raise FileKept(f"{dn.name}: cannot be read ({exc})") from exc
        try:
            digest = digest_file(data_path)
        except FileNotFoundError:
            self._finish_sidecar(dn, side_raw)
            return
        except OSError as exc:
            raise FileKept(f"{dn.name}: cannot be read ({exc})") from exc
        try:
            info = parse_sidecar(side_raw, dn.name)
        except UploadError as exc:
            raise FileKept(f"{dn.name}: {exc}; kept, not uploaded") from exc
        if not matches_sidecar(info, digest):
            raise FileKept(
                f"{dn.name}: its content does not match its sidecar (sha256/size; a damaged "
                "storage card?); kept, not uploaded"
            )
        key = self._key_for(dn, info.first_time)
        try:
            sent_data = self._store.ensure(key, data_path, digest, dn.name)
        except FileNotFoundError:
            # Archived by the other process between our digest and the PUT's open (the
            # only file opened in there): as above.
            self._finish_sidecar(dn, side_raw)
            return
        # The data object is verified: its local copy goes now, before the sidecar's PUT.
        # Were both kept until the sidecar is up, a long outage could make the budget
        # evict the pair and leave the bucket a data object without its sidecar for good.
        self._hook(BEFORE_DELETE)
        self._archive(data_path)
        self._hook(AFTER_DELETE_DATA)
        side_digest = digest_bytes(side_raw)
        sent_side = self._store.ensure(sidecar_key(key), side_raw, side_digest, dn.name)
        self._archive(side_path)
        self._tally(_sent((sent_data, digest.size), (sent_side, len(side_raw))))

    def _summary(self, sn: SummaryName) -> None:
        """A trip summary: complete once it exists; verified by HEAD like a data file."""
        path = self._dir / sn.name
        try:
            digest = digest_file(path)
        except FileNotFoundError:
            return  # archived meanwhile by another eccm process
        except OSError as exc:
            raise FileKept(f"{sn.name}: cannot be read ({exc})") from exc
        key = object_key(self._s.key_prefix, sn.car, sn.trip_date, sn.name)
        try:
            sent = self._store.ensure(key, path, digest, sn.name)
        except FileNotFoundError:
            return  # archived by another eccm process between the digest and the PUT
        self._archive(path)
        self._tally(_sent((sent, digest.size)))

    def _orphan(self, dn: DataName) -> None:
        """A sidecar whose data file is verified in the bucket and archived (the sidecar's
        PUT failed, or a crash came in between): finish the job."""
        try:
            side_raw = (self._dir / dn.sidecar).read_bytes()
        except FileNotFoundError:
            return  # finished meanwhile by another eccm process
        except OSError as exc:
            raise FileKept(f"{dn.sidecar}: cannot be read ({exc})") from exc
        self._finish_sidecar(dn, side_raw)

    def _finish_sidecar(self, dn: DataName, side_raw: bytes) -> None:
        """Put the sidecar ``side_raw`` once the bucket confirms its data object, then
        archive it: what is left of a file whose data file is no longer here."""
        try:
            info = parse_sidecar(side_raw, dn.name)
        except UploadError as exc:
            raise FileKept(f"{dn.sidecar}: {exc}; its data file is missing") from exc
        key = self._key_for(dn, info.first_time)
        if self._store.remote_state(key, info.size, info.sha256) != "same":
            raise FileKept(
                f"{dn.sidecar}: its data file is missing here and not in the bucket; kept"
            )
        sent = self._store.ensure(sidecar_key(key), side_raw, digest_bytes(side_raw), dn.name)
        self._archive(self._dir / dn.sidecar)
        self._tally(_sent((sent, len(side_raw))))

    def _archive(self, path: Path) -> None:
        """Delete (S3_DELETE_AFTER_UPLOAD=yes) or move to uploaded/."""
        try:
            if self._s.delete_after_upload:
                path.unlink(missing_ok=True)
                return
            target = self._dir / UPLOADED_DIR
            target.mkdir(exist_ok=True)
            with contextlib.suppress(FileNotFoundError):  # moved by another eccm process
                os.replace(path, target / path.name)
        except OSError as exc:
            raise FileKept(f"{path.name}: cannot archive it locally ({exc}); kept") from exc


def _sent(*objects: tuple[bool, int]) -> list[int]:
    """The sizes of the objects that were sent now, of (sent, size) pairs."""
    return [size for sent, size in objects if sent]
