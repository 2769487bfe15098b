"""The ledger of sequence numbers ever used, and the names a new file must not reuse.

A trip id repeated after a reboot (a Pi without a real-time clock may boot to the same
time twice) must never reuse the name of a file that was uploaded and deleted since: its
S3 key would be overwritten. The ledger remembers every name handed out.
"""

from __future__ import annotations

import contextlib
import os
import threading
from pathlib import Path

from eccm.store import sidecar
from eccm.store.names import UPLOADED_DIR, trim_ledger

LEDGER = ".eccm-sequence"
KEEP = 512  # recent names kept whole in the ledger
# Older trips keep one line each (their highest name), for years of trips.
TRIPS_KEEP = 20_000
# The recorder's thread names data files, a front end's thread audit records (audit.py):
# one append or rewrite at a time, or a rewrite could drop the other's name.
_ADD_LOCK = threading.Lock()


class Ledger:
    """The names of one car's files: here, under uploaded/ and in the ledger file.

    ``keep`` recent names stay whole; older trips keep one line each (their highest
    name, at most ``trips_keep`` of them), for years of trips.

    The names handed out by this process are also remembered in memory (trimmed the same
    way): a record folder that is emptied or swapped while ECCM runs (a USB stick pulled
    and another one plugged in) takes the ledger file with it, and the running trip must
    not start again at 0001 over the names it already uploaded.
    """

    def __init__(self, directory: Path, keep: int, trips_keep: int) -> None:
        self._dir = directory
        self._keep = keep
        self._trips_keep = trips_keep
        self._handed: list[str] = []

    def known_names(self) -> list[str]:
        names: list[str] = []
        for d in (self._dir, self._dir / UPLOADED_DIR):
            with contextlib.suppress(FileNotFoundError):
                names.extend(os.listdir(d))
        names.extend(self.names())
        names.extend(self._handed)
        return names

    def text(self) -> str:
        try:
            return (self._dir / LEDGER).read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return ""

    def names(self) -> list[str]:
        return self.text().splitlines()

    def add(self, name: str) -> None:
        """Record ``name`` durably (fsynced) before a file of that name is created."""
        with _ADD_LOCK:
            self._handed.append(name)
            if len(self._handed) >= 2 * self._keep:
                self._handed = trim_ledger(self._handed, self._keep, self._trips_keep)
            path = self._dir / LEDGER
            text = self.text()
            names = text.splitlines()
            if len(names) >= 2 * self._keep:
                kept = trim_ledger([*names, name], self._keep, self._trips_keep)
                # Rewritten only when that saves a good many lines, not at every file.
                if len(kept) <= len(names) + 1 - self._keep:
                    sidecar.write_atomic(path, "".join(n + "\n" for n in kept).encode())
                    return
            # A power cut mid-append leaves half a line: end it, or this name would be
            # glued to it and lost.
            torn = b"\n" if text and not text.endswith("\n") else b""
            with open(path, "ab") as f:
                f.write(torn + name.encode() + b"\n")
                f.flush()
                os.fsync(f.fileno())
