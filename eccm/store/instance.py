"""One ECCM per record folder.

Two loggers on one folder take each other's open file for a power cut's leftover (the
second one's start-up recovery closes the first one's ``.part`` under it), close each
other's trip summaries and share one adapter. That happens easily on a Pi: the systemd
service runs and the user also types ``./start.sh``, or both cron and systemd start it.
So the daemon holds an exclusive ``flock`` on ``.eccm.lock`` in the folder for its whole
life, taken before anything in the folder is touched; a second one is refused with the
first one's pid. The kernel drops the lock when the process ends, however it ends (a
power cut, SIGKILL), so a stale lock file never keeps the logger from starting.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
from pathlib import Path

from eccm.errors import EccmError

log = logging.getLogger(__name__)

LOCK_NAME = ".eccm.lock"
DAEMON_HINT = (
    "stop it first (e.g. `systemctl stop eccm`) or give this one another folder; "
    "two would close each other's open files"
)


class AlreadyRunning(EccmError):
    """Another ECCM holds the folder."""


class InstanceLock:
    """The exclusive hold of one folder (see the module docstring).

    ``what`` names the folder in messages, e.g. ``RECORD_DIRECTORY_LOCATION=/data``;
    ``hint`` says what to do when another process holds it.
    """

    def __init__(self, folder: Path, what: str, hint: str = DAEMON_HINT) -> None:
        self.folder = folder
        self.what = what
        self.hint = hint
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> bool:
        """Take the folder: True when held, False when the folder cannot be made or
        opened (a missing USB stick; the recorder reports that itself). Raises
        :class:`AlreadyRunning` when another process holds it."""
        if self._fd is not None:
            return True
        path = self.folder / LOCK_NAME
        writable = True
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            # The recorder says so in its one ERROR line (and writes once the folder can be
            # made): a second line here would be the same news.
            log.debug("cannot make %s to lock it: %s", self.folder, exc)
            return False
        try:
            try:
                fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            except OSError as exc:
                if exc.errno not in (errno.EACCES, errno.EPERM, errno.EROFS):
                    raise
                # A lock file this user may not write (left by a `sudo ./start.sh`): flock
                # works on a read-only descriptor too; only the pid is not written.
                fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
                writable = False
        except OSError as exc:
            log.warning("cannot lock %s against a second ECCM: %s", self.folder, exc)
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_pid(fd)
            if holder is not None and not _alive(holder):
                holder = None  # the pid of an earlier holder (this one could not write it)
            os.close(fd)
            who = f"pid {holder}" if holder else "another process"
            raise AlreadyRunning(
                f"another ECCM ({who}) is already using {self.what}: {self.hint}"
            ) from None
        except OSError as exc:  # a file system without locks: run unguarded, say so
            os.close(fd)
            log.warning("cannot lock %s against a second ECCM: %s", self.folder, exc)
            return False
        # The holder's pid, for the message a second one prints (after the lock: a
        # refused process never writes into the file).
        if writable:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, 0)
                os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd
        return True

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the last descriptor drops the flock
            self._fd = None


def _read_pid(fd: int) -> int | None:
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # another user's process: alive
        return True
    return True
