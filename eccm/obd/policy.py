"""The OBD link's decisions, without the adapter: when the next row is due, what a silent car
means, how often a parked car is asked again, how old a value may be in a row.

``ObdLink`` reads the car and tells this object what happened ("the round answered",
"the round was silent", "a request took so long"); it asks back when to read next, whether
the trip ends now, and the stale-value bounds of the row it is about to publish. Pure: every
answer depends only on the events fed in and the ``now`` given with them (the link's
monotonic clock), so tests drive it with a fake clock, without threads or sleeps.
"""

from __future__ import annotations

from dataclasses import dataclass

from eccm.backoff import Backoff
from eccm.obd.plan import fast_max_age, slow_budget, slow_max_age

# While the car does not answer, probe at most this often: an ELM327 takes a while to say
# NO DATA, and nothing is logged meanwhile.
SILENT_PROBE_INTERVAL = 1.0
# A first guess of one query's duration (ELM327 on CAN), refined by measurement.
FIRST_QUERY_TIME = 0.05
# How often the achieved rates are published as hub facts (STATUS, sidecars).
RATE_FACTS_INTERVAL = 1.0
# The shortest wait between two looks at the queue and the clock: never a busy loop.
_MIN_WAIT = 0.001
# Weight of the newest measurement in the smoothed durations (query, round).
_SMOOTHING = 0.2


@dataclass(frozen=True)
class Bounds:
    """How old a fast and a slow value may be in a row (seconds); older ones are left out."""

    fast: float
    slow: float


@dataclass(frozen=True)
class RoundEnd:
    """What a finished round of reads means: a row to publish (with its bounds), the end of
    the trip (a car silent for TRIP_END_TIMEOUT), or nothing."""

    row: Bounds | None = None
    trip_ends: bool = False


