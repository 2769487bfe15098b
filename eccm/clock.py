"""Injected time, so that rotation, retry and trip decisions are tested without sleeping."""

from __future__ import annotations

import threading
import time
from typing import Protocol


class Clock(Protocol):
    def time(self) -> float:
        """Seconds since the epoch, as the system clock says (may be wrong on a Pi)."""
        ...

    def monotonic(self) -> float:
        """Seconds from an arbitrary origin; never jumps."""
        ...


class SystemClock:
    def time(self) -> float:
        return time.time()

    def monotonic(self) -> float:
        return time.monotonic()


class FakeClock:
    """A clock that moves only when told to (trio's MockClock is the model)."""

    def __init__(self, start: float = 1_700_000_000.0, monotonic_start: float = 1000.0) -> None:
        self._wall = start
        self._mono = monotonic_start
        self._lock = threading.Lock()

    def time(self) -> float:
        with self._lock:
            return self._wall

    def monotonic(self) -> float:
        with self._lock:
            return self._mono

    def advance(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError("a clock does not go backwards")
        with self._lock:
            self._wall += seconds
            self._mono += seconds

    def set_wall(self, epoch: float) -> None:
        """Step the wall clock only, as NTP or a user would; the monotonic clock is unmoved."""
        with self._lock:
            self._wall = epoch
