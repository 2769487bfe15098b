"""Chaos: SIGTERM (systemctl stop, a clean shutdown) at awkward moments.

`eccm run` as a real subprocess must exit 0 within 20 s (systemd's stop timeout is 25 s),
leave no `.part` behind and print no traceback: while the adapter is still connecting (an
adapter that never answers), during an upload to a server that accepts the connection and
never answers, with a gpsd that never speaks, and as soon as the daemon has started.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from eccm.sim.gnss import NmeaPty, Route
from tests import s3server
from tests.waiting import wait_until

STOP_WITHIN = 20.0


class HungServer:
    """A TCP listener that accepts every connection and never says a word."""

    def __init__(self) -> None:
        self._sock = socket.socket()
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(64)
        self.port: int = self._sock.getsockname()[1]
        self.accepted = 0
        self._conns: list[socket.socket] = []
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._closed:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            self._conns.append(conn)
            self.accepted += 1

    def close(self) -> None:
        self._closed = True
        self._sock.close()
        for c in self._conns:
            with contextlib.suppress(OSError):
                c.close()


@pytest.fixture
def hung() -> Iterator[HungServer]:
    server = HungServer()
    yield server
    server.close()


@pytest.fixture
def silent_adapter() -> Iterator[str]:
    """A serial device where an adapter never answers (a pseudo-terminal nobody serves)."""
    master, slave = os.openpty()
    yield os.ttyname(slave)
    os.close(master)
    os.close(slave)


def write_config(path: Path, **values: str) -> Path:
    path.write_text("[DEFAULT]\n" + "".join(f"{k}={v}\n" for k, v in values.items()))
    return path


class Daemon:
    def __init__(self, config: Path, wrapper: Sequence[str] = ()) -> None:
        self.proc = subprocess.Popen(
            [*wrapper, sys.executable, "-m", "eccm.cli", "run", "--config", str(config)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        self.err: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.err.append(line.decode(errors="replace"))

    def logged(self, needle: str) -> bool:
        return any(needle in line for line in list(self.err))

    def sigterm(self) -> tuple[int, float, str]:
        """SIGTERM; (exit code, seconds it took, stderr)."""
        t0 = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout=60)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
        took = time.monotonic() - t0
        self._reader.join(10)
        return code, took, "".join(self.err)


def assert_clean_stop(daemon: Daemon, records: Path) -> str:
    code, took, err = daemon.sigterm()
    print(f"stopped in {took:.1f} s")
    assert code == 0, err
    assert took < STOP_WITHIN, f"stopped in {took:.1f} s\n{err}"
    assert "Traceback" not in err, err
    assert not list(records.glob("*.part")), [p.name for p in records.iterdir()]
    return err


def test_sigterm_while_the_adapter_connects_and_the_s3_server_hangs(
    tmp_path: Path, silent_adapter: str, hung: HungServer
) -> None:
    records = tmp_path / "records"
    s3server.make_closed_file(records, car="term-car")
    with NmeaPty(Route(), rate_hz=4.0) as gnss:
        config = write_config(
            tmp_path / "config.ini",
            CAR_IDENTIFIER="term-car",
            OBD_INTERFACE=silent_adapter,
            GPS_POSITION_MONITORING="yes",
            GPS_INTERFACE=gnss.path,
            RECORD_DIRECTORY_LOCATION=str(records),
            S3_SERVER_ENDPOINT=f"http://127.0.0.1:{hung.port}",
            S3_SERVER_BUCKET="bucket",
            S3_SERVER_AK="ak",
            S3_SERVER_SK="sk",
            S3_SYNC_INTERVAL="1",
            S3_SYNC_JITTER="0",
        )
        daemon = Daemon(config)
        # GNSS rows are being written while the adapter connects and an upload hangs
        wait_until(lambda: list(records.glob("*.tsv.part")), 60, "GNSS rows in an open file")
        wait_until(lambda: hung.accepted > 0, 60, "the uploader stuck on the server")
        err = assert_clean_stop(daemon, records)
    assert "stopped in" in err
    # nothing was deleted without an upload: the closed file and the new one are kept
    kept = sorted(p.name for p in records.glob("term-car_*.tsv.gz"))
    assert len(kept) == 2, kept
    for name in kept:
        assert (records / f"{name}.json").exists()


def no_adapter_config(tmp_path: Path) -> tuple[Path, Path]:
    """(records folder, config) of a daemon whose adapter is not plugged in."""
    records = tmp_path / "records"
    config = write_config(
        tmp_path / "config.ini",
        CAR_IDENTIFIER="term-car",
        OBD_INTERFACE=str(tmp_path / "no-adapter"),
        RECORD_DIRECTORY_LOCATION=str(records),
    )
    return records, config


def test_sigterm_as_soon_as_the_daemon_has_started(tmp_path: Path) -> None:
    records, config = no_adapter_config(tmp_path)
    daemon = Daemon(config)
    wait_until(lambda: daemon.err, 60, "the first log line")
    assert_clean_stop(daemon, records)


# Loaded by the daemon's interpreter through PYTHONPATH: holds the import of python-OBD
# until the test opens the gate, so that a SIGTERM lands while the libraries import.
GATE_SITECUSTOMIZE = """
import importlib.abc, os, pathlib, sys, time

class _Gate(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "obd":
            sys.meta_path.remove(self)
            pathlib.Path(os.environ["ECCM_TEST_GATE"] + ".reached").touch()
            while not pathlib.Path(os.environ["ECCM_TEST_GATE"]).exists():
                time.sleep(0.01)
        return None

sys.meta_path.insert(0, _Gate())
"""


def test_sigterm_while_the_libraries_are_still_importing(tmp_path: Path) -> None:
    """A SIGTERM while python-OBD is still importing is a clean stop (exit 0), not 143."""
    records, config = no_adapter_config(tmp_path)
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(GATE_SITECUSTOMIZE)
    gate = tmp_path / "gate"
    env = {**os.environ, "ECCM_TEST_GATE": str(gate)}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(site), env.get("PYTHONPATH")]))
    proc = subprocess.Popen(
        [sys.executable, "-m", "eccm.cli", "run", "--config", str(config)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=env,
    )
    try:
        wait_until(lambda: Path(f"{gate}.reached").exists(), 60, "the import of python-OBD")
        proc.send_signal(signal.SIGTERM)
        gate.touch()
        _out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err.decode(errors="replace")
    assert b"Traceback" not in err, err.decode(errors="replace")
    assert not records.exists() or not list(records.glob("*.part"))


def test_sigterm_with_a_gpsd_that_never_speaks(tmp_path: Path, hung: HungServer) -> None:
    records = tmp_path / "records"
    config = write_config(
        tmp_path / "config.ini",
        CAR_IDENTIFIER="term-car",
        OBD_INTERFACE=str(tmp_path / "no-adapter"),
        GPS_POSITION_MONITORING="yes",
        GPS_INTERFACE=f"gpsd://127.0.0.1:{hung.port}",
        RECORD_DIRECTORY_LOCATION=str(records),
    )
    daemon = Daemon(config)
    wait_until(lambda: hung.accepted > 0, 60, "the connection to gpsd")
    wait_until(lambda: daemon.logged("ECCM running"), 60)
    assert_clean_stop(daemon, records)