class LinkPolicy:
    """The polling loop's decisions for one link (one per ``ObdLink``, reset per connection).

    ``sample_interval`` (SAMPLE_INTERVAL) spaces the rows; ``trip_end_timeout``
    (TRIP_END_TIMEOUT) is how long the car may be silent before its trip ends;
    ``probe_cap`` (OBD_RECONNECT_MAX_INTERVAL) is the longest wait between two requests
    to a parked car; ``slow_interval`` (OBD_SLOW_INTERVAL) enters the slow values' bound.
    """

    def __init__(
        self,
        sample_interval: float,
        trip_end_timeout: float,
        probe_cap: float,
        slow_interval: float,
        now: float,
    ) -> None:
        self.sample_interval = sample_interval
        self.trip_end_timeout = trip_end_timeout
        self.slow_interval = slow_interval
        # An ECU woken by every request would drain a parked car's battery: past
        # TRIP_END_TIMEOUT the car is asked ever less often, up to the cap.
        self._quiet_template = Backoff(
            base=SILENT_PROBE_INTERVAL, cap=max(SILENT_PROBE_INTERVAL, probe_cap)
        )
        # Measured per request, and kept across reconnections: the car stays the same.
        self._query_time = FIRST_QUERY_TIME
        self.connected(now)

    def connected(self, now: float) -> None:
        """A new connection: the car answered just now, a row is due at once."""
        self._next_row = now
        self._next_facts = now
        self._last_answer = now
        self._lately = True
        self._round_time = 0.0  # how long the reads of a row take (smoothed)
        self._quiet = self._quiet_template
        self._trip_ended = False

    # -- what the loop asks --------------------------------------------------------
    @property
    def next_row(self) -> float:
        """When the next round of reads is due (monotonic seconds)."""
        return self._next_row

    @property
    def lately(self) -> bool:
        """The car answered the last round (a silent car gets a short read timeout)."""
        return self._lately

    @property
    def query_time(self) -> float:
        """The smoothed duration of one request to the car."""
        return self._query_time

    @property
    def round_time(self) -> float:
        """The smoothed duration of a row's reads (0 until a round answered)."""
        return self._round_time

    @property
    def probe_cap(self) -> float:
        """The longest wait between two requests to a silent car."""
        return self._quiet.cap

    @property
    def probe_delay(self) -> float:
        """The wait before the next request to a car silent past TRIP_END_TIMEOUT."""
        return max(self.sample_interval, self._quiet.delay(0.0))

    def facts_due(self, now: float) -> bool:
        """Whether the rates are to be published now; True once per RATE_FACTS_INTERVAL."""
        if now < self._next_facts:
            return False
        self._next_facts = now + RATE_FACTS_INTERVAL
        return True

    def wait(self, now: float, jobs_at: float) -> float | None:
        """Seconds to wait before looking again, or None when a round of reads is due now.

        ``jobs_at``: when the request queue wants a look (inf: nothing queued).
        """
        if now >= self._next_row:
            return None
        return max(_MIN_WAIT, min(self._next_row, self._next_facts, jobs_at) - now)

    def slow_budget(self, row_start: float, now: float) -> int:
        """How many slow requests fit before the next row (at least one)."""
        return slow_budget(row_start + self.sample_interval - now, self._query_time)

    def bounds(self, slow_cycle: float) -> Bounds:
        """The bounds of the row about to be published, from the rounds before it: a row
        whose reads took long (a slow answer after its RPM) leaves its oldest values out
        instead of widening them. ``slow_cycle``: how long a pass over every slow group
        really takes (``PollPlan.cycle``)."""
        fast = fast_max_age(self.sample_interval, self._round_time)
        return Bounds(fast, slow_max_age(self.slow_interval, slow_cycle, fast))

    def slow_limit(
        self, row_start: float, now: float, *, has_fast: bool, fast_answered: bool
    ) -> int:
        """How many slow groups the round begun at ``row_start`` reads after its fast ones:
        none when the car did not answer them (a silent car is not asked more), else as
        many as fit before the next row (at least one)."""
        if has_fast and not fast_answered:
            return 0
        return self.slow_budget(row_start, now)

    # -- what the loop reports ----------------------------------------------------
    def round_end(
        self,
        row_start: float,
        now: float,
        slow_cycle: float,
        *,
        asked: bool,
        answered: bool,
        slow_due: float | None,
    ) -> RoundEnd:
        """The round begun at ``row_start`` ended at ``now``: ``asked`` the car something,
        got an answer (``answered``). ``slow_cycle``: ``PollPlan.cycle``; ``slow_due``: when
        the next slow group falls due (``PollPlan.next_due``). Reports the round (see
        :meth:`answered`, :meth:`silent`, :meth:`unasked`) and says what to do with it."""
        if answered:
            bounds = self.bounds(slow_cycle)  # from the rounds before this one
            self.answered(row_start, now)
            return RoundEnd(row=bounds)
        if asked:
            return RoundEnd(trip_ends=self.silent(row_start, now))
        self.unasked(row_start, slow_due)
        return RoundEnd()

    def request_took(self, seconds: float) -> None:
        """One request to the car took ``seconds``."""
        self._query_time = (1 - _SMOOTHING) * self._query_time + _SMOOTHING * seconds

    def answered(self, row_start: float, now: float) -> None:
        """The round begun at ``row_start`` got answers and its row was published at ``now``."""
        took = now - row_start
        self._round_time = (
            took
            if self._round_time == 0.0
            else (1 - _SMOOTHING) * self._round_time + _SMOOTHING * took
        )
        self._last_answer = now
        self._lately = True
        self._quiet = self._quiet.succeeded()
        self._trip_ended = False
        # Keeps the rows on their grid; a round that overran starts the next at once.
        self._next_row = max(self._next_row + self.sample_interval, row_start)

    def silent(self, row_start: float, now: float) -> bool:
        """The round begun at ``row_start`` was asked and nothing answered, seen at ``now``.

        True when the trip ends now: the first silent round TRIP_END_TIMEOUT or more after
        the last answer (once per silence; an answer starts a new count).
        """
        self._lately = False
        end = False
        wait = max(self.sample_interval, SILENT_PROBE_INTERVAL)
        if now - self._last_answer >= self.trip_end_timeout:
            end = not self._trip_ended
            self._trip_ended = True
            self._quiet = self._quiet.failed()
            wait = self.probe_delay
        self._next_row = row_start + wait
        return end

    def unasked(self, row_start: float, slow_due: float | None) -> None:
        """The round begun at ``row_start`` had nothing to read (no fast values, no slow
        batch due yet); ``slow_due``: when the next slow batch is due, if any."""
        self._next_row = slow_due if slow_due is not None else row_start + SILENT_PROBE_INTERVAL


@dataclass(frozen=True)
class Outage:
    """The adapter is unreachable since ``since``; ``attempts`` failed tries to connect."""

    since: float
    attempts: int = 0


class Reconnection:
    """When to try the adapter again, and when an outage is news (said once, not per try).

    ``cap`` (OBD_RECONNECT_MAX_INTERVAL) is the longest wait between two tries.
    """

    def __init__(self, cap: float) -> None:
        self.cap = cap
        # Jitter: two links (or a link and a udev re-plug) do not retry in lock step.
        self._backoff = Backoff(base=min(0.5, cap), cap=cap, jitter=0.25)
        self._outage: Outage | None = None

    @property
    def outage(self) -> Outage | None:
        return self._outage

    def delay(self, draw: float | None = None) -> float:
        """Seconds to wait before the next try (0 at start and after a connection)."""
        return self._backoff.delay(draw)

    def failed(self, now: float) -> bool:
        """A try to connect failed at ``now``. True when it starts an outage: the one
        failure to report; the following ones are only counted."""
        self._backoff = self._backoff.failed()
        if self._outage is None:
            self._outage = Outage(now, 1)
            return True
        self._outage = Outage(self._outage.since, self._outage.attempts + 1)
        return False

    def connected(self) -> Outage | None:
        """A try connected: the outage it ends (to report), if any."""
        ended = self._outage
        self._outage = None
        self._backoff = self._backoff.succeeded()
        return ended

    def lost(self, now: float) -> None:
        """A connection was lost at ``now`` (reported by the caller): an outage begins, and
        its failed tries are only counted."""
        self._outage = Outage(now)
        self._backoff = self._backoff.failed()
