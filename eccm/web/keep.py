"""Web sessions kept on disk, so that a restart of the daemon does not log every browser out.

In a car the daemon restarts at every ignition (the power is cut when the car is parked).
Sessions held in memory alone ended with it: the phone in the car showed "log in again"
on every drive, and over plain HTTP a phone can only log in with a one-time link made on
the Pi itself. So the sessions are written to ``.eccm-web-sessions.json`` in the record
folder (mode 0600) when one opens or ends, and read back at start.

- No cookie is written: a session is kept under the SHA-256 of its cookie, so the file
  lets nobody in. The CSRF token is kept (the page asks for it again after a reload).
- Each session carries a tag: an HMAC, under a key derived from the secret that opened
  it, of the session's cookie digest, scopes and login time. A changed SOCKET_SERVER_SECRET
  or SOCKET_SERVER_READ_SECRET ends the sessions it had opened, as a user who lost a phone
  expects; and whoever may write the folder (a share, another user) but knows no secret
  cannot make an entry of their own: a tag copied onto another cookie's digest, onto more
  scopes or onto a later login time does not match (version 1 had one tag per secret, which
  any entry could copy: its files are not read).
- Times are wall-clock times in the file (a monotonic clock starts again at each boot).
  A Pi has no real-time clock: a wall clock that went back since is taken as no time
  passed (the session is kept); one that jumped forward may end a session early.
- Failures to read or write only cost the keeping: the page logs in again, as before.
- The folder may be writable by others (a share): the file is read only if it is a regular
  file (not a symlink, FIFO or device: a FIFO hung the start, a link to /dev/zero ate the
  memory) of at most :data:`MAX_BYTES`, and written through a fresh temporary file
  (``O_EXCL | O_NOFOLLOW``: a planted ``.tmp`` symlink made the daemon overwrite its target).
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import logging
import os
import stat
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from eccm.service import ALL_SCOPES, READ_ONLY, Scope, scope_names
from eccm.store.sidecar import fsync_dir

log = logging.getLogger(__name__)

FILE_NAME = ".eccm-web-sessions.json"
VERSION = 2
_CONTEXT = b"eccm web session v2"
# 64 sessions take about 30 KB: anything much larger was not written by the daemon.
MAX_BYTES = 1024 * 1024


def cookie_key(sid: str) -> str:
    """What a session is kept under: the SHA-256 of its cookie (never the cookie)."""
    return hashlib.sha256(sid.encode("ascii", "replace")).hexdigest()


def tag_key(secret: str, tls: bool = False) -> bytes:
    """The key of the tags of the sessions ``secret`` opened (derived for this use alone).

    The transport is part of it: a cookie that went over plain HTTP (no Secure flag, seen
    by anyone on the network) opens nothing once the page is served over TLS.
    """
    context = _CONTEXT + (b" tls" if tls else b" plain")
    return hmac.new(secret.encode("utf-8"), context, hashlib.sha256).digest()


def session_tag(key: bytes, cookie: str, scopes: frozenset[Scope], created: float) -> str:
    """The tag of one kept session: binds its cookie digest, its scopes and its login time,
    so that an entry cannot lend its tag to another cookie, more scopes or a longer life."""
    text = f"{cookie}\n{','.join(scope_names(scopes))}\n{round(created, 3):.3f}"
    return hmac.new(key, text.encode("ascii", "replace"), hashlib.sha256).hexdigest()


@dataclass(frozen=True)
class Kept:
    """A session as the file holds it (times are wall-clock seconds since the epoch)."""

    key: str  # cookie_key of the cookie
    csrf: str
    scopes: frozenset[Scope]
    address: str
    created: float
    seen: float


class SessionFile:
    """The file of :mod:`eccm.web.keep` in ``folder``, for the current secrets."""

    def __init__(
        self, folder: Path, secret: str, read_secret: str = "", *, tls: bool = False
    ) -> None:
        """``tls``: the page is served over TLS now (sessions opened over plain HTTP end)."""
        self.path = folder / FILE_NAME
        self._keys: dict[frozenset[Scope], bytes] = {ALL_SCOPES: tag_key(secret, tls)}
        if read_secret:
            self._keys[READ_ONLY] = tag_key(read_secret, tls)
        self._failed = False

    def load(self) -> list[Kept]:
        """The sessions kept by the last run that the current secrets still open."""
        try:
            data = json.loads(self._read())
        except FileNotFoundError:
            return []
        except (OSError, ValueError, RecursionError) as exc:
            log.warning("web sessions of the last run not read (%s): browsers log in again", exc)
            return []
        if not isinstance(data, dict) or data.get("version") != VERSION:
            return []
        out: list[Kept] = []
        entries = data.get("sessions")
        for entry in entries if isinstance(entries, list) else []:
            kept = self._parse(entry)
            if kept is not None:
                out.append(kept)
        return out

    def _read(self) -> str:
        """The file's text: a regular file of at most MAX_BYTES, no symlink followed."""
        # O_NONBLOCK: opening a FIFO does not wait for a writer (it is refused below).
        fd = os.open(self.path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        with os.fdopen(fd, "rb") as src:
            info = os.fstat(src.fileno())
            if not stat.S_ISREG(info.st_mode):
                raise OSError(f"{self.path} is not a regular file")
            if info.st_size > MAX_BYTES:
                raise OSError(f"{self.path} is larger than {MAX_BYTES} bytes")
            return src.read(MAX_BYTES + 1).decode("utf-8")

    def _parse(self, entry: object) -> Kept | None:
        if not isinstance(entry, dict):
            return None
        names = entry.get("scopes")
        try:
            scopes = frozenset(Scope(n) for n in names) if isinstance(names, list) else None
        except ValueError:
            return None
        if scopes is None or scopes not in self._keys:
            return None
        key, csrf, address = entry.get("key"), entry.get("csrf"), entry.get("address")
        created, seen, tag = entry.get("created"), entry.get("seen"), entry.get("tag")
        if not (isinstance(key, str) and isinstance(csrf, str) and isinstance(address, str)):
            return None
        if not isinstance(created, (int, float)) or not isinstance(seen, (int, float)):
            return None
        right = session_tag(self._keys[scopes], key, scopes, float(created))
        if not isinstance(tag, str) or not hmac.compare_digest(tag, right):
            return None  # a secret changed since, or the entry was not written by the daemon
        return Kept(key, csrf, scopes, address, float(created), float(seen))

    def save(self, sessions: Iterable[Kept]) -> None:
        """Write the sessions whole (a power cut leaves the old file or the new one)."""
        body = {
            "version": VERSION,
            "sessions": [
                {
                    "key": s.key,
                    "csrf": s.csrf,
                    "scopes": scope_names(s.scopes),
                    "tag": session_tag(self._keys[s.scopes], s.key, s.scopes, s.created),
                    "address": s.address,
                    "created": round(s.created, 3),
                    "seen": round(s.seen, 3),
                }
                for s in sessions
                if s.scopes in self._keys
            ],
        }
        tmp = self.path.with_name(self.path.name + ".tmp")
        try:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()  # a leftover of a power cut, or planted: never written through
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
            fd = os.open(tmp, flags, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as out:
                json.dump(body, out, separators=(",", ":"))
                # Durable before and after the rename: a power cut seconds after a logout
                # would otherwise bring back the file that still held the ended session.
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, self.path)
            fsync_dir(self.path.parent)
        except OSError as exc:
            if not self._failed:  # once: the disk is full or read-only, it stays so a while
                log.warning("web sessions not kept for the next start: %s", exc)
            self._failed = True
            with contextlib.suppress(OSError):
                tmp.unlink()
            return
        self._failed = False
