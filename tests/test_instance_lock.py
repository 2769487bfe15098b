"""One ECCM per record folder, and a demo that never tramples another.

A second `eccm run` on the same RECORD_DIRECTORY_LOCATION (the systemd service runs and
the user types ./start.sh too) used to take the first one's open file for a power cut's
leftover and close it under it. It is now refused in one line before it touches anything;
a lock left by a killed daemon never blocks the next start (the kernel drops it).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import pytest

from eccm.sim.gnss import NmeaPty, Route
from eccm.store.instance import LOCK_NAME, AlreadyRunning, InstanceLock
from tests.test_chaos_sigterm import Daemon, assert_clean_stop, write_config
from tests.unprivileged import bound_by_permissions
from tests.waiting import wait_until

HOLD = """
import sys, time
from pathlib import Path
from eccm.store.instance import InstanceLock
InstanceLock(Path(sys.argv[1]), "the folder").acquire()
print("held", flush=True)
time.sleep(600)
"""


def holder(folder: Path) -> subprocess.Popen[str]:
    """Another process holding ``folder``, as a running ECCM does."""
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(folder)], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_a_second_holder_is_refused_with_the_first_ones_pid(tmp_path: Path) -> None:
    proc = holder(tmp_path)
    try:
        with pytest.raises(AlreadyRunning) as refused:
            InstanceLock(tmp_path, "RECORD_DIRECTORY_LOCATION=x").acquire()
        assert f"pid {proc.pid}" in str(refused.value)
        assert "RECORD_DIRECTORY_LOCATION=x" in str(refused.value)
    finally:
        proc.kill()
        proc.wait()


TRY = """
import sys, time
from pathlib import Path
from eccm.store.instance import AlreadyRunning, InstanceLock
try:
    print(InstanceLock(Path(sys.argv[1]), "the folder").acquire(), flush=True)
except AlreadyRunning as exc:
    print("refused:", exc, flush=True)
    sys.exit(0)
