"""The polling plan: which commands are read, and when. Pure: no adapter, no threads.

Fast commands are read for every row. Slow commands are spread over OBD_SLOW_INTERVAL:
each group of them (the names one request reads: up to six mode 01 PIDs on CAN) has a
due time, staggered so that a few are read after the fast ones of each row instead of
all of them in one long burst that would delay a row.
"""

from __future__ import annotations

import math
import threading
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from eccm.obd.values import is_loggable, is_mode01_value, known_command, pid_order
from eccm.sample import FAST_AGE_CAP


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


Group = tuple[str, ...]  # the names one request reads


def make_groups(names: Sequence[str], shareable: Callable[[str], bool], size: int) -> list[Group]:
    """Names in requests of up to ``size``, in the order given.

    Shareable names (mode 01 PIDs on CAN) are packed together; any other name is a
    request of its own. ``size`` 1 gives one request per name.
    """
    if size < 1:
        raise ValueError("size must be at least 1")
    groups: list[Group] = []
    pending: list[str] = []
    for name in names:
        if not shareable(name):
            groups.append((name,))
            continue
        pending.append(name)
        if len(pending) == size:
            groups.append(tuple(pending))
            pending = []
    if pending:
        groups.append(tuple(pending))
    return groups


def request_groups(
    names: Sequence[str],
    shareable: Callable[[str], bool],
    refused: Callable[[Group], bool],
    size: int,
) -> list[Group]:
    """:func:`make_groups`, with each group the car ``refused`` as one request (remembered
    from an earlier connection) read one name per request."""
    out: list[Group] = []
    for group in make_groups(names, shareable, size):
        out.extend([(n,) for n in group] if refused(group) else [group])
    return out


class PollPlan:
    """Fast groups for every row; slow groups due in turn, each once per ``slow_interval``.

    A group is the names one request reads (several mode 01 PIDs on CAN, else one name).
    The slow groups are staggered over the interval, so a row reads at most a few of
    them after its fast ones instead of all of them in one long burst.
    """

    def __init__(
        self,
        fast: Sequence[Group],
        slow: Sequence[Group],
        slow_interval: float,
        start: float,
    ) -> None:
        if slow_interval <= 0:
            raise ValueError("slow_interval must be positive")
        self.fast: tuple[Group, ...] = tuple(tuple(g) for g in fast)
        self.slow: tuple[Group, ...] = tuple(tuple(g) for g in slow)
        self.slow_interval = slow_interval
        n = len(self.slow)
        # Staggered first due times: slot i of n at start + i/n of the interval.
        self._due: dict[Group, float] = {
            group: start + i * slow_interval / n for i, group in enumerate(self.slow)
        }
        self._order = {group: i for i, group in enumerate(self.slow)}
        self._read_at: dict[Group, float] = {}
        # The time a pass over every slow group really takes: OBD_SLOW_INTERVAL when the
        # reads keep up, longer when rows leave too little time for them.
        self.cycle = slow_interval

    @property
    def fast_names(self) -> tuple[str, ...]:
        return tuple(n for g in self.fast for n in g)

    @property
    def slow_names(self) -> tuple[str, ...]:
        return tuple(n for g in self.slow for n in g)

    def next_batch(self, now: float, limit: int | None = None) -> list[Group]:
        """The slow groups due at ``now``, longest overdue first, at most ``limit``.

        Each group returned is due again one interval after its previous slot; a group
        that fell more than an interval behind (a slow car) is due one interval from now
        instead, so a backlog is never read in one burst.
        """
        if limit is not None and limit <= 0:
            return []
        due = sorted(
            (g for g, t in self._due.items() if t <= now),
            key=lambda g: (self._due[g], self._order[g]),
        )
        batch = due if limit is None else due[:limit]
        for group in batch:
            last = self._read_at.get(group)
            self._read_at[group] = now
            if last is not None:
                gap = now - last
                # Up at once, down slowly: the bound of a slow value's age follows the
                # longest gap between two reads of one group lately.
                self.cycle = gap if gap > self.cycle else 0.9 * self.cycle + 0.1 * gap
                self.cycle = max(self.cycle, self.slow_interval)
            following = self._due[group] + self.slow_interval
            self._due[group] = following if following > now else now + self.slow_interval
        return batch

    def next_due(self) -> float | None:
        """When the next slow group falls due (None without slow groups)."""
        return min(self._due.values(), default=None)

    def split(self, group: Group) -> None:
        """Read the names of ``group`` one per request from now on (the ECU refused it).

        A slow group's names share its slot: they are staggered within the time that
        was its own, so they do not fall due in one burst either.
        """
        if len(group) < 2:
            return
        singles = [(name,) for name in group]
        if group in self.fast:
            at = self.fast.index(group)
            self.fast = (*self.fast[:at], *singles, *self.fast[at + 1 :])
        if group in self._due:
            slot = self.slow_interval / max(1, len(self.slow))
            due = self._due.pop(group)
            at = self.slow.index(group)
            self.slow = (*self.slow[:at], *singles, *self.slow[at + 1 :])
            for i, single in enumerate(singles):
                self._due[single] = due + i * slot / len(singles)
            self._order = {g: i for i, g in enumerate(self.slow)}


# Bounds of a fast value's age: a few row cycles (FAST_AGE_CYCLES), at least
# FAST_AGE_FLOOR (a busy machine delays a row by some tenths), at most FAST_AGE_CAP.
FAST_AGE_CYCLES = 3
FAST_AGE_FLOOR = 0.5
# A car whose reads of one row take longer than the cap allows (an older K-line car reading
# six fast values at 150-200 ms each) would lose its first values of every row to the cap:
# there a value may be SLOW_ROUND_CYCLES of the measured round old, so that the row's own
# reads are written, and a round that takes far longer than usual (an adapter that stops
# answering mid-row) still leaves its oldest values out.
SLOW_ROUND_CYCLES = 1.5
# Slow values are read once per slow cycle: one missed read is allowed.
SLOW_AGE_CYCLES = 2


def fast_max_age(sample_interval: float, round_time: float) -> float:
    """Oldest a fast value may be in a row: FAST_AGE_CYCLES row cycles (SAMPLE_INTERVAL or
    the time the reads of a row take, the longer), at least FAST_AGE_FLOOR, at most
    FAST_AGE_CAP or, on a car whose reads of a row take longer than that allows,
    SLOW_ROUND_CYCLES × ``round_time`` (the smoothed time of a row's reads)."""
    cycle = max(sample_interval, round_time)
    cap = max(FAST_AGE_CAP, SLOW_ROUND_CYCLES * round_time)
    return min(cap, max(FAST_AGE_FLOOR, FAST_AGE_CYCLES * cycle))


def slow_max_age(slow_interval: float, slow_cycle: float, fast_age: float) -> float:
    """Oldest a slow value may be in a row: SLOW_AGE_CYCLES slow cycles (OBD_SLOW_INTERVAL
    or the time a pass over every slow group really takes, the longer) plus ``fast_age``
    (a slow value is read after the fast ones of its row)."""
    return SLOW_AGE_CYCLES * max(slow_interval, slow_cycle) + fast_age


def slow_budget(time_left: float, query_time: float, minimum: int = 1) -> int:
    """How many slow requests fit in ``time_left`` seconds before the next row is due.

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
