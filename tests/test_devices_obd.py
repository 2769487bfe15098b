"""OBD adapters as cars and shops hand them out: silent, hung, odd, or set up wrong.

Each peer is a pseudo-terminal: a scripted device that answers (or not) byte by byte, or
the ELM327 emulator behind a pass-through that can go silent like an adapter pulled out
of the OBD socket while its USB side stays plugged in.
"""

from __future__ import annotations

import logging
import os
import termios
import threading
import tty
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import serial

import eccm.obd.adapter
from eccm.clock import SystemClock
from eccm.config import parse
from eccm.hub import Hub
from eccm.obd.link import ObdLink
from eccm.obd.settings import ObdSettings
from eccm.sample import Layout, Sample
from tests.emulator import emulated_car
from tests.waiting import wait_until

WAIT = 60.0  # generous: the suite shares two cores with other work


class ScriptedDevice:
    """A serial device on a pseudo-terminal answering each CR-terminated line with
    ``answer(line)`` (None: says nothing)."""

    def __init__(self, answer: Callable[[str], bytes | None]) -> None:
        self.answer = answer
        self.requests: list[str] = []
        self._master, self._slave = os.openpty()
        tty.setraw(self._slave)
        self.path = os.ttyname(self._slave)
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        pending = b""
        while True:
            try:
                data = os.read(self._master, 1024)
            except OSError:
                return
            if not data:
                return
            pending += data
            while b"\r" in pending:
                line, pending = pending.split(b"\r", 1)
                request = line.decode("ascii", "replace").strip()
                self.requests.append(request)
                reply = self.answer(request)
                if reply:
                    try:
                        os.write(self._master, reply)
                    except OSError:
                        return

    def close(self) -> None:
        os.close(self._slave)
        os.close(self._master)


class PassThrough(ScriptedDevice):
    """The emulator behind a second pseudo-terminal; ``silent`` swallows every request."""

    def __init__(self, target: str) -> None:
        self.silent = threading.Event()
        self._car = serial.Serial(target, timeout=5)
        super().__init__(self._relay)

    def _relay(self, request: str) -> bytes | None:
        if self.silent.is_set():
            return None
        reply = b""
        try:
            self._car.reset_input_buffer()
            self._car.write(request.encode("ascii", "replace") + b"\r")
            while not reply.endswith(b">"):
                chunk = self._car.read(1)
                if not chunk:
                    break
                reply += chunk
        # Closed at the end of the test; pyserial reading a port closed under it by another
        # thread fails with a TypeError (its file descriptor is None by then), flushing one
        # with termios.error (a bad file descriptor).
        except (serial.SerialException, OSError, TypeError, termios.error):
            return None
        return reply

    def close(self) -> None:
        super().close()
        self._car.close()


class Rows:
    def __init__(self) -> None:
        self.samples: list[Sample] = []
        self.trip_ends: list[str] = []

    def on_sample(self, sample: Sample) -> None:
        self.samples.append(sample)

    def on_trip_end(self, trip_id: str) -> None:
        self.trip_ends.append(trip_id)

    def stop(self) -> None:
        pass


def config(**keys: str) -> ObdSettings:
    cfg = parse({"CAR_IDENTIFIER": "test-car", "OBD_RECONNECT_MAX_INTERVAL": "0.5", **keys})
    return ObdSettings.from_config(cfg)


def start_link(cfg: ObdSettings) -> tuple[ObdLink, Hub, Rows]:
    hub = Hub(SystemClock(), max_fix_age=2.0, layout=Layout((), (), gps=False))
    rows = Rows()
    hub.add_listener(rows)
    link = ObdLink(cfg, hub, SystemClock())
    link.start()
    return link, hub, rows


@pytest.fixture
def link_log(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    caplog.set_level(logging.INFO, logger="eccm")
    yield caplog


def ours(caplog: pytest.LogCaptureFixture, level: int) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name.startswith("eccm.") and r.levelno == level and r.exc_info is None
    ]


def cannot_connect(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [m for m in ours(caplog, logging.WARNING) if "cannot connect to the OBD adapter" in m]


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        # Powered by USB only (not plugged into the car), or hung: bytes in, nothing out.
        (lambda request: None, "sent nothing back within"),
        # Something that talks, but not an ELM327 (or at the wrong speed): no prompt.
        (lambda request: b"\x00\xfe garbage \r\n", "answered without an ELM327 prompt"),
        # Something with a prompt that understands no ELM327 command at all.
        (lambda request: b"?\r\r>", "ATE0 did not return 'OK'"),
        # A clone that answers ATZ and ATE0 but refuses headers: the speed was right, and
        # the message once sent its user to OBD_BAUDRATE.
        (
            lambda request: b"?\r\r>" if request.upper() == "ATH1" else b"OK\r\r>",
            "refused a set-up command (ATH1 did not return 'OK'",
        ),
    ],
    ids=["silent", "no-prompt", "question-marks", "refuses-ATH1"],
)
def test_a_device_that_is_not_a_working_adapter_is_reported_in_seconds(
    tmp_path: Path,
    link_log: pytest.LogCaptureFixture,
    answer: Callable[[str], bytes | None],
    expected: str,
) -> None:
    device = ScriptedDevice(answer)
    alias = tmp_path / "obd"
    alias.symlink_to(device.path)
    link, hub, rows = start_link(config(OBD_INTERFACE=str(alias)))
    try:
        # python-OBD alone waits 10 s per read and retries ten times: minutes in silence.
        (message,) = wait_until(lambda: cannot_connect(link_log), 30, "the WARNING")
        assert f"OBD_INTERFACE={alias}" in message
        assert expected in message
        assert link.state != "connected"
    finally:
        link.stop()
        device.close()
    assert len(cannot_connect(link_log)) == 1
    assert not ours(link_log, logging.ERROR)
    assert not rows.samples and hub.trip is None


