"""Key pairs and decryption for encrypted files (``eccm keygen``, ``eccm decrypt``).

Runs on the reader's computer, never needed on the Pi: the Pi holds recipients (public
keys) only. Files are in the age format (pyrage), so Debian's ``age -d -i key.txt``
reads them too. Decryption streams (a file is never held in memory whole), writes to a
temp file renamed when complete, and checks the sidecar first when there is one (size
and sha256 of the encrypted object): a damaged or swapped file is refused before it is
read.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from eccm.errors import EccmError
from eccm.store.names import AGE, SIDECAR, TMP
from eccm.store.sidecar import file_digest


class DecryptFailed(EccmError):
    """A file could not be decrypted; the message says which and why."""


def keygen(path: Path) -> str:
    """Write a new age identity to ``path`` (mode 600, never over an existing file), in
    the format of ``age-keygen``; return its recipient (public key)."""
    from pyrage import x25519

    identity = x25519.Identity.generate()
    recipient = str(identity.to_public())
    created = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    text = f"# created: {created}\n# public key: {recipient}\n{identity}\n"
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise EccmError(f"{path} exists: not overwriting a key (choose another name)") from None
    except OSError as exc:
        raise EccmError(f"cannot write {path}: {exc.strerror}") from None
    with os.fdopen(fd, "w", encoding="ascii") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    return recipient


def load_identities(path: Path) -> list[Any]:
    """The identities of an age identity file (``eccm keygen`` or ``age-keygen``)."""
    from pyrage import x25519

    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise EccmError(f"cannot read the identity file {path}: {exc.strerror}") from None
    if raw.startswith(_PROTECTED):
        raw = _unlock(path, raw)
    try:
        # utf-8-sig: a key file saved by a Windows editor starts with a byte order mark.
        lines = raw.decode("utf-8-sig").splitlines()
    except UnicodeDecodeError:
        raise EccmError(
            f"{path} is not an age identity file (expected AGE-SECRET-KEY-... lines; this "
            "file is not text)"
        ) from None
    out = []
    for line in lines:
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        try:
            out.append(x25519.Identity.from_str(line))
        except Exception:
            raise EccmError(
                f"{path} is not an age identity file (expected AGE-SECRET-KEY-... lines)"
            ) from None
    if not out:
        raise EccmError(f"{path} holds no identity (AGE-SECRET-KEY-... line)")
    return out


# An identity file protected with a passphrase (``age-keygen | age -p > key.age``), binary
# or armored, as ``age -d -i`` reads it.
_PROTECTED = (b"age-encryption.org/", b"-----BEGIN AGE ENCRYPTED FILE-----")


def _unlock(path: Path, raw: bytes) -> bytes:
    """The identity file inside a passphrase-protected one, the passphrase asked on the
    terminal (as ``age -d -i`` does); a run without a terminal cannot ask and says so."""
    import getpass

    import pyrage

    if not sys.stdin.isatty():
        raise EccmError(
            f"{path} is protected with a passphrase: run eccm decrypt in a terminal to type "
            f"it, or give an unprotected copy (age -d -o key.txt {path})"
        )
    try:
        passphrase = getpass.getpass(f"Passphrase for {path}: ")
    except EOFError:
        raise EccmError(f"{path}: no passphrase typed; nothing decrypted") from None
    try:
        out: bytes = pyrage.passphrase.decrypt(raw, passphrase)
    except pyrage.DecryptError:
        raise EccmError(f"{path}: wrong passphrase (or not a protected identity file)") from None
    return out


def check_sidecar(path: Path, sidecar: Path) -> None:
    """Refuse ``path`` unless it matches the size and sha256 its sidecar states."""
    try:
        doc = json.loads(sidecar.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise DecryptFailed(f"{sidecar.name}: not a readable sidecar ({exc})") from None
    sha256, size = file_digest(path)
    if not isinstance(doc, dict) or doc.get("sha256") != sha256 or doc.get("size") != size:
        raise DecryptFailed(
            f"{path.name} does not match its sidecar {sidecar.name} (size/sha256): damaged "
            "or replaced; not decrypted"
        )


def plain_name(name: str) -> str:
    return name[: -len(AGE)] if name.endswith(AGE) else name + ".plain"


def decrypt_file(path: Path, identities: Sequence[Any], out_dir: Path | None = None) -> Path:
    """Decrypt ``path`` (``x.tsv.gz.age``) to ``x.tsv.gz`` next to it or in ``out_dir``;
    a sidecar ``x.tsv.gz.age.json`` beside it is checked first, and goes with the file
    into ``out_dir`` (its columns and separator are what ``eccm schema`` reads)."""
    import pyrage

    sidecar = path.with_name(path.name + SIDECAR)
    has_sidecar = sidecar.exists()
    if has_sidecar:
        check_sidecar(path, sidecar)
    target = (out_dir or path.parent) / plain_name(path.name)
    tmp = target.with_name(target.name + TMP)
    try:
        with path.open("rb") as src, tmp.open("wb") as dst:
            pyrage.decrypt_io(src, dst, list(identities))
    except pyrage.DecryptError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise DecryptFailed(
            f"cannot decrypt {path.name}: no identity of the key file opens it (a wrong "
            f"key, or not an age file) ({exc})"
        ) from None
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        if exc.errno is None:
            # pyrage's own error, not the file system's: a chunk failed its authentication
            # (a bit flipped, a file cut short); said as bare "decryption error" before.
            raise DecryptFailed(
                f"cannot decrypt {path.name}: damaged or cut short (its content fails the age "
                "check); nothing written"
            ) from None
        raise DecryptFailed(f"cannot decrypt {path.name}: {exc.strerror or exc}") from None
    os.replace(tmp, target)
    copy = target.with_name(sidecar.name)
    if has_sidecar and copy != sidecar:
        _copy_atomically(sidecar, copy)
    return target


def _copy_atomically(src: Path, dst: Path) -> None:
    tmp = dst.with_name(dst.name + TMP)
    try:
        tmp.write_bytes(src.read_bytes())
        os.replace(tmp, dst)
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise DecryptFailed(f"cannot copy the sidecar {src.name}: {exc.strerror or exc}") from None


def _local_name(key: str, prefix: str) -> str:
    """Where ``key`` goes below the output folder: from its ``car=`` folder on, so that a
    prefix of one car (``car-logs/car=my-car/``) or of one day keeps car= and date= as
    folders; a key outside the layout, below ``prefix``."""
    parts = key.split("/")
    for i, part in enumerate(parts[:-1]):
        if part.startswith("car="):
            return "/".join(parts[i:])
    return key[len(prefix) :].lstrip("/") if key.startswith(prefix) else key


def download_encrypted(client: Any, bucket: str, prefix: str, out_dir: Path) -> list[Path]:
    """Every ``.age`` object under ``prefix`` (and its sidecar, when there is one) into
    ``out_dir``, keeping the key's partitions as folders (car=.../date=.../): what DuckDB
    reads with hive_partitioning once decrypted. Streams; returns the ``.age`` files."""
    out: list[Path] = []
    paginator = client.get_paginator("list_objects_v2")
    for page in paginator.paginate(Bucket=bucket, Prefix=prefix):
        for obj in page.get("Contents", []):
            key = str(obj["Key"])
            if not (key.endswith(AGE) or key.endswith(AGE + SIDECAR)):
                continue
            rel = _local_name(key, prefix)
            target = out_dir / rel
            if ".." in Path(rel).parts:
                raise DecryptFailed(f"refusing a key that leaves the folder: {key}")
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = target.with_name(target.name + TMP)
            client.download_file(bucket, key, str(tmp))
            os.replace(tmp, target)
            if key.endswith(AGE):
                out.append(target)
    return sorted(out)
