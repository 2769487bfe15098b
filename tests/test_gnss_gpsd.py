"""GpsdDecoder on gpsd's JSON, and GnssSource against a real TCP server speaking gpsd."""

from __future__ import annotations

import calendar
import itertools
import json
import logging
import socket
import threading
import time
from collections.abc import Callable, Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from eccm.clock import FakeClock, SystemClock
from eccm.gnss.fix import Fix
from eccm.gnss.gpsd import MAX_LINE, WATCH_COMMAND, GpsdDecoder
from eccm.gnss.source import GnssSource
from eccm.timebase import CONFIRM_EPOCHS, TimeBase

# What gpsd 3.25 sends after ?WATCH (shapes from https://gpsd.gitlab.io/gpsd/gpsd_json.html).
VERSION = {
    "class": "VERSION",
    "release": "3.25",
    "rev": "3.25",
    "proto_major": 3,
    "proto_minor": 15,
}
DEVICES = {
    "class": "DEVICES",
    "devices": [{"class": "DEVICE", "path": "/dev/ttyACM0", "driver": "u-blox", "bps": 9600}],
}
WATCH = {"class": "WATCH", "enable": True, "json": True, "nmea": False}
SKY = {
    "class": "SKY",
    "device": "/dev/ttyACM0",
    "hdop": 0.94,
    "pdop": 1.43,
    "nSat": 14,
    "uSat": 9,
    "satellites": [{"PRN": 1, "used": True}, {"PRN": 2, "used": False}],
}
TPV = {
    "class": "TPV",
    "device": "/dev/ttyACM0",
    "status": 2,
    "mode": 3,
    "time": "2024-05-01T10:00:01.250Z",
    "lat": 44.068918333,
    "lon": -121.31426,
    "altHAE": 1104.3,
    "altMSL": 1123.9,
    "alt": 1123.9,
    "track": 359.11,
    "speed": 0.021,
    "eph": 3.1,
}
T0 = calendar.timegm((2024, 5, 1, 10, 0, 1, 0, 0, 0)) + 0.25


def line(report: dict[str, object]) -> bytes:
    return json.dumps(report).encode() + b"\n"


def session() -> bytes:
    return b"".join(line(r) for r in (VERSION, DEVICES, WATCH, SKY, TPV))


def test_watch_command() -> None:
    assert WATCH_COMMAND == b'?WATCH={"enable":true,"json":true};\n'


def test_tpv_with_sky_gives_a_full_fix() -> None:
    clock = FakeClock()
    decoder = GpsdDecoder(clock)
    (fix,) = decoder.feed(session())
    assert fix == Fix(
        time_utc=T0,
        latitude=44.068918333,
        longitude=-121.31426,
        altitude=1123.9,
        speed=0.021,
        track=359.11,
        quality=2,  # gpsd status 2 = DGPS
        satellites=9,
        hdop=0.94,
        received=clock.monotonic(),
        received_wall=clock.time(),
    )
    assert (decoder.sentences, decoder.skipped) == (5, 0)


def test_mode_below_2_has_no_position() -> None:
    for mode in (0, 1):
        (fix,) = GpsdDecoder(FakeClock()).feed(line({**TPV, "mode": mode}))
        assert not fix.has_position and fix.quality == 0
        assert fix.time_utc == T0


def test_2d_fix_has_no_altitude_and_old_gpsd_alt_is_used() -> None:
    (fix2d,) = GpsdDecoder(FakeClock()).feed(line({**TPV, "mode": 2}))
    assert fix2d.has_position and fix2d.altitude is None and fix2d.quality == 2
    old = {k: v for k, v in TPV.items() if k not in ("altMSL", "altHAE", "status")}
    (fix,) = GpsdDecoder(FakeClock()).feed(line(old))
    assert fix.altitude == 1123.9 and fix.quality == 1


def test_satellites_counted_from_the_list_when_usat_is_missing() -> None:
    sky = {k: v for k, v in SKY.items() if k != "uSat"}
    sky["satellites"] = [{"used": True}, {"used": True}, {"used": False}]
    (fix,) = GpsdDecoder(FakeClock()).feed(line(sky) + line(TPV))
    assert fix.satellites == 2


