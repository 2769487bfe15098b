"""Trip segmentation: which trip a row belongs to, and when a trip ends.

A pure core: it takes the row's time (``epoch``, GNSS-corrected wall time) and monotonic
time as plain numbers and answers with what happened; no clock, thread, lock or logging.
The hub calls it under its own lock, so a trip that ends and the one that opens in its
place are one step for every other thread (a GNSS row can never fall in between and open
a trip that nobody ends), and logs and fans out what it returns.

The rules:

- an engine trip begins when the car answers (:meth:`TripSegmenter.begin_engine`) and ends
  when it stops answering (:meth:`TripSegmenter.end`);
- a GNSS-only row while no trip runs opens a GNSS-only segment, a trip of its own; one
  while an engine trip runs is dropped (the OBD link writes that trip's rows), unless the
  car has given no row for ``engine_quiet`` seconds: then it is a row of the engine trip
  (the car answers NO DATA, CAN ERROR or slowly; the trip only ends after
  TRIP_END_TIMEOUT, and the position must not stop being logged meanwhile);
- a GNSS-only segment that began less than ``adopt_within`` seconds before the car
  answers becomes the start of the engine trip (the adapter took that long to connect at
  start-up); an older one ends there;
- a GNSS-only segment that got no row for ``gnss_timeout`` seconds ends (a receiver that
  lost its fix in a garage overnight must not make the next morning's drive the same trip);
- a clock step of more than ``redate_step`` seconds ends the running trip: the rows go on
  in a new trip named after the corrected time;
- trip ids are unique: a trip starting in a second whose id is taken (by this run or, once
  told through :meth:`TripSegmenter.reserve`, by an earlier one) is named one second later.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass

from eccm.sample import trip_id_for

# Seconds the row time may jump against the monotonic clock (a first GNSS fix correcting a
# clock that booted years off, NTP setting it) before the running trip ends there and the
# rows go on in a new trip named after the corrected time: a TRIP_ID, a file name and a
# date partition must not say 2016 for rows of 2026. Smaller steps (a clock a few seconds
# off) keep the trip; the trip computer measures durations on the monotonic clock anyway.
REDATE_STEP = 60.0

# Seconds without an engine row after which GNSS-only rows fill in the engine trip. Long
# enough that rows of a car answering at its usual pace never mix with position rows (the
# hub raises it for a slow car, see Hub.set_max_ages), short enough that a car silent for
# the 30 s of TRIP_END_TIMEOUT leaves no hole in the track.
ENGINE_QUIET = 3.0

# Seconds a trip id may be moved forward to find a free one: a day of ids.
_ID_SEARCH = 86_400


class Why(enum.Enum):
    """Why a trip ended."""

    ENDED = "ended"  # told so: the car stopped answering, the daemon stops
    REPLACED = "replaced"  # an engine trip began in its place
    CLOCK_STEP = "clock step"  # the row time jumped by more than REDATE_STEP
    NO_POSITION = "no position"  # a GNSS-only segment got no row for gnss_timeout


@dataclass(frozen=True)
class TripEnd:
    trip: str
    why: Why
    step: float | None = None  # seconds the clock stepped (Why.CLOCK_STEP)


@dataclass(frozen=True)
class Begin:
    """What :meth:`TripSegmenter.begin_engine` did."""

    trip: str  # the engine trip that runs now
    ended: TripEnd | None  # the trip that ended in its place
    adopted: bool  # a young GNSS-only segment became this engine trip (``trip`` is its id)


@dataclass(frozen=True)
class Row:
    """What :meth:`TripSegmenter.row` decided about one row."""

    trip: str | None  # the row's trip id; None: drop the row
    ended: TripEnd | None = None  # the trip that ended before this row (it opened ``trip``)


DROP = Row(trip=None)


class TripSegmenter:
    def __init__(
        self,
        adopt_within: float = 30.0,
        gnss_timeout: float | None = None,
        redate_step: float = REDATE_STEP,
        engine_quiet: float = ENGINE_QUIET,
    ) -> None:
        """``adopt_within``: seconds a GNSS-only segment may have run and still become the
        engine trip's start. ``gnss_timeout``: seconds without a row that end a GNSS-only
        segment (None: never). ``engine_quiet``: seconds without an engine row after
        which GNSS-only rows belong to the running engine trip."""
        self.adopt_within = adopt_within
        self.gnss_timeout = gnss_timeout
        self._redate_step = redate_step
        self._trip: str | None = None
        self._engine = False
        self._started = 0.0  # monotonic time the running trip opened
        self._last_row = 0.0  # monotonic time of the last row
        self.engine_quiet = engine_quiet
        self._last_engine = 0.0  # monotonic time of the last engine row (or engine begin)
        # Row time minus monotonic time at the last row (or engine begin): a jump is a step.
        self._skew: float | None = None
        # Every trip id of this run, and those an earlier run used (see reserve()).
        self._taken: set[str] = set()

    @property
    def trip(self) -> str | None:
        """The running trip's id, None between trips."""
        return self._trip

    @property
    def engine(self) -> bool:
        """Whether the running trip is an engine trip (False also between trips)."""
        return self._trip is not None and self._engine

    def reserve(self, trip_ids: Iterable[str]) -> None:
        """Ids no new trip may take: those of an earlier run's files. A Pi without a
        real-time clock may boot to the same time twice; its second trip must not reuse
        the first one's name (nor, through it, the first one's file names or S3 keys)."""
        self._taken.update(trip_ids)

    def begin_engine(self, epoch: float, mono: float) -> Begin:
        """The car answers: an engine trip runs from now on.

        The running trip ends in the same step (unless it is a young GNSS-only segment,
        which becomes the engine trip instead).
        """
        step = self._stepped(epoch, mono)
        self._last_engine = mono
        ended = self._trip
        if (
            ended is not None
            and not self._engine
            and step is None
            and mono - self._started < self.adopt_within
        ):
            self._engine = True
            return Begin(trip=ended, ended=None, adopted=True)
        trip = self._open(epoch, mono, engine=True)
        return Begin(
            trip=trip, ended=None if ended is None else TripEnd(ended, Why.REPLACED), adopted=False
        )

    def end(self, only_engine: bool | None = None) -> TripEnd | None:
        """End the running trip (only an engine trip when ``only_engine`` is True, only a
        GNSS-only segment when False); the trip that ended, if any."""
        trip = self._trip
        if trip is None or (only_engine is not None and self._engine != only_engine):
            return None
        self._trip = None
        return TripEnd(trip, Why.ENDED)

    def end_if_idle(self, mono: float) -> TripEnd | None:
        """End a GNSS-only segment that got no row for ``gnss_timeout`` seconds (the
        receiver reports no fix); the trip that ended, if any."""
        if not self._idle(mono):
            return None
        trip, self._trip = self._trip, None
        assert trip is not None  # _idle() says a trip runs
        return TripEnd(trip, Why.NO_POSITION)

    def row(self, epoch: float, mono: float, engine: bool) -> Row:
        """A row is taken at ``epoch`` (row time) and ``mono``: its trip id.

        ``engine=False`` is a GNSS-only row. A row while no trip runs opens one (a GNSS-only
        segment for a GNSS-only row); a clock step, or a GNSS-only segment idle for too
        long, ends the running trip first.
        """
        trip = self._trip
        if engine:
            self._last_engine = mono
        elif trip is not None and self._engine and mono - self._last_engine <= self.engine_quiet:
            return DROP
        step = self._stepped(epoch, mono)
        ended: TripEnd | None = None
        if trip is not None:
            if step is not None:
                # Rows already written keep the old time and trip id; the rows from here
                # on get a trip id from the corrected time.
                ended = TripEnd(trip, Why.CLOCK_STEP, step)
            elif not engine and self._idle(mono):
                ended = TripEnd(trip, Why.NO_POSITION)
        self._last_row = mono
        if trip is None or ended is not None:
            trip = self._open(epoch, mono, engine=engine)
        return Row(trip=trip, ended=ended)

    # -- internals -----------------------------------------------------------------------
    def _idle(self, mono: float) -> bool:
        return (
            self._trip is not None
            and not self._engine
            and self.gnss_timeout is not None
            and mono - self._last_row > self.gnss_timeout
        )

    def _stepped(self, epoch: float, mono: float) -> float | None:
        """The size of a clock step since the last row, if one exceeds the redate step."""
        skew = epoch - mono
        last, self._skew = self._skew, skew
        if last is None or abs(skew - last) <= self._redate_step:
            return None
        return skew - last

    def _open(self, epoch: float, mono: float, engine: bool) -> str:
        trip = self._new_id(epoch)
        self._trip, self._engine, self._started = trip, engine, mono
        return trip

    def _new_id(self, epoch: float) -> str:
        """The id of a trip starting at ``epoch``: one second later while it is taken."""
        for _ in range(_ID_SEARCH):
            trip = trip_id_for(epoch)
            if trip not in self._taken:
                break
            epoch += 1.0
        self._taken.add(trip)
        return trip
