"""GNSS-corrected wall time: a Raspberry Pi has no real-time clock.

Until NTP or a fix sets it, the system clock may be hours or years off. When a valid fix
shows the system clock off by more than ``threshold`` seconds, rows are stamped with the
system clock plus the measured offset, and the time source is reported as ``gnss``.
"""

from __future__ import annotations

import logging
import threading

from eccm.gnss.fix import Fix

log = logging.getLogger(__name__)


class TimeBase:
    def __init__(self, threshold: float = 2.0) -> None:
        self._threshold = threshold
        self._offset = 0.0
        self._lock = threading.Lock()

    def observe(self, fix: Fix) -> None:
        """Learn the offset from a fix that carries a full date and time and a position."""
        if (
            fix.time_utc is None
            or not fix.has_position
            or (fix.quality is not None and fix.quality <= 0)
        ):
            return
        measured = fix.time_utc - fix.received_wall
        with self._lock:
            was = self._offset
            self._offset = measured if abs(measured) > self._threshold else 0.0
            now = self._offset
        if (was == 0.0) != (now == 0.0):
            if now:
                log.warning("system clock is off by %.1f s: stamping rows with GNSS time", now)
            else:
                log.info("system clock agrees with GNSS again: stamping rows with system time")

    @property
    def offset(self) -> float:
        with self._lock:
            return self._offset

    @property
    def source(self) -> str:
        return "gnss" if self.offset else "system"

    def correct(self, system_epoch: float) -> float:
        return system_epoch + self.offset
