"""How much of the adapter's time on-demand requests may take. Pure: no adapter, no threads.

Rows come first. A request from outside the polling loop (a GET of a value that is not
logged, a DTC read or clear, whatever front end asks next) runs for free in the time
SAMPLE_INTERVAL leaves idle before the next row is due, if its expected duration fits.
Beyond that it is "charged": at most one charged request between two rows, and charged
time (the time requests ran while a row was due) refills at ``SHARE`` of the clock,
holding at most ``BURST`` seconds. So clients together never take more than ``SHARE`` of
the adapter's time from logging (after one burst), however many of them poll. A request
that cannot start in time is refused as busy with the time after which asking again can
succeed.

The link thread alone calls :class:`AdapterShare`; it holds no lock.
"""

from __future__ import annotations

from dataclasses import dataclass

from eccm.errors import DeviceError

# Share of the adapter's time that charged requests may take from logging: rows keep about
# 97 % of their rate, leaving margin under the 90 % promised for the CPU the requests and
# their clients take besides.
SHARE = 0.03
# Charged seconds saved up in a quiet spell: little, or a client pausing between bursts
# would take more than SHARE. A request longer than that still starts (the share goes into
# debt and the next one waits until it is paid back).
BURST = 0.02
# Most charged time owed: one long request (a slow multi-frame answer, a car stuck for
# seconds) makes the next wait at most MAX_DEBT / SHARE (13.3 s, within the 15 s a DTC
# read may wait), not minutes. A client looping a request of d seconds takes d per
# (d + that wait): under 10 % up to d = 1.4 s (a DTC read or a VIN on a K-line car takes
# 0.5 to 1 s; 0.1 here let it take 23 %).
MAX_DEBT = 0.4
# Longest wait in the queue for a request that is not a DTC request: a polling page
# would rather hear "busy, retry in 0.6 s" than wait seconds for its reply.
MAX_START_WAIT = 1.0
# Requests waiting for the adapter at most; one more is busy at once.
QUEUE_LIMIT = 8
# Shortest retry hint: a client told 0 s would ask again at once.
MIN_RETRY = 0.1


class AdapterBusy(DeviceError):
    """The OBD adapter cannot take an on-demand request now: ask again after ``retry_after``
    seconds. The message starts with the control socket's code ("busy: ...")."""

    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after


@dataclass(frozen=True, slots=True)
class Turn:
    """What the share says about the request at the head of the queue."""

    run: bool
    charged: bool = False  # it may delay a row: it counts against the share
    wait: float = 0.0  # when not run: seconds until it may


class AdapterShare:
    """The decision "may an on-demand request run now, and if not, how long until it may".

    Times are the link's monotonic clock. ``next_row`` is when the next row is due (a
    time in the past: a row is due now).
    """

    def __init__(
        self,
        now: float,
        *,
        share: float = SHARE,
        burst: float = BURST,
        max_debt: float = MAX_DEBT,
        first_guess: float = 0.05,
    ) -> None:
        if not 0 < share < 1:
            raise ValueError("share must be between 0 and 1")
        if burst <= 0:
            raise ValueError("burst must be positive")
        self.share = share
        self.burst = burst
        self.max_debt = max_debt
        self.first_guess = first_guess
        self._tokens = burst
        self._at = now
        self._charged_since_row = False
        # Expected duration per kind of request ("read VIN", "dtc read"...): they differ by
        # tens of times (a multi-frame VIN, three DTC services, one PID).
        self._estimates: dict[str, float] = {}

    def estimate(self, kind: str) -> float:
        """Expected seconds of a request of this kind (its longest lately)."""
        return self._estimates.get(kind, self.first_guess)

    def tokens(self, now: float) -> float:
        """Charged seconds available now (negative: in debt)."""
        self._refill(now)
        return self._tokens

    def turn(self, now: float, next_row: float, kind: str) -> Turn:
        """May a request of ``kind`` start at ``now``?"""
        if now + self.estimate(kind) <= next_row:
            return Turn(True)
        self._refill(now)
        wait = 0.0
        if self._tokens <= 0:
            wait = -self._tokens / self.share
        if self._charged_since_row:
            # After the next row: the moment it is due (0 when it is due already, the
            # link then takes the row first).
            wait = max(wait, next_row - now)
        if wait <= 0 and not self._charged_since_row:
            return Turn(True, charged=True)
        return Turn(False, wait=wait)

    def retry_after(self, wait: float) -> float:
        """The hint given with a refusal after ``wait`` (from :meth:`turn`)."""
        return round(max(MIN_RETRY, wait), 1)

    def ran(self, kind: str, start: float, end: float, next_row: float) -> None:
        """A request ran from ``start`` to ``end``; the time it ran while a row was due
        (after ``next_row``) is charged."""
        took = max(0.0, end - start)
        known = self._estimates.get(kind)
        # Up at once to a longer duration, down slowly: a request that overran once will
        # not be started in an idle time too short for it again.
        self._estimates[kind] = took if known is None or took > known else 0.8 * known + 0.2 * took
        charged = end - max(start, next_row)
        if charged > 0:
            self._refill(end)
            self._tokens = max(-self.max_debt, self._tokens - charged)
            self._charged_since_row = True

    def row(self) -> None:
        """A row was published: the next charged request may come."""
        self._charged_since_row = False

    def _refill(self, now: float) -> None:
        if now > self._at:
            self._tokens = min(self.burst, self._tokens + (now - self._at) * self.share)
            self._at = now
