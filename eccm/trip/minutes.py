"""Per-minute statistics of logged values, computed at the edge. Pure.

Each UTC minute of a trip gets, for every name of SUMMARY_COMMANDS: count, mean, median,
mode, stdev, variance, min and max of the values the rows carried in that minute (a row
counts once per name; empty, text and non-finite values are not counted). stdev and
variance are those of the population (divided by n, as numpy does by default): they are
defined for a minute of a single row, and a minute is the whole population it describes.

A minute keeps each distinct value once, with how often it came (a tally), rather than
every value: at full rate a minute is some 50,000 rows, while an OBD value has at most
65,536 codes (one or two data bytes) and a minute of driving shows a few hundred of them.
A list per name grew by megabytes each minute and left the heap fragmented when it was
freed; the figures are the same, from the same values (see ``summarize_tally``).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from operator import itemgetter

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
    return summarize_tally(tally(values))


def tally(values: Iterable[float]) -> dict[float, int]:
    """How often each value came, in the order values first came (a minute's storage)."""
    counts: dict[float, int] = {}
    for x in values:
        counts[x] = counts.get(x, 0) + 1
    return counts


def summarize_tally(counts: Mapping[float, int]) -> dict[str, Stat]:
    """:func:`summarize` of the values that ``counts`` tallies (in first-seen order).

    The same figures as from the list of values: fsum is exact whatever the order of its
    terms, so repeating each value (and each squared deviation) as often as it came gives
    the same sums; the median is read off the sorted distinct values by position; the mode
    is the first-seen of the most frequent, as ``statistics.mode``. (0.0 and -0.0 share a
    key; every figure is rounded through ``_round``, which writes both as 0.0.)
    """
    n = sum(counts.values())
    if n == 0:
        return {"count": 0, **{f: None for f in FIELDS[1:]}}
    # Two passes with fsum rather than statistics.pvariance: its exact fraction arithmetic
    # costs milliseconds per name and minute on a Raspberry Pi, in the polling thread,
    # for no digit that survives the rounding.
    mean = math.fsum(_repeated(counts.items())) / n
    variance = math.fsum(_repeated(((x - mean) ** 2, c) for x, c in counts.items())) / n
    return {
        "count": n,
        "mean": _round(mean),
        "median": _round(_median(counts, n)),
        "mode": _round(max(counts.items(), key=itemgetter(1))[0]),
        "stdev": _round(math.sqrt(variance)),
        "variance": _round(variance),
        "min": _round(min(counts)),
        "max": _round(max(counts)),
    }


def _repeated(pairs: Iterable[tuple[float, int]]) -> Iterable[float]:
    return itertools.chain.from_iterable(itertools.repeat(x, c) for x, c in pairs)


def _median(counts: Mapping[float, int], n: int) -> float:
    """``statistics.median`` of the tallied values: the middle one of the sorted values,
    or the mean of the two middle ones."""
    wanted = (n // 2,) if n % 2 else (n // 2 - 1, n // 2)
    found: list[float] = []
    seen = 0
    for x in sorted(counts):
        seen += counts[x]
        while len(found) < len(wanted) and wanted[len(found)] < seen:
            found.append(x)
        if len(found) == len(wanted):
            break
    return found[0] if n % 2 else (found[0] + found[1]) / 2


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
        self._counts: dict[str, dict[float, int]] = {}  # name → tally of the open minute

    def add(self, epoch: float, values: Mapping[str, Plain]) -> None:
        """One row: its time and its values by name (names not summarised are ignored)."""
        start = minute_start(epoch)
        if self._minute is not None and start != self._minute:
            self.close()
        if self._minute is None:
            self._minute = start
            self._rows = 0
            self._counts = {name: {} for name in self.names}
        self._rows += 1
        tallies = self._counts
        for name in self.names:
            value = values.get(name)
            if type(value) is float:  # the usual value: numeric() without a call
                if math.isfinite(value):
                    counts = tallies[name]
                    counts[value] = counts.get(value, 0) + 1
                continue
            number = numeric(value)
            if number is not None:
                counts = tallies[name]
                counts[number] = counts.get(number, 0) + 1

    def close(self) -> dict[str, object] | None:
        """Close the open minute (the trip ended); its summary row, or None if none was open."""
        row = self.current()
        if row is not None:
            self._closed.append(row)
        self._minute = None
        self._counts = {}
        self._rows = 0
        return row

    def current(self) -> dict[str, object] | None:
        """The open minute summarised so far, or None."""
        if self._minute is None:
            return None
        return {
            "minute": minute_label(self._minute),
            "rows": self._rows,
            "values": {name: summarize_tally(self._counts[name]) for name in self.names},
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
