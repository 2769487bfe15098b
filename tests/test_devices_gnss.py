"""GNSS receivers as they behave in cars: fast, terse, chatty, silent, or not there at all.

Real pseudo-terminals (the simulator and raw bytes) and real sockets; the silence is
driven by a fake clock, so no test waits the ten seconds out.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import tty
from collections.abc import Iterator
from pathlib import Path

import pytest

from eccm.clock import FakeClock, SystemClock
from eccm.gnss.fix import Fix
from eccm.gnss.source import SILENCE_WARNING, GnssSource
from eccm.sim.gnss import NmeaPty, Route, sentences_at
from tests.waiting import wait_until

WAIT = 30.0


class Fixes:
    def __init__(self) -> None:
        self.items: list[Fix] = []
        self._lock = threading.Lock()

    def __call__(self, fix: Fix) -> None:
        with self._lock:
            self.items.append(fix)

    def __len__(self) -> int:
        with self._lock:
            return len(self.items)


class RawPty:
    def __init__(self) -> None:
        self.master, self.slave = os.openpty()
        tty.setraw(self.slave)
        self.path = os.ttyname(self.slave)

    def write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            view = view[os.write(self.master, view) :]

    def close(self) -> None:
        os.close(self.master)
        os.close(self.slave)


@pytest.fixture
def raw_pty() -> Iterator[RawPty]:
    p = RawPty()
    yield p
    p.close()


def epoch_bytes(epoch: float) -> bytes:
    return "".join(line + "\r\n" for line in sentences_at(Route(), epoch)).encode()


def messages(caplog: pytest.LogCaptureFixture, level: int) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name.startswith("eccm.") and r.levelno == level and r.exc_info is None
    ]


@pytest.mark.parametrize("rate_hz", [10.0, 5.0])
def test_fast_receivers_give_whole_epochs(rate_hz: float) -> None:
    got = Fixes()
    with NmeaPty(Route(), rate_hz=rate_hz) as receiver:
        source = GnssSource(receiver.path, 9600, got, SystemClock())
        source.start()
        try:
            wait_until(lambda: len(got) >= 12, WAIT, "a dozen fixes")
        finally:
            source.stop()
    # Every fix but possibly the very first (sent before the decoder knew this receiver
    # sends RMC and GGA) carries both: a row never gets a position without its altitude.
    for fix in got.items[1:]:
        assert fix.has_position
        assert fix.altitude is not None and fix.quality == 1 and fix.satellites is not None
        assert fix.speed is not None and fix.time_utc is not None
    times = [f.time_utc for f in got.items[1:]]
    assert times == sorted(times) and len(set(times)) == len(times)


@contextlib.contextmanager
def receiving(raw_pty: RawPty, got: Fixes, clock: FakeClock) -> Iterator[GnssSource]:
    """A source on the pty that has delivered two fixes; stopped on the way out."""
    source = GnssSource(raw_pty.path, 9600, got, clock)
    source.start()
    try:
        wait_until(lambda: source.connected, WAIT, "the port to open")
        # 2026: an earlier date would be a GPS week rollover, with a warning of its own.
        raw_pty.write(epoch_bytes(1_795_000_000.0) + epoch_bytes(1_795_000_001.0))
        wait_until(lambda: len(got) >= 2, WAIT, "fixes")
        yield source
    finally:
        source.stop()


def test_a_logger_that_was_itself_held_up_does_not_blame_the_receiver(
    raw_pty: RawPty, caplog: pytest.LogCaptureFixture
) -> None:
    """Found: after `kill -STOP` of the daemon for 10 s and SIGCONT, the log said the
    receiver "stopped sending for 10 s although the port is open" and reopened it: the
    first read after the stall takes one byte of what queued meanwhile, and the silence
    was judged on it."""
    caplog.set_level(logging.INFO, logger="eccm.gnss")
    clock = FakeClock()
    got = Fixes()
    with receiving(raw_pty, got, clock) as source:
        # The logger stood still for longer than the silence while the receiver went on:
        # its sentences waited in the port.
        clock.advance(SILENCE_WARNING + 1)
        raw_pty.write(epoch_bytes(1_795_000_012.0) + epoch_bytes(1_795_000_013.0))
        wait_until(lambda: len(got) >= 4, WAIT, "the queued fixes")
        assert source.connected
    assert not messages(caplog, logging.WARNING), messages(caplog, logging.WARNING)


def test_a_receiver_that_goes_silent_without_closing_is_reopened_and_comes_back(
    raw_pty: RawPty, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="eccm.gnss")
    clock = FakeClock()
    got = Fixes()
    with receiving(raw_pty, got, clock) as source:
        # The receiver hangs: the port stays open, nothing comes.
        clock.advance(SILENCE_WARNING + 1)
        wait_until(lambda: messages(caplog, logging.WARNING), WAIT, "the warning")
        (warning,) = messages(caplog, logging.WARNING)
        assert raw_pty.path in warning and "stopped sending" in warning
        wait_until(lambda: source.connected, WAIT, "the port to be reopened")
        before = len(got)
        raw_pty.write(epoch_bytes(1_795_000_020.0) + epoch_bytes(1_795_000_021.0))
        wait_until(lambda: len(got) > before, WAIT, "fixes after the silence")
        wait_until(
            lambda: any("is back" in m for m in messages(caplog, logging.INFO)),
            WAIT,
            "the receiver to be back",
        )
    assert len(messages(caplog, logging.WARNING)) == 1
    assert not messages(caplog, logging.ERROR)


def test_gpsd_not_running_is_one_clear_warning() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens there once closed
    handler_records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            handler_records.append(record)

    logger = logging.getLogger("eccm.gnss.source")
    keep = Keep(logging.WARNING)
    logger.addHandler(keep)
    source = GnssSource(f"gpsd://127.0.0.1:{port}", 9600, Fixes(), SystemClock())
    source.start()
    try:
        wait_until(lambda: handler_records, WAIT, "the warning")
    finally:
        source.stop()
        logger.removeHandler(keep)
    (record,) = handler_records
    text = record.getMessage()
    assert "is gpsd running" in text and f"127.0.0.1:{port}" in text
    assert "?." not in text  # one sentence ends once


@pytest.mark.parametrize("kind", ["a folder", "a file"])
def test_a_file_or_folder_named_as_the_receiver_says_it_is_no_serial_device(
    tmp_path: Path, kind: str
) -> None:
    """Found: GPS_INTERFACE naming a file gave 'cannot be opened (Could not configure port:
    (25, 'Inappropriate ioctl for device'))', which names neither the key nor the mistake."""
    path = tmp_path
    if kind == "a file":
        path = tmp_path / "gnss.txt"
        path.write_text("not a receiver\n")
    handler_records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            handler_records.append(record)

    logger = logging.getLogger("eccm.gnss.source")
    keep = Keep(logging.WARNING)
    logger.addHandler(keep)
    source = GnssSource(str(path), 9600, Fixes(), SystemClock())
    source.start()
    try:
        wait_until(lambda: handler_records, WAIT, "the warning")
    finally:
        source.stop()
        logger.removeHandler(keep)
    (record,) = handler_records
    text = record.getMessage()
    assert f"{path} unavailable: {kind}, not a serial device: set GPS_INTERFACE" in text, text
    assert record.exc_info is None
