"""Log lines about floods, rate-limited: a flood of connections must not flood the log (and
the SD card) too."""

from __future__ import annotations

import logging
import threading

from eccm.clock import Clock

log = logging.getLogger("eccm.control.server")  # the lines are the server's


class LogThrottle:
    """At most one log line per kind and interval; the next line counts the ones held back."""

    def __init__(
        self, clock: Clock, interval: float = 60.0, logger: logging.Logger | None = None
    ) -> None:
        self._clock = clock
        self._log = logger or log
        self._interval = interval
        self._lock = threading.Lock()
        self._kinds: dict[str, tuple[float, int]] = {}  # kind → (logged at, held back since)

    def log(self, level: int, kind: str, msg: str, *args: object) -> None:
        now = self._clock.monotonic()
        with self._lock:
            at, held = self._kinds.get(kind, (now - self._interval, 0))
            if now - at < self._interval:
                self._kinds[kind] = (at, held + 1)
                return
            self._kinds[kind] = (now, 0)
        if held:
            msg += " (and %d more like it in the last %.0f s)"
            args = (*args, held, now - at)
        self._log.log(level, msg, *args)
