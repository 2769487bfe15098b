"""GnssSource reading NMEA from real pseudo-terminals through pyserial."""

from __future__ import annotations

import dataclasses
import logging
import os
import threading
import time
import tty
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from eccm.backoff import Backoff
from eccm.clock import FakeClock, SystemClock
from eccm.errors import ConfigError
from eccm.gnss.fix import Fix
from eccm.gnss.nmea import NmeaDecoder
from eccm.gnss.source import SILENCE_WARNING, GnssSource, parse_gpsd_url
from tests.nmea_sentences import REPLAY_PIVOT

DATA = Path(__file__).parent / "data" / "nmea"


def stream(name: str) -> bytes:
    lines = (DATA / name).read_bytes().splitlines(keepends=True)
    return b"".join(line for line in lines if not line.startswith(b"#"))


class Pty:
    """A pseudo-terminal: the test writes the receiver's bytes into the master side."""

    def __init__(self) -> None:
        self.master, self.slave = os.openpty()
        tty.setraw(self.slave)
        self.path = os.ttyname(self.slave)
        self.closed = False

    def write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            n = os.write(self.master, view)
            view = view[n:]

    def unplug(self) -> None:
        if not self.closed:
            self.closed = True
            os.close(self.master)
            os.close(self.slave)


@pytest.fixture
def pty() -> Iterator[Pty]:
    p = Pty()
    yield p
    p.unplug()


def wait_for(condition: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.01)


def without_arrival(fixes: list[Fix]) -> list[Fix]:
    return [dataclasses.replace(f, received=0.0, received_wall=0.0) for f in fixes]


class Collector:
    def __init__(self) -> None:
        self.fixes: list[Fix] = []
        self._lock = threading.Lock()

    def __call__(self, fix: Fix) -> None:
        with self._lock:
            self.fixes.append(fix)

    def __len__(self) -> int:
        with self._lock:
            return len(self.fixes)


def test_a_capture_written_to_a_pty_comes_out_as_the_same_fixes(pty: Pty) -> None:
    data = stream("ublox-8.log")
    expected = NmeaDecoder(FakeClock(), REPLAY_PIVOT).feed(data)
    got = Collector()
    source = GnssSource(pty.path, 9600, got, SystemClock(), pivot=REPLAY_PIVOT)
    source.start()
    try:
        wait_for(lambda: source.connected)
        pty.write(data)
        wait_for(lambda: len(got) == len(expected))
    finally:
        source.stop()
    assert without_arrival(got.fixes) == without_arrival(expected)
    assert source.fixes == len(expected)
    assert source.skipped == 2  # the UBX run and the truncated last sentence
    assert not source.running


def test_unplug_and_a_new_device_at_the_same_path(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    link = tmp_path / "gnss"
    first = Pty()
    link.symlink_to(first.path)
    lines = stream("sirfstarv-nmea.log").splitlines(keepends=True)
    before, after = b"".join(lines[:20]), b"".join(lines[100:130])
    got = Collector()
    source = GnssSource(str(link), 9600, got, SystemClock(), max_backoff=0.5, pivot=REPLAY_PIVOT)
    second: Pty | None = None
    with caplog.at_level(logging.INFO, logger="eccm.gnss.source"):
        source.start()
        try:
            wait_for(lambda: source.connected)
            first.write(before)
            wait_for(lambda: len(got) == len(NmeaDecoder(FakeClock(), REPLAY_PIVOT).feed(before)))

            # udev removes the name with the device: a link left on the closed /dev/pts/N
            # would lead to whatever pseudo-terminal gets that number next (another test's).
            link.unlink()
            first.unplug()
            wait_for(lambda: not source.connected)
            assert sum(r.levelno == logging.WARNING for r in caplog.records) == 1

            second = Pty()
            tmp_link = tmp_path / "gnss.new"
            tmp_link.symlink_to(second.path)
            tmp_link.replace(link)  # udev re-points the name when the receiver comes back
            wait_for(lambda: source.connected)
            n = len(got)
            second.write(after)
            wait_for(
                lambda: len(got) == n + len(NmeaDecoder(FakeClock(), REPLAY_PIVOT).feed(after))
            )
        finally:
            source.stop()
            first.unplug()
            if second is not None:
                second.unplug()
    last = got.fixes[-1]
    assert last.time_utc is not None and last.has_position
    # The last sentence sent is the GPGGA of 02:09:56, whose GNRMC was not sent: the last
    # complete epoch is the one before.
    assert time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(last.time_utc)) == "2019-02-05 02:09:55"
    records = [r for r in caplog.records if r.name == "eccm.gnss.source"]
    warnings = [r for r in records if r.levelno == logging.WARNING]
    assert len(warnings) == 1, [r.getMessage() for r in warnings]
    assert "unavailable" in warnings[0].getMessage()
    assert sum("is back" in r.getMessage() for r in records) == 1
    assert all(r.exc_info is None for r in records)


