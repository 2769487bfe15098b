"""The web sessions' file in a record folder others may write (a share, a second user):
what is planted there must neither hang the daemon's start nor make it write elsewhere."""

from __future__ import annotations

import os
import threading
from pathlib import Path

from eccm.clock import SystemClock
from eccm.service import ALL_SCOPES
from eccm.web.keep import FILE_NAME, Kept, SessionFile
from eccm.web.sessions import Sessions

SECRET = "correct horse battery staple, a secret of 40+ chars"


def _load_within(keep: SessionFile, seconds: float) -> list[Kept] | None:
    """What ``keep.load()`` returns, or None if it has not returned within ``seconds``."""
    out: list[list[Kept]] = []
    reader = threading.Thread(target=lambda: out.append(keep.load()), daemon=True)
    reader.start()
    reader.join(seconds)
    return out[0] if out else None


def test_a_fifo_in_place_of_the_file_does_not_hang_the_start(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / FILE_NAME)
    assert _load_within(SessionFile(tmp_path, SECRET), 10.0) == []


def test_a_symlink_in_place_of_the_file_is_not_followed(tmp_path: Path) -> None:
    # /dev/zero never ends: read whole, it took all the Pi's memory.
    (tmp_path / FILE_NAME).symlink_to("/dev/zero")
    assert _load_within(SessionFile(tmp_path, SECRET), 10.0) == []


def test_a_huge_file_is_not_read(tmp_path: Path) -> None:
    with open(tmp_path / FILE_NAME, "wb") as out:
        out.truncate(4 * 1024**3)  # sparse: 4 GiB of NUL bytes, no disk used
    assert _load_within(SessionFile(tmp_path, SECRET), 10.0) == []


def test_the_temporary_file_being_a_symlink_does_not_write_through_it(tmp_path: Path) -> None:
    victim = tmp_path / "elsewhere.txt"
    victim.write_text("someone else's file\n")
    folder = tmp_path / "records"
    folder.mkdir()
    (folder / (FILE_NAME + ".tmp")).symlink_to(victim)
    keep = SessionFile(folder, SECRET)
    sessions = Sessions(SystemClock(), keep=keep)
    sessions.open(ALL_SCOPES, "127.0.0.1")
    assert victim.read_text() == "someone else's file\n"
    assert not (folder / FILE_NAME).is_symlink()
    assert len(keep.load()) == 1
