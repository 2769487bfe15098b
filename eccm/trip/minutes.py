"""Per-minute statistics of logged values, computed at the edge. Pure.

Each UTC minute of a trip gets, for every name of SUMMARY_COMMANDS: count, mean, median,
mode, stdev, variance, min and max of the values the rows carried in that minute (a row
counts once per name; empty, text and non-finite values are not counted). stdev and
variance are those of the population (divided by n, as numpy does by default): they are
defined for a minute of a single row, and a minute is the whole population it describes.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime

from eccm.sample import Plain

FIELDS = ("count", "mean", "median", "mode", "stdev", "variance", "min", "max")
DIGITS = 6  # decimals kept: beyond any OBD scaling, and keeps 16.862745098039216 short

Number = int | float
Stat = int | float | None


def numeric(value: object) -> float | None:
    """The value as a finite float, or None for empty, text, booleans, NaN and infinities."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def _round(x: float) -> float:
    r = round(x, DIGITS)
    return 0.0 if r == 0 else r  # no "-0.0" in a summary


def summarize(values: Sequence[float]) -> dict[str, Stat]:
    """count, mean, median, mode, stdev, variance, min, max of finite numbers.

    Every field but count is None when there is no value. The mode of values that are all
    different is the first of them (as ``statistics.mode``).
    """
    n = len(values)
    if n == 0:
        return {"count": 0, **{f: None for f in FIELDS[1:]}}
    # Two passes with fsum rather than statistics.pvariance: its exact fraction arithmetic
    # costs milliseconds per name and minute on a Raspberry Pi, in the polling thread,
    # for no digit that survives the rounding.
    mean = math.fsum(values) / n
    variance = math.fsum((x - mean) ** 2 for x in values) / n
    return {
        "count": n,
        "mean": _round(mean),
        "median": _round(statistics.median(values)),
        "mode": _round(statistics.mode(values)),
        "stdev": _round(math.sqrt(variance)),
        "variance": _round(variance),
        "min": _round(min(values)),
        "max": _round(max(values)),
    }


def minute_start(epoch: float) -> int:
    """Start of the UTC minute holding ``epoch`` (seconds since the epoch)."""
    return math.floor(epoch / 60.0) * 60


def minute_label(start: int) -> str:
    """2026-11-22T02:20:00Z."""
    return datetime.fromtimestamp(start, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class MinuteTable:
    """Rows in, one summary per UTC minute out (not thread-safe: its owner locks).

    Rows are expected in time order; a row of another minute than the open one closes it.
    A clock stepped backwards (GNSS correction starting mid-trip) opens a minute again
    under its earlier label rather than reordering what was already closed.
    """

    def __init__(self, names: Iterable[str]) -> None:
        self.names: tuple[str, ...] = tuple(dict.fromkeys(names))
        self._closed: list[dict[str, object]] = []
        self._minute: int | None = None
        self._rows = 0
        self._values: dict[str, list[float]] = {}

    def add(self, epoch: float, values: Mapping[str, Plain]) -> None:
        """One row: its time and its values by name (names not summarised are ignored)."""
        start = minute_start(epoch)
        if self._minute is not None and start != self._minute:
            self.close()
        if self._minute is None:
            self._minute = start
            self._rows = 0
            self._values = {name: [] for name in self.names}
        self._rows += 1
        table = self._values
        for name in self.names:
            value = values.get(name)
            if type(value) is float:  # the usual value: numeric() without a call
                if math.isfinite(value):
                    table[name].append(value)
                continue
            number = numeric(value)
            if number is not None:
                table[name].append(number)

    def close(self) -> dict[str, object] | None:
        """Close the open minute (the trip ended); its summary row, or None if none was open."""
        row = self.current()
        if row is not None:
            self._closed.append(row)
        self._minute = None
        self._values = {}
        self._rows = 0
        return row

    def current(self) -> dict[str, object] | None:
        """The open minute summarised so far, or None."""
        if self._minute is None:
            return None
        return {
            "minute": minute_label(self._minute),
            "rows": self._rows,
            "values": {name: summarize(self._values[name]) for name in self.names},
        }

    @property
    def closed(self) -> list[dict[str, object]]:
        """Closed minutes, oldest first. Rows are never changed once closed: the list may
        be shared with a summary being written."""
        return list(self._closed)

    @property
    def closed_count(self) -> int:
        """How many minutes are closed (without copying them, for every row)."""
        return len(self._closed)

    @property
    def last_closed(self) -> dict[str, object] | None:
        return self._closed[-1] if self._closed else None
