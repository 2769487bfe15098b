"""Hub listeners and clocks shared by the chaos tests (not a test module)."""

from __future__ import annotations

import threading
import time

from eccm.sample import Sample


class Events:
    """A hub listener that keeps samples and trip ends in the order they came."""

    def __init__(self) -> None:
        self.log: list[tuple[str, object]] = []

    def on_sample(self, sample: Sample) -> None:
        self.log.append(("sample", sample))

    def on_trip_end(self, trip_id: str) -> None:
        self.log.append(("end", trip_id))

    def stop(self) -> None:
        pass

    @property
    def samples(self) -> list[Sample]:
        return [s for kind, s in self.log if kind == "sample" and isinstance(s, Sample)]

    @property
    def ends(self) -> list[str]:
        return [t for kind, t in self.log if kind == "end" and isinstance(t, str)]


class OffsetClock:
    """The real monotonic clock and a wall clock ``offset`` seconds off, settable (NTP)."""

    def __init__(self, offset: float) -> None:
        self._offset = offset
        self._lock = threading.Lock()

    def time(self) -> float:
        with self._lock:
            return time.time() + self._offset

    def monotonic(self) -> float:
        return time.monotonic()

    def set_right(self) -> None:
        with self._lock:
            self._offset = 0.0

    def step(self, seconds: float) -> None:
        """Step the wall clock by ``seconds`` (back when negative), as NTP would."""
        with self._lock:
            self._offset += seconds
