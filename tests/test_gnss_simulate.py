"""The simulated receiver: its sentences, its route and its pseudo-terminal."""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable

import pynmea2
import pytest
import serial
from hypothesis import given, settings
from hypothesis import strategies as st

from eccm.clock import FakeClock, SystemClock
from eccm.gnss.fix import Fix
from eccm.gnss.nmea import NmeaDecoder
from eccm.gnss.source import GnssSource
from eccm.sim.gnss import EARTH_RADIUS, NmeaPty, Route, sentence_time, sentences_at

ROUTE = Route(latitude=-33.8568, longitude=151.2153, radius=250.0, speed=12.5, altitude=12.0)


def metres(a: tuple[float, float], b: tuple[float, float]) -> float:
    """Haversine distance: independent of how Route computes positions."""
    p1, p2 = math.radians(a[0]), math.radians(b[0])
    dp, dl = p2 - p1, math.radians(b[1] - a[1])
    h = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * EARTH_RADIUS * math.asin(math.sqrt(h))


def wait_for(condition: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.01)


# From mid-2025: the decoder takes an earlier date for a GPS week rollover (test_gnss_rollover).
epochs = st.floats(min_value=1.75e9, max_value=2.0e9, allow_nan=False)


@settings(max_examples=100, deadline=None)
@given(epoch=epochs)
def test_route_is_a_circle_driven_at_the_given_speed(epoch: float) -> None:
    centre = (ROUTE.latitude, ROUTE.longitude)
    here = ROUTE.position_at(epoch)
    assert metres(centre, here) == pytest.approx(ROUTE.radius, rel=1e-3)
    step = metres(here, ROUTE.position_at(epoch + 1.0))
    assert step == pytest.approx(ROUTE.speed, rel=1e-3)
    # The track points where the car goes next.
    ahead = ROUTE.position_at(epoch + 0.1)
    bearing = math.degrees(
        math.atan2(
            (ahead[1] - here[1]) * math.cos(math.radians(here[0])),
            ahead[0] - here[0],
        )
    )
    assert (bearing - ROUTE.track_at(epoch) + 180) % 360 - 180 == pytest.approx(0, abs=0.5)


@settings(max_examples=100, deadline=None)
@given(epoch=epochs, talker=st.sampled_from(["GP", "GN"]))
def test_sentences_parse_and_decode_to_the_route(epoch: float, talker: str) -> None:
    lines = sentences_at(ROUTE, epoch, talker=talker)
    assert [pynmea2.parse(s, check=True).sentence_type for s in lines] == ["RMC", "VTG", "GGA"]
    decoder = NmeaDecoder(FakeClock())
    fixes = decoder.feed("".join(s + "\r\n" for s in lines).encode())
    assert len(fixes) == 2 and decoder.skipped == 0
    fix = fixes[-1]
    assert fix.time_utc == pytest.approx(sentence_time(epoch), abs=1e-5)
    assert fix.time_utc is not None
    lat, lon = ROUTE.position_at(fix.time_utc)
    assert fix.latitude == pytest.approx(lat, abs=1e-6)
    assert fix.longitude == pytest.approx(lon, abs=1e-6)
    assert fix.speed == pytest.approx(ROUTE.speed, abs=1e-3)
    assert fix.track == pytest.approx(ROUTE.track_at(fix.time_utc), abs=0.01)
    assert (fix.altitude, fix.quality, fix.satellites, fix.hdop) == (12.0, 1, 9, 0.9)


def test_no_fix_sentences_carry_time_but_no_position() -> None:
    lines = sentences_at(ROUTE, 1_795_000_000.0, fix=False, vtg=False)
    assert len(lines) == 2
    fixes = NmeaDecoder(FakeClock()).feed("".join(s + "\r\n" for s in lines).encode())
    assert all(not f.has_position for f in fixes)
    assert fixes[-1].time_utc == 1_795_000_000.0 and fixes[-1].quality == 0


def test_no_fix_periods() -> None:
    pty = NmeaPty(ROUTE, no_fix_periods=[(0.0, 5.0), (10.0, 12.0)])
    try:
        assert [pty.has_fix(t) for t in (0.0, 4.9, 5.0, 9.0, 11.0, 12.0)] == [
            False,
            False,
            True,
            True,
            False,
            True,
        ]
        pty.fix_available = False
        assert not pty.has_fix(7.0)
    finally:
        pty.stop()


def test_pty_through_the_serial_reader_matches_the_route() -> None:
    fixes: list[Fix] = []
    lock = threading.Lock()

    def on_fix(fix: Fix) -> None:
        with lock:
            fixes.append(fix)

    def count(pred: Callable[[Fix], bool]) -> int:
        with lock:
            return sum(1 for f in fixes if pred(f))

    with NmeaPty(ROUTE, rate_hz=10.0, garbage_every=2) as pty:
        source = GnssSource(pty.path, 9600, on_fix, SystemClock())
        source.start()
        try:
            wait_for(lambda: count(lambda f: f.has_position) >= 6 and source.skipped >= 2)
            pty.fix_available = False
            wait_for(lambda: count(lambda f: not f.has_position) >= 2)
        finally:
            source.stop()
    with lock:
        positioned = [f for f in fixes if f.has_position]
    for f in positioned:
        assert f.time_utc is not None
        lat, lon = ROUTE.position_at(f.time_utc)
        assert f.latitude == pytest.approx(lat, abs=1e-6)
        assert f.longitude == pytest.approx(lon, abs=1e-6)
    # The sentences carry the time they were written at.
    assert all(abs(f.time_utc - f.received_wall) < 5 for f in positioned if f.time_utc is not None)


def test_nobody_reading_loses_bytes_instead_of_blocking() -> None:
    pty = NmeaPty(ROUTE)
    try:
        written = pty.write(b"$" * 1_000_000)
        assert written < 1_000_000 and pty.dropped == 1_000_000 - written
    finally:
        pty.stop()
    assert pty.write(b"after stop") == 0


def test_stop_closes_the_device() -> None:
    pty = NmeaPty(ROUTE, rate_hz=20.0)
    pty.start()
    port = serial.Serial(pty.path, 9600, timeout=5)
    try:
        assert port.readline().startswith(b"$GP")
        pty.stop()
        with pytest.raises(serial.SerialException):
            for _ in range(100):
                port.read(4096)
    finally:
        port.close()


def test_main_prints_the_path_and_runs_until_signalled() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "eccm.sim.gnss", "--rate", "10"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        path = proc.stdout.readline().strip()
        assert path.startswith("/dev/")
        with serial.Serial(path, 9600, timeout=10) as port:
            line = port.readline()
        assert pynmea2.parse(line.decode().strip(), check=True).sentence_type == "RMC"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