def test_bad_lines_are_skipped() -> None:
    decoder = GpsdDecoder(FakeClock())
    fixes = decoder.feed(
        b"not json\n[1,2]\n"
        + line({**TPV, "lat": "north"})
        + b'{"class":"TPV","time":"yesterday"}\n'
        + b"\xff\xfe\n"
        + line(TPV)
    )
    assert len(fixes) == 1 and fixes[0].has_position
    assert decoder.skipped == 5


def test_an_endless_line_is_bounded_and_dropped() -> None:
    decoder = GpsdDecoder(FakeClock())
    for _ in range(40):
        decoder.feed(b"x" * 4096)
    assert decoder.skipped == 1
    assert decoder.feed(b"tail of the long line\n") == []
    (fix,) = decoder.feed(line(TPV))
    assert fix.has_position and decoder.skipped == 1 and MAX_LINE < 40 * 4096


@settings(max_examples=50, deadline=None)
@given(cuts=st.lists(st.integers(min_value=0), max_size=30))
def test_chunking_does_not_change_the_fixes(cuts: list[int]) -> None:
    data = session() * 3
    expected = GpsdDecoder(FakeClock()).feed(data)
    points = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    decoder = GpsdDecoder(FakeClock())
    got = [f for a, b in itertools.pairwise(points) for f in decoder.feed(data[a:b])]
    assert got == expected and len(got) == 3


json_values = st.recursive(
    st.none() | st.booleans() | st.floats() | st.integers() | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=5,
)
reports = st.builds(
    lambda cls, extra: {**extra, "class": cls},
    st.sampled_from(["TPV", "SKY", "VERSION", "WATCH"]),
    st.dictionaries(
        st.sampled_from(
            [
                "mode",
                "time",
                "lat",
                "lon",
                "alt",
                "altMSL",
                "speed",
                "track",
                "status",
                "uSat",
                "hdop",
                "satellites",
            ]
        ),
        json_values,
    ),
)


@settings(max_examples=150, deadline=None)
@given(
    parts=st.lists(
        st.one_of(st.binary(max_size=100), reports.map(lambda r: json.dumps(r).encode() + b"\n")),
        max_size=10,
    )
)
def test_arbitrary_input_never_raises(parts: list[bytes]) -> None:
    decoder = GpsdDecoder(FakeClock())
    for part in parts:
        for fix in decoder.feed(part):
            assert isinstance(fix, Fix)


# ---------------------------------------------------------------- a real TCP peer
class FakeGpsd:
    """A gpsd stand-in on 127.0.0.1: answers ?WATCH with the given reports, then waits."""

    def __init__(self, reports: Callable[[int], bytes]) -> None:
        self._reports = reports
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.2)
        self.port = self._listener.getsockname()[1]
        self.watches: list[bytes] = []
        self.connections = 0
        self._clients: list[socket.socket] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._listener.accept()
            except TimeoutError:
                continue
            self.connections += 1
            self._clients.append(conn)
            conn.settimeout(5)
            conn.sendall(line(VERSION))
            request = b""
            while not request.endswith(b"\n"):
                chunk = conn.recv(1024)
                if not chunk:
                    break
                request += chunk
            self.watches.append(request)
            conn.sendall(self._reports(self.connections))

    def drop_clients(self) -> None:
        for c in self._clients:
            c.close()
        self._clients.clear()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.drop_clients()
        self._listener.close()


@pytest.fixture
def gpsd() -> Iterator[FakeGpsd]:
    def reports(n: int) -> bytes:
        tpv = {**TPV, "time": f"2024-05-01T10:00:0{n}.250Z"}
        return line(DEVICES) + line(WATCH) + line(SKY) + line(tpv)

    server = FakeGpsd(reports)
    yield server
    server.close()


def wait_for(condition: Callable[[], bool], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.01)


