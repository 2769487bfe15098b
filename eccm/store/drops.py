"""Counting dropped rows exactly, and deciding when to say so (pure, injected time).

The recorder drops rows from two threads (the OBD thread when its queue is full, the
writer when the disk refuses them). Every drop is counted; the log gets at most one line
per ``every`` seconds, and each line carries the exact count since the line before, so the
counts in the log add up to the total.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

QUEUE = "queue"  # the writer could not keep up: the recorder's queue was full
WRITE = "write"  # the disk refused the row (or lost it with the file it was in)


@dataclass(frozen=True)
class Report:
    """Rows dropped since the previous report, by cause, over ``seconds``."""

    by_cause: dict[str, int]
    seconds: float

    @property
    def rows(self) -> int:
        return sum(self.by_cause.values())


class DropCounter:
    """Thread-safe tally of dropped rows with a rate limit on reports."""

    def __init__(self, every: float = 60.0) -> None:
        self.every = every
        self._lock = threading.Lock()
        self._total = 0
        self._unreported: dict[str, int] = {}
        self._first_unreported: float | None = None
        self._last_line: float | None = None

    @property
    def total(self) -> int:
        """Every row dropped since the start."""
        return self._total

    def add(self, cause: str, now: float, rows: int = 1) -> None:
        if rows <= 0:
            return
        with self._lock:
            self._total += rows
            self._unreported[cause] = self._unreported.get(cause, 0) + rows
            if self._first_unreported is None:
                self._first_unreported = now

    def _may_log(self, now: float) -> bool:
        return self._last_line is None or now - self._last_line >= self.every

    def claim(self, now: float) -> Report | None:
        """For a line about to be logged (perhaps with no drops): the count to put in
        it, or None when a line was logged less than ``every`` seconds ago."""
        with self._lock:
            return self._take(now) if self._may_log(now) else None

    def due(self, now: float) -> Report | None:
        """The report to log now, if rows wait to be reported and a line is allowed."""
        if not self._unreported:  # the common case, once a row: no lock
            return None
        with self._lock:
            if not self._unreported or not self._may_log(now):
                return None
            return self._take(now)

    def take(self, now: float) -> Report:
        """Report now whatever the rate (a line about to be logged carries the count)."""
        with self._lock:
            return self._take(now)

    def _take(self, now: float) -> Report:
        first = self._first_unreported
        report = Report(dict(self._unreported), 0.0 if first is None else now - first)
        self._unreported = {}
        self._first_unreported = None
        self._last_line = now
        return report
