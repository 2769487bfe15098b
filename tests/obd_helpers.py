"""Shared helpers for the OBD link tests against the ELM327 emulator (not a test module)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from elm.obd_message import HD, SZ

from eccm.clock import FakeClock, SystemClock
from eccm.config import parse
from eccm.hub import Hub
from eccm.obd.settings import ObdSettings
from eccm.sample import Layout, Sample

WAIT = 60.0  # generous: the suite shares two cores with other work


class Collector:
    """A hub listener that tests wait on (a condition, not a sleep)."""

    def __init__(self) -> None:
        self.samples: list[Sample] = []
        self.trip_ends: list[str] = []
        self._cond = threading.Condition()

    def on_sample(self, sample: Sample) -> None:
        with self._cond:
            self.samples.append(sample)
            self._cond.notify_all()

    def on_trip_end(self, trip_id: str) -> None:
        with self._cond:
            self.trip_ends.append(trip_id)
            self._cond.notify_all()

    def stop(self) -> None:
        pass

    def wait_for(self, predicate: Callable[[], Any], what: str) -> Any:
        with self._cond:
            result = self._cond.wait_for(predicate, WAIT)
        assert result, f"timed out waiting for {what}"
        return result

    def wait_rows(self, count: int) -> list[Sample]:
        with self._cond:
            start = len(self.samples)
        self.wait_for(lambda: len(self.samples) >= start + count, f"{count} rows")
        with self._cond:
            return self.samples[start:]


@dataclass
class FakeTimer:
    at: float
    action: Callable[[], None]
    started: bool = False
    cancelled: bool = False

    def start(self) -> None:
        self.started = True

    def cancel(self) -> None:
        self.cancelled = True


class FakeTimers:
    """The queue's timer factory, on the fake clock: :meth:`fire_due` fires them."""

    def __init__(self, clock: FakeClock) -> None:
        self._clock = clock
        self.made: list[FakeTimer] = []

    def __call__(self, seconds: float, action: Callable[[], None]) -> FakeTimer:
        timer = FakeTimer(self._clock.monotonic() + seconds, action)
        self.made.append(timer)
        return timer

    def fire_due(self) -> None:
        for timer in self.made:
            if timer.started and not timer.cancelled and timer.at <= self._clock.monotonic():
                timer.cancelled = True  # fires once
                timer.action()


def config(**keys: str) -> ObdSettings:
    """The link's settings from config.ini keys (checked by eccm.config as in the daemon)."""
    values = {"CAR_IDENTIFIER": "test-car", "TRIP_END_TIMEOUT": "1"}
    values.update(keys)
    return ObdSettings.from_config(parse(values))


def make_hub() -> tuple[Hub, Collector]:
    hub = Hub(SystemClock(), max_fix_age=2.0, layout=Layout((), (), gps=False))
    collector = Collector()
    hub.add_listener(collector)
    return hub, collector


def hidden_from_multi_pid(data: str) -> str:
    """An answer the emulator gives to the PID alone but leaves out of a multi-PID answer.

    Its multi-PID code collects the ``<data>`` tags of each PID's answer (a case-sensitive
    match), while the frame writer takes the tag in any case: an ECU that answers every
    PID alone and says NO DATA when asked for several at once.
    """
    size = len(bytes.fromhex(data))
    return HD("7E8") + SZ(f"{size:02X}") + f"<DATA>{data}</DATA>"


# The fast values of an ECU that answers each PID alone and NO DATA to several at once (a
# K-line car's behaviour, on the CAN emulator): name -> the answer to that PID alone.
ONE_PID_ANSWERS = {
    "RPM": "41 0C 1A F8",
    "SPEED": "41 0D 32",
    "THROTTLE_POS": "41 11 26",
    "COOLANT_TEMP": "41 05 7B",
    "INTAKE_TEMP": "41 0F 44",
    "MAF": "41 10 01 F4",
}


def refuse_multi_pid(emu: Any) -> tuple[str, ...]:
    """Make the emulator answer ONE_PID_ANSWERS' values one PID per request only; their names."""
    emu.answer.update({name: hidden_from_multi_pid(d) for name, d in ONE_PID_ANSWERS.items()})
    return tuple(ONE_PID_ANSWERS)