def test_source_reads_gpsd_and_reconnects(gpsd: FakeGpsd, caplog: pytest.LogCaptureFixture) -> None:
    fixes: list[Fix] = []
    source = GnssSource(
        f"gpsd://127.0.0.1:{gpsd.port}", 9600, fixes.append, SystemClock(), max_backoff=0.5
    )
    with caplog.at_level(logging.INFO, logger="eccm.gnss.source"):
        source.start()
        try:
            wait_for(lambda: len(fixes) == 1)
            assert gpsd.watches == [WATCH_COMMAND]
            assert source.connected
            assert fixes[0].time_utc == T0 and fixes[0].satellites == 9 and fixes[0].has_position

            gpsd.drop_clients()  # gpsd restarts
            wait_for(lambda: len(fixes) == 2)
            assert fixes[1].time_utc == T0 + 1
            assert gpsd.watches == [WATCH_COMMAND, WATCH_COMMAND]
        finally:
            source.stop()
    assert not source.running and not source.connected
    assert source.fixes == 2 and source.skipped == 0
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "gpsd closed the connection" in warnings[0].getMessage()
    assert any("is back" in r.getMessage() for r in caplog.records)


def test_no_gpsd_listening_is_a_warning_not_a_traceback(caplog: pytest.LogCaptureFixture) -> None:
    with socket.create_server(("127.0.0.1", 0)) as s:
        port = s.getsockname()[1]  # closed again: nobody listens there now
    source = GnssSource(
        f"gpsd://127.0.0.1:{port}", 9600, lambda f: None, SystemClock(), max_backoff=0.2
    )
    with caplog.at_level(logging.DEBUG, logger="eccm.gnss.source"):
        source.start()
        try:
            wait_for(
                lambda: sum("still unavailable" in r.getMessage() for r in caplog.records) >= 2
            )
        finally:
            source.stop()
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and "is gpsd running" in warnings[0].getMessage()
    assert all(r.exc_info is None for r in caplog.records)


def test_a_gpsd_time_past_the_horizon_is_no_time_even_when_epochs_agree(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Found (audit of issue 10 item 2): gpsd's times were taken as they came, so a gpsd
    reporting 2068 (pynmea2's reading of "311268", the RMC date issue 10 found) at the pace
    of the clock was adopted once three epochs agreed: rows stamped 2068. As an RMC date,
    a gpsd time on or after the pivot plus one rollover period is no time; the position is
    kept, each one is counted, one warning says it."""
    server = FakeGpsd(lambda n: line(DEVICES) + line(WATCH) + line(SKY))
    clock = SystemClock()
    timebase = TimeBase()
    fixes: list[Fix] = []

    def on_fix(fix: Fix) -> None:
        timebase.observe(fix)
        fixes.append(fix)

    source = GnssSource(f"gpsd://127.0.0.1:{server.port}", 9600, on_fix, clock)
    far = calendar.timegm((2068, 12, 31, 10, 0, 0, 0, 0, 0))
    start = clock.monotonic()
    with caplog.at_level(logging.WARNING, logger="eccm.gnss.gpsd"):
        source.start()
        try:
            wait_for(lambda: bool(server._clients) and source.connected)
            for i in range(2 * CONFIRM_EPOCHS):
                # A gpsd whose clock runs with ours: the epochs agree with each other and
                # with the monotonic clock, so only the date can tell.
                when = far + (clock.monotonic() - start)
                stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(when))
                tpv = {**TPV, "time": f"{stamp}.{int(when % 1 * 1000):03d}Z"}
                server._clients[0].sendall(line(tpv))
                wait_for(lambda i=i: len(fixes) == i + 1)
        finally:
            source.stop()
            server.close()
    assert all(f.time_utc is None and f.has_position for f in fixes)
    assert timebase.source == "system" and timebase.offset == 0.0
    assert source.rejected_times == 2 * CONFIRM_EPOCHS
    (warning,) = [r.getMessage() for r in caplog.records]
    assert "2068-12-31" in warning and "ignored" in warning


@pytest.mark.parametrize(
    ("when", "kept"),
    [
        ("2044-08-16T23:59:59Z", True),
        ("2044-08-17T00:00:00Z", False),
        ("2038-11-21T00:00:00Z", True),
    ],
)
def test_the_gpsd_horizon_is_the_rmc_dates(when: str, kept: bool) -> None:
    decoder = GpsdDecoder(FakeClock())
    (fix,) = decoder.feed(line({**TPV, "time": when}))
    assert (fix.time_utc is not None) is kept
    assert decoder.rejected_times == (0 if kept else 1)