@pytest.mark.parametrize("kind", ["a folder", "a file"])
def test_a_file_or_folder_named_as_the_adapter_says_it_is_no_serial_device(
    tmp_path: Path, link_log: pytest.LogCaptureFixture, kind: str
) -> None:
    """Found: OBD_INTERFACE naming a folder (a typo such as /dev/serial) was reported as
    'did not answer like an ELM327 adapter ([Errno 21] ... Is a directory): check ...
    OBD_BAUDRATE', sending the user after the speed."""
    path = tmp_path
    if kind == "a file":
        path = tmp_path / "obd.txt"
        path.write_text("not an adapter\n")
    link, hub, rows = start_link(config(OBD_INTERFACE=str(path)))
    try:
        (message,) = wait_until(lambda: cannot_connect(link_log), 30, "the WARNING")
    finally:
        link.stop()
    assert f"{path} is {kind}, not a serial device: set OBD_INTERFACE" in message, message
    assert "OBD_BAUDRATE" not in message
    assert not rows.samples and hub.trip is None


def test_a_wrong_protocol_on_a_can_car_says_which_setting_to_check(
    link_log: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The emulator answers from a thread of this process: on a loaded machine its first
    # prompt may come after the 3 s a real adapter gets, and the first (the one logged)
    # report would be "not answering" instead of the protocol's. What each failure says is
    # tested without a device in test_obd_connection.
    monkeypatch.setattr(eccm.obd.adapter, "PROMPT_TIMEOUT", WAIT)
    with emulated_car() as emu:
        link, _hub, rows = start_link(config(OBD_INTERFACE=emu.get_pty(), OBD_PROTOCOL="3"))
        try:
            (message,) = wait_until(lambda: cannot_connect(link_log), WAIT, "the WARNING")
        finally:
            link.stop()
    assert "Check OBD_PROTOCOL (now 3)" in message
    assert not rows.samples
    assert not ours(link_log, logging.ERROR)


def test_an_adapter_that_goes_silent_mid_trip_ends_the_trip_and_comes_back(
    link_log: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Shorter than in the car, so that the test does not wait python-OBD's retries out.
    monkeypatch.setattr(eccm.obd.adapter, "READ_SILENCE", 0.5)
    monkeypatch.setattr(eccm.obd.adapter, "PROMPT_TIMEOUT", 1.0)
    with emulated_car() as emu:
        adapter = PassThrough(emu.get_pty())
        link, _hub, rows = start_link(
            config(
                OBD_INTERFACE=adapter.path,
                OBD_PROTOCOL="6",
                OBD_FAST_COMMANDS="RPM,SPEED",
                OBD_SLOW_COMMANDS="COOLANT_TEMP",
                SAMPLE_INTERVAL="0.1",
                TRIP_END_TIMEOUT="600",  # the loss must not wait for the silent-car timeout
            )
        )
        try:
            wait_until(lambda: len(rows.samples) >= 3, WAIT, "rows")
            trip = rows.samples[-1].trip_id
            adapter.silent.set()
            wait_until(lambda: trip in rows.trip_ends, WAIT, "the trip to end")
            # The hub reports the trip's end before the link logs why: wait for the line.
            lost = wait_until(
                lambda: [m for m in ours(link_log, logging.WARNING) if "lost the OBD adapter" in m],
                WAIT,
                "the WARNING",
            )
            assert "stopped answering" in lost[0]
            assert link.state != "connected"
            adapter.silent.clear()
            wait_until(
                lambda: any(s.trip_id != trip for s in rows.samples), WAIT, "a new trip's rows"
            )
            assert link.state == "connected"
            assert rows.samples[-1].values["RPM"].value is not None
        finally:
            link.stop()
            adapter.close()
    assert not ours(link_log, logging.ERROR)


class CountingAdapter(PassThrough):
    """The emulator behind an adapter that takes the response-count digit after several
    PIDs (the emulator refuses it there): the digit is left out on the way to the car."""

    def _relay(self, request: str) -> bytes | None:
        if request.startswith("01") and len(request) % 2:
            request = request[:-1]
        return super()._relay(request)


def test_a_group_with_a_pid_the_car_never_answers_gets_the_response_count_digit() -> None:
    """HYBRID_BATTERY_REMAINING is in the emulated car's 0140 bitmap but never answered:
    once that gap is accepted, its group's answer teaches the count digit, so the adapter
    need not wait out its timeout for more answers in every row."""
    with emulated_car() as emu:
        adapter = CountingAdapter(emu.get_pty())
        link, _hub, rows = start_link(
            config(
                OBD_INTERFACE=adapter.path,
                OBD_PROTOCOL="6",
                OBD_FAST_COMMANDS="TIME_SINCE_DTC_CLEARED,FUEL_TYPE,HYBRID_BATTERY_REMAINING",
                OBD_SLOW_COMMANDS="",
                SAMPLE_INTERVAL="0.02",
            )
        )
        try:
            # The engine's answer is one frame: the digit is 1.
            wait_until(lambda: "014E515B1" in adapter.requests, WAIT, "the counted request")
            seen = len(rows.samples)
            wait_until(lambda: len(rows.samples) >= seen + 3, WAIT, "rows after it")
        finally:
            link.stop()
            adapter.close()
    sample = rows.samples[-1]
    assert sample.values["FUEL_TYPE"].value is not None
    assert sample.values["TIME_SINCE_DTC_CLEARED"].value is not None
    assert sample.values["HYBRID_BATTERY_REMAINING"].value is None
