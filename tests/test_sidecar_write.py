"""write_atomic on a disk that cannot take the file leaves no temp behind."""

from __future__ import annotations

import resource
import signal
from pathlib import Path

import pytest

from eccm.sidecar import write_atomic


def test_a_failed_write_removes_its_temp(tmp_path: Path) -> None:
    target = tmp_path / "trip_summary.json"
    # A file size limit makes the write fail with EFBIG as a full disk fails with ENOSPC.
    old_handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (4096, hard))
    try:
        with pytest.raises(OSError):
            write_atomic(target, b"x" * 100_000)
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, old_handler)
    assert list(tmp_path.iterdir()) == []