def test_missing_device_is_one_warning_and_stop_interrupts_the_backoff(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    missing = tmp_path / "no-such-receiver"
    # A 60 s wait between attempts: stop() must not sit it out.
    source = GnssSource(
        str(missing), 9600, lambda f: None, SystemClock(), backoff=Backoff(base=60.0, cap=60.0)
    )
    with caplog.at_level(logging.DEBUG, logger="eccm.gnss.source"):
        source.start()
        wait_for(lambda: any("next attempt" in r.getMessage() for r in caplog.records))
        source.stop()
    assert not source.running
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1
    message = warnings[0].getMessage()
    assert str(missing) in message and "not found" in message and "GPS_INTERFACE" in message
    assert all(r.exc_info is None for r in caplog.records)
    assert not source.connected and source.fixes == 0


def test_retries_are_logged_once_until_the_device_appears(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    link = tmp_path / "gnss"
    got = Collector()
    source = GnssSource(str(link), 9600, got, SystemClock(), max_backoff=0.2, pivot=REPLAY_PIVOT)
    pty: Pty | None = None
    with caplog.at_level(logging.DEBUG, logger="eccm.gnss.source"):
        source.start()
        try:
            wait_for(
                lambda: sum("still unavailable" in r.getMessage() for r in caplog.records) >= 3
            )
            pty = Pty()
            link.symlink_to(pty.path)
            wait_for(lambda: source.connected)
            pty.write(stream("skytraq-dgps.log")[:2000])
            wait_for(lambda: len(got) > 0)
        finally:
            source.stop()
            if pty is not None:
                pty.unplug()
    assert sum(r.levelno == logging.WARNING for r in caplog.records) == 1
    assert sum("is back" in r.getMessage() for r in caplog.records) == 1


def test_a_silent_device_is_reported_once_with_a_baudrate_hint(
    pty: Pty, caplog: pytest.LogCaptureFixture
) -> None:
    clock = FakeClock()
    source = GnssSource(pty.path, 4800, lambda f: None, clock, pivot=REPLAY_PIVOT)
    with caplog.at_level(logging.INFO, logger="eccm.gnss.source"):
        source.start()
        try:
            wait_for(lambda: source.connected)
            pty.write(b"\x00\xff\x13\x80" * 50)  # what a wrong baud rate looks like
            clock.advance(SILENCE_WARNING + 1)
            wait_for(lambda: any("GPS_BAUDRATE=4800" in r.getMessage() for r in caplog.records))
            pty.write(stream("haicom-305N.log")[:3000])
            wait_for(lambda: any("now sends usable data" in r.getMessage() for r in caplog.records))
        finally:
            source.stop()
    assert sum(r.levelno == logging.WARNING for r in caplog.records) == 1
    assert source.skipped >= 1


def test_a_failing_consumer_does_not_stop_the_reader(
    pty: Pty, caplog: pytest.LogCaptureFixture
) -> None:
    calls: list[Fix] = []

    def consumer(fix: Fix) -> None:
        calls.append(fix)
        if len(calls) == 1:
            raise RuntimeError("bug downstream")

    source = GnssSource(pty.path, 9600, consumer, SystemClock(), pivot=REPLAY_PIVOT)
    expected = len(NmeaDecoder(FakeClock(), REPLAY_PIVOT).feed(stream("beidou-gb.log")))
    source.start()
    try:
        wait_for(lambda: source.connected)
        pty.write(stream("beidou-gb.log"))
        wait_for(lambda: len(calls) == expected)
    finally:
        source.stop()
    assert any(r.exc_info and "fix consumer failed" in r.getMessage() for r in caplog.records)


def test_gpsd_urls() -> None:
    assert parse_gpsd_url("gpsd://127.0.0.1:2948") == ("127.0.0.1", 2948)
    assert parse_gpsd_url("gpsd://gps.local") == ("gps.local", 2947)
    with pytest.raises(ConfigError):
        parse_gpsd_url("gpsd://:12")
    with pytest.raises(ConfigError):
        GnssSource("gpsd://host:port", 9600, lambda f: None, SystemClock())


def test_start_twice_is_an_error(tmp_path: Path) -> None:
    source = GnssSource(str(tmp_path / "x"), 9600, lambda f: None, SystemClock())
    source.start()
    try:
        with pytest.raises(RuntimeError):
            source.start()
    finally:
        source.stop()


def test_a_receiver_that_keeps_dropping_out_is_said_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A loose USB connector: the receiver goes and comes back every few seconds. Found:
    each drop-out logged a WARNING and an INFO (17,000 lines a day at one every 10 s)."""
    from eccm.gnss.source import FLAPPING

    link = tmp_path / "gnss"
    lines = stream("sirfstarv-nmea.log").splitlines(keepends=True)
    data = b"".join(lines[:20])
    got = Collector()
    source = GnssSource(str(link), 9600, got, SystemClock(), max_backoff=0.2, pivot=REPLAY_PIVOT)
    ptys: list[Pty] = []
    drops = 8

    def plug_in() -> Pty:
        pty = Pty()
        ptys.append(pty)
        tmp_link = tmp_path / "gnss.new"
        tmp_link.symlink_to(pty.path)
        tmp_link.replace(link)
        return pty

    pty = plug_in()  # there at the start: the first drop-out is the first line
    with caplog.at_level(logging.DEBUG, logger="eccm.gnss.source"):
        source.start()
        try:
            for i in range(drops):
                if i:
                    pty = plug_in()
                wait_for(lambda: source.connected)
                n = len(got)
                pty.write(data)  # data: the receiver is back for good, as far as it knows
                wait_for(lambda n=n: len(got) > n)  # type: ignore[misc]
                link.unlink()
                pty.unplug()
                wait_for(lambda: not source.connected)
        finally:
            source.stop()
            for pty in ptys:
                pty.unplug()
    records = [r for r in caplog.records if r.name == "eccm.gnss.source"]
    loud = [r.getMessage() for r in records if r.levelno >= logging.WARNING]
    back = [r for r in records if r.levelno >= logging.INFO and "is back" in r.getMessage()]
    # A drop-out is news; from the FLAPPING-th one in a row "keeps dropping out", once
    # (it was a WARNING per drop-out and an INFO per return: 8 + 7 lines).
    assert len(loud) == FLAPPING, loud
    assert "keeps dropping out" in loud[-1]
    assert len(back) == FLAPPING - 1, [r.getMessage() for r in back]
    assert sum("dropped out again" in r.getMessage() for r in records) == drops - FLAPPING
