"""Closed files encrypted for their reader (FILE_ENCRYPTION_RECIPIENTS, issue 15).

A car's log says where a person was, minute by minute: with recipients set, every closed
data file, trip summary and DTC-clear audit record is encrypted in the age format
(pyrage; the ``age`` tool decrypts it) after compression, and only the ``.age`` file is
uploaded. The private key never lives on the Pi.

One idempotent pass, :meth:`Encryptor.seal_all`, looks at the top level of the record
directory and takes each file one step further, so that the same code finishes any state
a power cut leaves (it runs at start-up, after each close, and before each upload run).
For a data file ``x.tsv.gz`` with its sidecar ``x.tsv.gz.json`` the steps are:

1. ``x.tsv.gz.age.tmp`` written and fsynced, renamed to ``x.tsv.gz.age``, folder fsynced
   (an ``.age`` that exists is complete; a leftover ``.tmp`` is deleted and redone);
2. its sidecar ``x.tsv.gz.age.json``, written atomically: size and sha256 of the ``.age``
   and nothing personal (no VIN, no times finer than the file name's: a date);
3. the plaintext ``x.tsv.gz`` removed, then its sidecar ``x.tsv.gz.json``.

The plaintext goes only once the ``.age`` and its sidecar are durable; and the uploader,
with recipients set, plans ``.age`` files only (``keys.plan(encrypted=True)``), so no
state between two steps uploads a plaintext byte. Summaries and audit records have no
sidecar: step 1, then the plaintext removed. A file lock serialises passes of the daemon
and of an ``eccm upload`` beside it.

Only regular files are sealed, opened without following a symlink: the folder may be
writable by others (a share). A FIFO named as a summary was opened and waited on for ever
(holding the lock, on the recorder's thread after a close: recording stopped, and every
later file stayed in plaintext); a symlink named as a data file had its target (the
config.ini, say) encrypted, uploaded and the link removed.
"""

from __future__ import annotations

import contextlib
import fcntl
import io
import json
import logging
import os
import stat
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from eccm import __version__
from eccm.store.names import (
    AGE,
    SIDECAR,
    TMP,
    parse_data_name,
    parse_single_name,
)
from eccm.store.sidecar import StepHook, file_digest, fsync_dir, write_atomic

log = logging.getLogger(__name__)

LOCK_NAME = ".eccm-encrypt.lock"

# Steps of sealing one file, for crash tests (a hook may kill the process at each).
AGE_TMP = "age_tmp"  # the .age.tmp is written and fsynced, not renamed
AGE_RENAMED = "age_renamed"  # the .age is in place and durable
AGE_SIDECAR = "age_sidecar"  # its sidecar is durable
PLAIN_DATA_GONE = "plain_data_gone"  # the plaintext data file (or summary) is removed
STEPS = (AGE_TMP, AGE_RENAMED, AGE_SIDECAR, PLAIN_DATA_GONE)

# Sidecar fields kept for an encrypted file: what the uploader checks and what a reader
# needs to decrypt and parse it; nothing that says where or exactly when.
_KEPT = ("schema_version", "car", "trip", "columns", "compression", "separator")


def _no_hook(step: str) -> None:
    pass


def recipients_of(keys: Sequence[str]) -> list[Any]:
    """pyrage recipients of ``age1...`` strings (config.py has checked their form)."""
    from pyrage import x25519

    return [x25519.Recipient.from_str(k) for k in keys]


