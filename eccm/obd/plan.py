"""The polling plan: which commands are read, and when. Pure: no adapter, no threads.

Fast commands are read for every row. Slow commands are spread over OBD_SLOW_INTERVAL:
each has a due time, staggered so that a few are read after the fast ones of each row
instead of all of them in one long burst that would delay a row.

Issue 3 (multi-PID requests) plugs in here: the link asks for the names of a round and
reads them through one seam (``ObdLink._read_many``), which can then group them.
"""

from __future__ import annotations

import math
import threading
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from eccm.obd.values import is_loggable, is_mode01_value, known_command, pid_order


@dataclass(frozen=True)
class Resolution:
    """Configured command names resolved against what the car supports."""

    fast: tuple[str, ...]
    slow: tuple[str, ...]
    warnings: tuple[str, ...]  # one per config key that lost names


def resolve(fast: Sequence[str], slow: Sequence[str], supported: Mapping[str, Any]) -> Resolution:
    """Resolve OBD_FAST_COMMANDS and OBD_SLOW_COMMANDS (``("ALL",)`` = every other mode 01 value).

    ``supported`` maps names to the python-OBD commands the car supports. Names the car
    does not support, that python-OBD does not know, or that are not values (PIDS_A,
    GET_DTC, CLEAR_DTC...) are dropped, with one warning per key. A fast name is never slow.
    """
    warnings: list[str] = []
    fast_kept = _keep("OBD_FAST_COMMANDS", fast, supported, warnings)
    if tuple(slow) == ("ALL",):
        values = [c for c in supported.values() if is_mode01_value(c)]
        slow_kept = [c.name for c in pid_order(values) if c.name not in fast_kept]
    else:
        slow_kept = [
            n for n in _keep("OBD_SLOW_COMMANDS", slow, supported, warnings) if n not in fast_kept
        ]
    return Resolution(tuple(fast_kept), tuple(slow_kept), tuple(warnings))


def _keep(
    key: str, names: Sequence[str], supported: Mapping[str, Any], warnings: list[str]
) -> list[str]:
    kept: list[str] = []
    unknown: list[str] = []
    unsupported: list[str] = []
    not_values: list[str] = []
    for name in dict.fromkeys(names):
        if name in supported:
            (kept if is_loggable(supported[name]) else not_values).append(name)
        elif known_command(name):
            unsupported.append(name)
        else:
            unknown.append(name)
    reasons = []
    if unsupported:
        reasons.append(f"{', '.join(unsupported)} (not supported by this car)")
    if unknown:
        reasons.append(f"{', '.join(unknown)} (not python-OBD command names)")
    if not_values:
        reasons.append(f"{', '.join(not_values)} (not values that can be logged)")
    if reasons:
        warnings.append(f"{key}: not logging {'; '.join(reasons)}")
    return kept


class PollPlan:
    """Fast names for every row; slow names due in turn, each once per ``slow_interval``."""

    def __init__(
        self, fast: Sequence[str], slow: Sequence[str], slow_interval: float, start: float
    ) -> None:
        if slow_interval <= 0:
            raise ValueError("slow_interval must be positive")
        self.fast = tuple(fast)
        self.slow = tuple(slow)
        self.slow_interval = slow_interval
        n = len(self.slow)
        # Staggered first due times: slot i of n at start + i/n of the interval.
        self._due: dict[str, float] = {
            name: start + i * slow_interval / n for i, name in enumerate(self.slow)
        }
        self._order = {name: i for i, name in enumerate(self.slow)}

    def next_batch(self, now: float, limit: int | None = None) -> list[str]:
        """The slow names due at ``now``, longest overdue first, at most ``limit``.

        Each name returned is due again one interval after its previous slot; a name that
        fell more than an interval behind (a slow car) is due one interval from now
        instead, so a backlog is never read in one burst.
        """
        if limit is not None and limit <= 0:
            return []
        due = sorted(
            (n for n, t in self._due.items() if t <= now),
            key=lambda n: (self._due[n], self._order[n]),
        )
        batch = due if limit is None else due[:limit]
        for name in batch:
            following = self._due[name] + self.slow_interval
            self._due[name] = following if following > now else now + self.slow_interval
        return batch

    def next_due(self) -> float | None:
        """When the next slow name falls due (None without slow names)."""
        return min(self._due.values(), default=None)


def slow_budget(time_left: float, query_time: float, minimum: int = 1) -> int:
    """How many slow reads fit in ``time_left`` seconds before the next row is due.

    At least ``minimum``, so that slow values are still read (more slowly) when the fast
    reads alone take the whole SAMPLE_INTERVAL.
    """
    if query_time <= 0 or math.isinf(time_left):
        return 1_000_000
    return max(minimum, int(max(0.0, time_left) / query_time))


class RateMeter:
    """Events per second over a sliding window (what issue 3 reports as fast/slow rate).

    Ticked by the link thread, read by any: the lock keeps the window consistent.
    """

    def __init__(self, window: float = 5.0) -> None:
        if window <= 0:
            raise ValueError("window must be positive")
        self.window = window
        self._events: deque[tuple[float, float]] = deque()
        self._lock = threading.Lock()

    def tick(self, now: float, count: float = 1.0) -> None:
        with self._lock:
            self._events.append((now, count))
            self._trim(now)

    def _trim(self, now: float) -> None:
        while self._events and self._events[0][0] < now - self.window:
            self._events.popleft()

    def rate(self, now: float) -> float:
        with self._lock:
            self._trim(now)
            events = list(self._events)
        if len(events) < 2:
            return 0.0
        first, last = events[0][0], events[-1][0]
        if last <= first:
            return 0.0
        counted = sum(c for _, c in events) - events[0][1]
        span = last - first
        mean_gap = span / (len(events) - 1)
        # A stall shows at once: measured to now once it is longer than two usual gaps.
        if now - last > 2 * mean_gap:
            span = now - first
        return counted / span