time.sleep(600)
"""


def test_a_lock_file_the_user_may_not_write_still_locks(tmp_path: Path) -> None:
    # Left by a `sudo ./start.sh` (root's, 0644; here read-only for its owner, and the
    # processes bound by permissions when the suite runs as root): opening it for writing
    # failed, and every later ECCM ran unguarded, two at once again.
    lock = tmp_path / LOCK_NAME
    lock.write_text("999999999\n")  # that earlier run's pid, long gone
    lock.chmod(0o444)
    command = [*bound_by_permissions(), sys.executable, "-c", TRY, str(tmp_path)]
    first = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    try:
        assert first.stdout is not None
        assert first.stdout.readline().strip() == "True"
        second = subprocess.run(command, capture_output=True, text=True, timeout=60)
    finally:
        first.kill()
        first.wait()
    assert second.stdout.startswith("refused: another ECCM (another process)"), second
    assert lock.read_text() == "999999999\n"


def test_a_killed_holder_leaves_nothing_that_blocks(tmp_path: Path) -> None:
    proc = holder(tmp_path)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert (tmp_path / LOCK_NAME).exists()  # the file stays, the lock does not
    lock = InstanceLock(tmp_path, "the folder")
    assert lock.acquire()
    assert (tmp_path / LOCK_NAME).read_text().strip() == str(os.getpid())
    lock.release()
    assert InstanceLock(tmp_path, "the folder").acquire()


def test_a_folder_that_cannot_be_made_is_not_an_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    # The recorder reports such a folder itself (and writes once it appears).
    assert InstanceLock(blocker / "records", "the folder").acquire() is False


def test_a_record_folder_that_cannot_be_made_is_said_once_and_in_the_start_line(
    tmp_path: Path,
) -> None:
    # A user's trial: RECORD_DIRECTORY_LOCATION under a file. The log said it five times
    # (the lock, the trip ids, the summaries, the audit records, the recorder), then
    # "ECCM running: ... recording to <it>" as if all were well.
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    records = blocker / "records"
    config = write_config(
        tmp_path / "config.ini",
        CAR_IDENTIFIER="nofolder-car",
        OBD_INTERFACE=str(tmp_path / "no-adapter"),
        RECORD_DIRECTORY_LOCATION=str(records),
    )
    daemon = Daemon(config)
    try:
        wait_until(lambda: daemon.logged("ECCM running"), 60, "the start line")
    finally:
        code, _took, err = daemon.sigterm()
    assert code == 0, err
    about = [
        line
        for line in err.splitlines()
        if str(blocker) in line and (" WARNING " in line or " ERROR " in line)
    ]
    assert len(about) == 1, err
    assert "cannot create RECORD_DIRECTORY_LOCATION" in about[0]
    start = next(line for line in err.splitlines() if "ECCM running" in line)
    assert f"recording to {records} (not writable now: rows are dropped until it is" in start
    assert "Traceback" not in err


def test_a_record_folder_that_appears_after_the_start_is_locked_then(tmp_path: Path) -> None:
    """Found: a record folder on a drive mounted after the start was recorded into without
    the lock, so a `./start.sh` typed after that took the running one's open file for a
    power cut's leftover. The folder is now locked once it is there."""
    blocker = tmp_path / "mnt"
    blocker.write_text("")  # the drive is not there: the folder cannot be made
    records = blocker / "records"
    config = write_config(
        tmp_path / "config.ini",
        CAR_IDENTIFIER="late-car",
        OBD_INTERFACE=str(tmp_path / "no-adapter"),
        RECORD_DIRECTORY_LOCATION=str(records),
    )
    first = Daemon(config)
    try:
        wait_until(lambda: first.logged("ECCM running"), 60, "the start line")
        blocker.unlink()
        records.mkdir(parents=True)  # the drive is mounted
        wait_until(lambda: first.logged("locked against a second ECCM"), 60, "the lock")
        second = subprocess.run(
            [sys.executable, "-m", "eccm.cli", "run", "--config", str(config)],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert second.returncode == 1, second.stderr
        assert f"another ECCM (pid {first.proc.pid})" in second.stderr, second.stderr
    finally:
        code, _took, err = first.sigterm()
    assert code == 0, err
    assert "Traceback" not in err, err


def gnss_daemon(
    tmp_path: Path, gnss: NmeaPty, wrapper: Sequence[str] = ()
) -> tuple[Path, Path, Daemon]:
    """(records, config, `eccm run` writing GNSS rows there), once its first file is open."""
    records = tmp_path / "records"
    config = write_config(
        tmp_path / "config.ini",
        CAR_IDENTIFIER="lock-car",
        OBD_INTERFACE=str(tmp_path / "no-adapter"),
        GPS_POSITION_MONITORING="yes",
        GPS_INTERFACE=gnss.path,
        RECORD_DIRECTORY_LOCATION=str(records),
    )
    daemon = Daemon(config, wrapper)
    try:
        wait_until(lambda: list(records.glob("*.tsv.part")), 60, "the first file")
    except BaseException:
        daemon.proc.kill()
        raise
    return records, config, daemon


def test_a_second_daemon_is_refused_and_the_first_keeps_writing(tmp_path: Path) -> None:
    with NmeaPty(Route(), rate_hz=4.0) as gnss:
        records, config, first = gnss_daemon(tmp_path, gnss)
        try:
            open_file = list(records.glob("*.tsv.part"))
            second = subprocess.run(
                [sys.executable, "-m", "eccm.cli", "run", "--config", str(config)],
                capture_output=True,
                text=True,
                timeout=120,
            )
            assert second.returncode == 1, second.stderr
            assert "Traceback" not in second.stderr, second.stderr
            lines = second.stderr.strip().splitlines()
            assert lines[-1].startswith("eccm: error: another ECCM"), second.stderr
            assert f"pid {first.proc.pid}" in lines[-1]
            assert f"RECORD_DIRECTORY_LOCATION={records}" in lines[-1]
            assert "recovered" not in second.stderr
            # The first one's file is still open, and its rows still come.
            assert open_file[0].exists()
            size = open_file[0].stat().st_size
            wait_until(lambda: open_file[0].stat().st_size > size, 60, "more rows")
            err = assert_clean_stop(first, records)
        finally:
            if first.proc.poll() is None:
                first.proc.kill()
    assert "cannot close" not in err, err
    assert not list(records.glob("*recovered*")), [p.name for p in records.iterdir()]


def test_a_second_demo_in_the_same_folder_changes_nothing(tmp_path: Path) -> None:
    folder = tmp_path / "demo-data"
    (folder / "records").mkdir(parents=True)
    kept = folder / "records" / "kept.tsv.gz"
    kept.write_bytes(b"a running demo's file")
    # A running demo's folder: its generated config (a folder that is no demo's is
    # refused before the lock is looked at: test_demo_folder).
    demo_config = "# Generated by `eccm demo`: the demo's own configuration.\n[DEFAULT]\n"
    (folder / "config.ini").write_text(demo_config)
    proc = holder(folder)
    try:
        demo = subprocess.run(
            [sys.executable, "-m", "eccm.cli", "demo", "--dir", str(folder), "--duration", "5"],
            capture_output=True,
            text=True,
            timeout=120,
        )
    finally:
        proc.kill()
        proc.wait()
    assert demo.returncode == 1, demo.stderr
    assert "Traceback" not in demo.stderr, demo.stderr
    assert f"pid {proc.pid}" in demo.stderr and "--dir" in demo.stderr, demo.stderr
    assert kept.read_bytes() == b"a running demo's file"
    assert (folder / "config.ini").read_text() == demo_config


def test_sighup_is_a_clean_stop(tmp_path: Path) -> None:
    """A terminal closed under ./start.sh sends SIGHUP: the file is closed, as on SIGTERM."""
    with NmeaPty(Route(), rate_hz=4.0) as gnss:
        records, _config, daemon = gnss_daemon(tmp_path, gnss)
        try:
            daemon.proc.send_signal(signal.SIGHUP)
            code = daemon.proc.wait(timeout=60)
        finally:
            if daemon.proc.poll() is None:
                daemon.proc.kill()
    daemon._reader.join(10)
    err = "".join(daemon.err)
    assert code == 0, err
    assert "received SIGHUP" in err, err
    assert not list(records.glob("*.part")), [p.name for p in records.iterdir()]
    assert list(records.glob("*.tsv*")), [p.name for p in records.iterdir()]


def test_sighup_under_nohup_is_ignored_as_nohup_asks(tmp_path: Path) -> None:
    """`nohup ./start.sh &` and logging out: the logger goes on (a handler installed over
    nohup's choice stopped it)."""
    with NmeaPty(Route(), rate_hz=4.0) as gnss:
        records, _config, daemon = gnss_daemon(tmp_path, gnss, ["nohup"])
        try:
            part = next(records.glob("*.tsv.part"))
            size = part.stat().st_size

            def grew_or_ended() -> bool:
                try:
                    return daemon.proc.poll() is not None or part.stat().st_size > size
                except FileNotFoundError:
                    return True  # closed: stopping (the assertion below says so)

            daemon.proc.send_signal(signal.SIGHUP)
            wait_until(grew_or_ended, 60, "rows after the SIGHUP")
            assert daemon.proc.poll() is None, "".join(daemon.err)
            err = assert_clean_stop(daemon, records)
        finally:
            if daemon.proc.poll() is None:
                daemon.proc.kill()
    assert "received SIGHUP" not in err and "received SIGTERM" in err, err


ORPHAN = """
import sys, time
from pathlib import Path
from eccm.sim.s3 import LocalS3
server = LocalS3(Path(sys.argv[1]), bucket="orphan")
server.start()
print(server._proc.pid, flush=True)
time.sleep(600)
"""


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"  # a zombie nobody reaps (no init in a container) is gone too


def test_the_demo_s3_server_ends_with_a_killed_parent(tmp_path: Path) -> None:
    """SIGKILL of the demo (or of a test) must not leave SeaweedFS holding its ports."""
    proc = subprocess.Popen(
        [sys.executable, "-c", ORPHAN, str(tmp_path / "s3")], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    line = proc.stdout.readline().strip()
    assert line.isdigit(), f"no server pid: {line!r}"
    server = int(line)
    try:
        assert alive(server)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        wait_until(lambda: not alive(server), 90, "SeaweedFS to end with its parent")
    finally:
        if alive(server):
            os.kill(server, signal.SIGKILL)
