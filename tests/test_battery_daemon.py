"""The low-battery warning end to end: the real daemon on the ELM327 emulator's parked car
(scenario "engineoff": the adapter answers, the car does not), the adapter's ATRV answer
set to a low voltage, STATUS read over the control socket.

The warning needs a minute below LOW_BATTERY_VOLTAGE: the daemon's injected clock is moved
forward instead of waiting it out (the battery watch and the link's voltage schedule read
that clock; the link's reconnection sleeps stay real, one second apart here).
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from eccm.clock import SystemClock
from eccm.config import parse
from eccm.obd.battery import LOW_FOR_SECONDS
from eccm.obd.link import VOLTAGE_OFF_EVERY
from tests.control_fakes import SECRET, Client
from tests.waiting import wait_until

WAIT = 60.0  # generous: the suite shares two cores with other work


class ForwardClock(SystemClock):
    """The system clock, its monotonic time moved forward on demand."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._ahead = 0.0

    def monotonic(self) -> float:
        with self._lock:
            return time.monotonic() + self._ahead

    def advance(self, seconds: float) -> None:
        with self._lock:
            self._ahead += seconds


class Records(logging.Handler):
    """WARNINGs as logged (Handler.handle holds the handler's own lock around emit)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())

    def battery_warnings(self) -> list[str]:
        return [m for m in list(self.messages) if "LOW_BATTERY_VOLTAGE" in m]


@dataclass
class Parked:
    emu: Any
    daemon: Any
    clock: ForwardClock
    log: Records
    port: int

    def battery(self, volts: float) -> None:
        """The adapter's ATRV answer from now on (emu.answer overrides it)."""
        self.emu.answer["AT_R_VOLT"] = f"<string>{volts:.1f}</string>"

    def atrv_reads(self) -> int:
        return int(self.emu.counters.get("AT_R_VOLT", 0))

    def next_read(self) -> None:
        """Wait for the next ATRV read (at the next connection attempt: the clock is moved
        past the link's VOLTAGE_OFF_EVERY, which would skip every other attempt)."""
        target = self.atrv_reads() + 1
        self.clock.advance(VOLTAGE_OFF_EVERY)
        wait_until(lambda: self.atrv_reads() >= target, WAIT, "another ATRV read")

    def read_volts(self, volts: float) -> None:
        self.next_read()
        wait_until(
            lambda: self.daemon.link.elm_voltage == volts, WAIT, f"an ATRV reading of {volts} V"
        )

    def status(self) -> dict[str, Any]:
        client = Client(("127.0.0.1", self.port), timeout=WAIT).auth()
        try:
            return client.ask("STATUS")
        finally:
            client.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def parked(tmp_path: Path) -> Iterator[Parked]:
    emulator = pytest.importorskip("tests.emulator")
    from eccm.app import Daemon

    records = Records()
    link_log = logging.getLogger("eccm.obd.link")
    link_log.addHandler(records)
    with emulator.emulated_car("engineoff") as emu:
        port = free_port()
        cfg = parse(
            {
                "CAR_IDENTIFIER": "parked-car",
                "OBD_INTERFACE": emu.get_pty(),
                "OBD_PROTOCOL": "6",  # one protocol to try per attempt, not the search
                "OBD_RECONNECT_MAX_INTERVAL": "1",
                "LOW_BATTERY_VOLTAGE": "11.8",
                "RECORD_DIRECTORY_LOCATION": str(tmp_path / "records"),
                "ENABLE_SOCKET_SERVER": "yes",
                "SOCKET_SERVER_PORT": str(port),
                "SOCKET_SERVER_SECRET": SECRET,
            }
        )
        clock = ForwardClock()
        daemon = Daemon(cfg, clock)
        parked = Parked(emu, daemon, clock, records, port)
        parked.battery(11.2)
        daemon.start()
        try:
            yield parked
        finally:
            emu.answer.pop("AT_R_VOLT", None)
            daemon.stop()
            link_log.removeHandler(records)


def test_a_battery_low_for_a_minute_is_warned_once_and_shows_in_status(parked: Parked) -> None:
    parked.read_volts(11.2)
    status = parked.status()
    assert status["obd"] != "connected"  # the car does not answer: parked
    assert status["elm_voltage"] == 11.2
    assert parked.log.battery_warnings() == []  # low, but not for a minute yet

    parked.clock.advance(LOW_FOR_SECONDS + 1)
    wait_until(parked.log.battery_warnings, WAIT, "the low-battery warning")
    warning = parked.log.battery_warnings()[0]
    assert "11.2 V" in warning and "LOW_BATTERY_VOLTAGE=11.8 V" in warning

    # Still low, read again and again, another minute later: no second warning.
    parked.clock.advance(LOW_FOR_SECONDS + 1)
    parked.next_read()
    assert len(parked.log.battery_warnings()) == 1

    # Charged (a drive, a charger): re-armed; a new low spell warns again, once.
    parked.battery(12.6)
    parked.read_volts(12.6)
    assert parked.status()["elm_voltage"] == 12.6
    parked.battery(11.0)
    parked.read_volts(11.0)
    assert len(parked.log.battery_warnings()) == 1
    parked.clock.advance(LOW_FOR_SECONDS + 1)
    wait_until(lambda: len(parked.log.battery_warnings()) == 2, WAIT, "the second warning")
    parked.next_read()
    warnings = parked.log.battery_warnings()
    assert len(warnings) == 2 and "11.0 V" in warnings[1]