class Encryptor:
    """Seals the closed files of ``record_dir`` for ``keys`` (age recipients)."""

    def __init__(self, record_dir: Path, keys: Sequence[str], hook: StepHook = _no_hook) -> None:
        if not keys:
            raise ValueError("no recipients: encryption is off")
        self._dir = record_dir
        self._keys = tuple(keys)
        self._recipients = recipients_of(keys)
        self._hook = hook

    def seal_bytes(self, data: bytes) -> bytes:
        """``data`` encrypted (an audit record, sealed before it touches the disk)."""
        import pyrage

        out: bytes = pyrage.encrypt(data, self._recipients)
        return out

    def seal_all(self) -> int:
        """One pass over the record directory; the number of files sealed or finished.
        OSError (a full disk) leaves the rest for the next pass."""
        done = 0
        with self._locked():
            try:
                names = set(os.listdir(self._dir))
            except FileNotFoundError:
                return 0
            for name in sorted(names):
                if name.endswith(AGE + TMP):
                    # Never renamed: incomplete, and its plaintext is still here.
                    with contextlib.suppress(FileNotFoundError):
                        (self._dir / name).unlink()
                        log.info("removed an unfinished encryption: %s", name)
            names = set(os.listdir(self._dir))
            for name in sorted(names):
                if name.endswith(AGE):
                    continue
                if parse_single_name(name) is not None:
                    if self._regular(name):
                        self._seal_single(name, names)
                        done += 1
                elif parse_data_name(name) is not None and name + SIDECAR in names:
                    if self._regular(name) and self._regular(name + SIDECAR):
                        self._seal_data(name, names)
                        done += 1
                elif name.endswith(SIDECAR) and parse_data_name(name[: -len(SIDECAR)]):
                    plain = name[: -len(SIDECAR)]
                    if plain not in names and plain + AGE + SIDECAR in names:
                        # Step 3 cut short: the encrypted pair is complete.
                        self._remove(name)
                        done += 1
        return done

    # -- one file ------------------------------------------------------------------------
    def _regular(self, name: str) -> bool:
        """Whether ``name`` is a regular file (not a symlink, FIFO, device or folder): the
        others are no file ECCM wrote, and are left as they are, with a warning."""
        try:
            mode = os.lstat(self._dir / name).st_mode
        except FileNotFoundError:
            return False
        if stat.S_ISREG(mode):
            return True
        if name not in _warned and len(_warned) < _WARNED_MAX:
            _warned.add(name)
            log.warning(
                "%s in %s is not a regular file (a symlink, a FIFO...): not encrypted, not "
                "uploaded; ECCM never writes one, remove it",
                name,
                self._dir,
            )
        return False

    def _seal_single(self, name: str, names: set[str]) -> None:
        if name + AGE not in names:
            self._encrypt(self._dir / name)
        self._remove(name)
        self._hook(PLAIN_DATA_GONE)
        log.info("encrypted %s", name + AGE)

    def _seal_data(self, name: str, names: set[str]) -> None:
        plain = self._dir / name
        sealed = self._dir / (name + AGE)
        if name + AGE + SIDECAR not in names:
            if name + AGE not in names:
                self._encrypt(plain)
            with _open_regular(self._dir / (name + SIDECAR)) as src:
                side = json.loads(src.read().decode("utf-8"))
            write_atomic(
                sealed.with_name(sealed.name + SIDECAR),
                encode_sidecar(neutral_sidecar(side, sealed)),
            )
            self._hook(AGE_SIDECAR)
        self._remove(name)
        self._hook(PLAIN_DATA_GONE)
        self._remove(name + SIDECAR)
        log.info("encrypted %s", sealed.name)

    def _encrypt(self, plain: Path) -> None:
        import pyrage

        target = plain.with_name(plain.name + AGE)
        tmp = target.with_name(target.name + TMP)
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()  # a leftover, or planted: never written through
        try:
            with _open_regular(plain) as src:
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
                with os.fdopen(fd, "wb") as dst:
                    pyrage.encrypt_io(src, _Sink(dst), self._recipients)
                    dst.flush()
                    os.fsync(dst.fileno())
        except BaseException:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise
        self._hook(AGE_TMP)
        os.replace(tmp, target)
        fsync_dir(self._dir)
        self._hook(AGE_RENAMED)

    def _remove(self, name: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            (self._dir / name).unlink()
        fsync_dir(self._dir)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        os.makedirs(self._dir, exist_ok=True)
        fd = os.open(self._dir / LOCK_NAME, os.O_CREAT | os.O_RDWR, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)


# Names already warned about (a planted file stays until someone removes it: one line,
# not one per pass); bounded, as a folder may be filled with them.
_warned: set[str] = set()
_WARNED_MAX = 1000


def _open_regular(path: Path) -> io.BufferedReader:
    """``path`` opened for reading if it is a regular file: no symlink followed, and a FIFO
    is not waited on (O_NONBLOCK) but refused; OSError otherwise."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(f"{path.name} is not a regular file")
        os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return os.fdopen(fd, "rb")


class _Sink(io.RawIOBase):
    """A binary file as pyrage's writer wants it (write returns the count)."""

    def __init__(self, f: Any) -> None:
        self._f = f

    def writable(self) -> bool:
        return True

    def write(self, b: Any) -> int:
        self._f.write(b)
        return len(b)


def neutral_sidecar(plain: dict[str, Any], sealed: Path) -> dict[str, Any]:
    """The sidecar of an encrypted file: size and sha256 of the ``.age`` for the
    uploader's checks, the columns to read it once decrypted; no VIN, no protocol, no
    positions, no time finer than a date (the partition the uploader puts it in)."""
    sha256, size = file_digest(sealed)
    doc = {k: plain[k] for k in _KEPT if k in plain}
    first = plain.get("first_time")
    doc.update(
        {
            "file": sealed.name,
            "encryption": "age",
            "first_time": first[:10] if isinstance(first, str) and len(first) >= 10 else None,
            "size": size,
            "sha256": sha256,
            "eccm_version": __version__,
        }
    )
    return doc


def encode_sidecar(doc: dict[str, Any]) -> bytes:
    return json.dumps(doc, ensure_ascii=False, indent=1).encode("utf-8") + b"\n"


def seal_pending(record_dir: Path, keys: Sequence[str]) -> None:
    """Seal what is left in plaintext (a close whose encryption failed, files written
    before encryption was turned on); a failure is logged and left for the next pass."""
    if not os.path.isdir(record_dir):
        # Nothing to seal in a folder that is not there or that this user may not enter
        # (a drive not mounted yet): the recorder's ERROR line says why, once.
        return
    try:
        Encryptor(record_dir, keys).seal_all()
    except (OSError, ValueError) as exc:
        with _SEAL_STATE_LOCK:
            failed = _SEAL_FAILING.get(str(record_dir), 0)
            _SEAL_FAILING[str(record_dir)] = failed + 1
        # Once per outage (a full disk lasts): the pass runs at every close and upload run.
        (log.debug if failed else log.warning)(
            "encrypting closed files in %s failed (retried at each close and upload run; "
            "said once until it works again): %s",
            record_dir,
            exc,
        )
        return
    with _SEAL_STATE_LOCK:
        failed = _SEAL_FAILING.pop(str(record_dir), 0)
    if failed:
        log.info(
            "encrypting closed files in %s works again after %d failed passes", record_dir, failed
        )


# Record folder -> passes of seal_pending that failed since it last worked (the passes run
# on several threads).
_SEAL_FAILING: dict[str, int] = {}
_SEAL_STATE_LOCK = threading.Lock()


def keep_folder_private(record_dir: Path) -> None:
    """With encryption on, the record folder is made the owner's alone (0700).

    The open data file and the summary's checkpoint are the only plaintext, and they are
    created with the usual umask (0644): in a folder other accounts of the Pi may enter,
    they could read the running trip. A folder this user does not own, or a file system
    without modes (a FAT stick), is left as it is, with a warning.
    """
    try:
        record_dir.mkdir(parents=True, exist_ok=True)
        info = os.stat(record_dir)
    except OSError:
        return  # the recorder says why it cannot write there
    mode = stat.S_IMODE(info.st_mode)
    if not mode & 0o077:
        return
    try:
        if info.st_uid != os.getuid():
            raise PermissionError("owned by another user")
        os.chmod(record_dir, mode & 0o700 | 0o700)
        if stat.S_IMODE(os.stat(record_dir).st_mode) & 0o077:
            raise PermissionError("its file system keeps the mode")
    except OSError as exc:
        log.warning(
            "cannot make RECORD_DIRECTORY_LOCATION=%s the owner's alone (%s): with "
            "FILE_ENCRYPTION_RECIPIENTS set, its open file is plaintext that other users of "
            "this machine may read (mode %04o)",
            record_dir,
            getattr(exc, "strerror", None) or exc,
            mode,
        )
        return
    log.info(
        "RECORD_DIRECTORY_LOCATION=%s is now the owner's alone (mode 0700, was %04o): its "
        "open file is the only plaintext",
        record_dir,
        mode,
    )
