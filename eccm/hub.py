"""The hub: the latest values and fix, and the fan-out of samples to listeners.

Data flows one way: the OBD link and the GNSS source write here; the recorder (and later the
trip computer) listen; the control socket reads the latest state. Listener errors are
routed to the log, never back into the thread that published (python-can's Notifier is
the model).
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Callable, Mapping
from typing import Protocol

from eccm.clock import Clock
from eccm.gnss.fix import Fix
from eccm.sample import FAST_AGE_CAP, Layout, Reading, Sample, trip_id_for
from eccm.timebase import TimeBase

log = logging.getLogger(__name__)

# Seconds the row time may jump against the monotonic clock (a first GNSS fix correcting a
# clock that booted years off, NTP setting it) before the running trip ends there and the
# rows go on in a new trip named after the corrected time: a TRIP_ID, a file name and a
# date partition must not say 2016 for rows of 2026. Smaller steps (a clock a few seconds
# off) keep the trip; the trip computer measures durations on the monotonic clock anyway.
REDATE_STEP = 60.0


class Listener(Protocol):
    def on_sample(self, sample: Sample) -> None: ...

    def on_trip_end(self, trip_id: str) -> None: ...

    def stop(self) -> None: ...


class CorrectedClock:
    """A Clock whose wall time is the hub's GNSS-corrected time (see :meth:`Hub.now`).

    For the parts that stamp or judge ages by the wall clock (last upload time, local
    retention and the disk budget, which compare with trip ids that are corrected).
    """

    def __init__(self, hub: Hub) -> None:
        self._hub = hub

    def time(self) -> float:
        return self._hub.now()

    def monotonic(self) -> float:
        return self._hub.clock.monotonic()


class Hub:
    def __init__(
        self,
        clock: Clock,
        max_fix_age: float,
        layout: Layout,
        timebase: TimeBase | None = None,
    ) -> None:
        """``layout`` is the columns to use until the OBD link has learnt what the car has."""
        self.clock = clock
        self._layout = layout
        self.timebase = timebase or TimeBase()
        self._max_fix_age = max_fix_age
        self._lock = threading.Lock()
        # Held through a whole emit (count and hand-out): stop() takes it to close the hub,
        # so that no row is counted and then handed to listeners that already stopped.
        self._emit_lock = threading.Lock()
        self._closed = False
        self._listeners: list[Listener] = []
        self._values: dict[str, Reading] = {}
        # Oldest a fast / a slow engine value may be in a row or a GET (the OBD link sets
        # them from SAMPLE_INTERVAL, OBD_SLOW_INTERVAL and what it achieves).
        self._fast_age = FAST_AGE_CAP
        self._slow_age = math.inf
        self._fix: Fix | None = None
        self._trip: str | None = None
        self._trip_engine = False
        self._trip_started = 0.0
        # Seconds a GNSS-only segment may have run and still become the engine trip's start.
        self.adopt_within = 30.0
        # Seconds without a row that end a GNSS-only segment (TRIP_END_TIMEOUT, as for the
        # engine): a receiver that lost its fix in a garage for the night must not make the
        # next morning's drive the same trip. None: never.
        self.gnss_trip_timeout: float | None = None
        self._last_row = 0.0  # monotonic time of the last row
        self._facts: dict[str, str] = {}
        self.rows = 0
        # Row time minus monotonic time at the last row: a jump is a clock step.
        self._skew: float | None = None
        # Trip ids are unique per car: two trips never share one, even when a Pi without a
        # clock boots to the same time twice. ``trip_taken(trip_id)`` says whether an earlier
        # run used an id (the recorder knows the names it wrote); ids of this run are kept.
        self.trip_taken: Callable[[str], bool] | None = None
        self._used_trips: set[str] = set()

    # -- listeners ---------------------------------------------------------------------
    def add_listener(self, listener: Listener) -> None:
        with self._lock:
            self._listeners.append(listener)

    def _dispatch(self, call: str, arg: object) -> None:
        with self._lock:
            listeners = list(self._listeners)
        for listener in listeners:
            try:
                getattr(listener, call)(arg)
            except Exception:
                log.exception("listener %s failed in %s", type(listener).__name__, call)

    # -- writers -----------------------------------------------------------------------
    def update_fix(self, fix: Fix) -> None:
        self.timebase.observe(fix)
        with self._lock:
            self._fix = fix

    def update_values(self, values: Mapping[str, Reading]) -> None:
        with self._lock:
            self._values.update(values)

    def clear_values(self) -> None:
        """The car stopped answering: no engine value is current any more."""
        with self._lock:
            self._values.clear()

    def set_max_ages(self, fast: float, slow: float) -> None:
        """Oldest a fast and a slow value may be (seconds): an older one is left out of
        rows and of :meth:`latest_values` (the rule: ``obd.plan.fast_max_age``)."""
        with self._lock:
            self._fast_age = fast
            self._slow_age = slow

    def set_layout(self, layout: Layout) -> None:
        """The OBD link resolved the columns (supported fast and slow commands)."""
        with self._lock:
            self._layout = layout

    @property
    def layout(self) -> Layout:
        with self._lock:
            return self._layout

    def set_fact(self, name: str, value: str | None) -> None:
        with self._lock:
            if value is None:
                self._facts.pop(name, None)
            else:
                self._facts[name] = value

    # -- trips -------------------------------------------------------------------------
    def now(self) -> float:
        """Wall time, GNSS-corrected when the system clock is off."""
        return self.timebase.stamp(self.clock.time(), self.clock.monotonic())[0]

    def _stamp(self) -> tuple[float, str, float]:
        """(time, time source, monotonic time) of a row taken now."""
        mono = self.clock.monotonic()
        epoch, source = self.timebase.stamp(self.clock.time(), mono)
        return epoch, source, mono

    def _stepped(self, epoch: float, mono: float) -> float | None:
        """The size of a clock step since the last row, if one exceeds REDATE_STEP.

        Called under the lock.
        """
        skew = epoch - mono
        last, self._skew = self._skew, skew
        if last is None or abs(skew - last) <= REDATE_STEP:
            return None
        return skew - last

    def _new_trip_id(self, epoch: float) -> str:
        """The trip id of a trip starting at ``epoch``, one second later while it is taken.

        Called under the lock.
        """
        for _ in range(86_400):
            trip = trip_id_for(epoch)
            if trip not in self._used_trips and not self._taken(trip):
                break
            epoch += 1.0
        self._used_trips.add(trip)
        return trip

    def _taken(self, trip: str) -> bool:
        check = self.trip_taken
        if check is None:
            return False
        try:
            return check(trip)
        except Exception:
            log.exception("checking whether trip id %s was used failed", trip)
            return False

    def begin_trip(self) -> str:
        """The car answers: start an engine trip.

        A GNSS-only segment that began less than ``adopt_within`` seconds ago (the time
        the adapter took to connect at start-up, typically) becomes the start of this
        trip instead of a trip of its own; an older one ends here.
        """
        epoch, _source, mono = self._stamp()
        with self._lock:
            step = self._stepped(epoch, mono)
            ended = self._trip
            young = (
                ended is not None
                and not self._trip_engine
                and step is None
                and mono - self._trip_started < self.adopt_within
            )
            if young and ended is not None:
                self._trip_engine = True
                trip = ended
            else:
                young = False
                # The old trip ends and the new one opens in one step under the lock: a
                # GNSS row in between would open a trip of its own that nobody ends.
                trip = self._new_trip_id(epoch)
                self._trip, self._trip_engine = trip, True
                self._trip_started = mono
        if young:
            log.info("trip %s continues with engine data", trip)
            return trip
        if ended is not None:
            log.info("trip %s ended", ended)
            self._dispatch("on_trip_end", ended)
        log.info("trip %s started", trip)
        return trip

    def end_trip(self) -> None:
        self._end(None)

    def end_idle_gnss_trip(self) -> None:
        """End a GNSS-only segment that got no row for ``gnss_trip_timeout`` seconds (the
        receiver reports no fix); call it as fixes without position come in."""
        with self._lock:
            idle = self._gnss_idle(self.clock.monotonic())
        if idle:
            self._end(False)

    def _gnss_idle(self, mono: float) -> bool:
        """Called under the lock."""
        return (
            self._trip is not None
            and not self._trip_engine
            and self.gnss_trip_timeout is not None
            and mono - self._last_row > self.gnss_trip_timeout
        )

    def _end(self, only_engine: bool | None) -> None:
        with self._lock:
            trip = self._trip
            if trip is None or (only_engine is not None and self._trip_engine != only_engine):
                return
            self._trip = None
        log.info("trip %s ended", trip)
        self._dispatch("on_trip_end", trip)

    @property
    def trip(self) -> str | None:
        with self._lock:
            return self._trip

    @property
    def engine_trip(self) -> bool:
        with self._lock:
            return self._trip is not None and self._trip_engine

    # -- readers -----------------------------------------------------------------------
    def fresh_fix(self) -> Fix | None:
        with self._lock:
            fix = self._fix
        if fix is None or self.clock.monotonic() - fix.received > self._max_fix_age:
            return None
        return fix

    def latest_values(self) -> dict[str, Reading]:
        """The current engine values: none older than its bound (see :meth:`set_max_ages`)."""
        mono = self.clock.monotonic()
        with self._lock:
            return self._fresh(mono)

    def _fresh(self, mono: float) -> dict[str, Reading]:
        """Values young enough at ``mono``. Called under the lock."""
        fast = set(self._layout.fast)
        out: dict[str, Reading] = {}
        for name, reading in self._values.items():
            limit = self._fast_age if name in fast else self._slow_age
            if mono - reading.at <= limit:
                out[name] = reading
        return out

    def facts(self) -> dict[str, str]:
        with self._lock:
            return dict(self._facts)

    # -- samples -----------------------------------------------------------------------
    def emit(self, engine: bool = True) -> Sample | None:
        """Build a sample from the latest state and hand it to every listener.

        ``engine=False`` is a GNSS-only row while the car does not answer: it opens a
        GNSS-only segment (a trip of its own) when no trip runs, and is dropped (None)
        while an engine trip runs, whose rows the OBD link writes. After :meth:`stop` no row
        is taken (None): a thread that outlived its stop (python-OBD cannot be interrupted
        mid-answer) must not count rows that the stopped recorder would never write.
        """
        with self._emit_lock:
            if self._closed:
                return None
            return self._emit(engine)

    def _emit(self, engine: bool) -> Sample | None:
        """Called under the emit lock."""
        epoch, source, mono = self._stamp()
        ended: str | None = None
        with self._lock:
            trip = self._trip
            if trip is not None and self._trip_engine and not engine:
                return None
            step = self._stepped(epoch, mono)
            idle = not engine and self._gnss_idle(mono)
            if trip is not None and (step is not None or idle):
                # Rows already written keep the old time and trip id; the rows from here
                # on get a trip id from the corrected time.
                ended, trip = trip, None
                self._trip = None
            self._last_row = mono
            if trip is None:
                trip = self._new_trip_id(epoch)
                self._trip, self._trip_engine = trip, engine
                self._trip_started = mono
        if ended is not None:
            if step is not None:
                log.warning(
                    "the clock stepped by %.0f s: trip %s ends, the drive goes on as trip %s",
                    step,
                    ended,
                    trip,
                )
            else:
                log.info("trip %s ended: no position for over %g s", ended, self.gnss_trip_timeout)
            self._dispatch("on_trip_end", ended)
        if engine:
            with self._lock:
                # Judged at the row's own time: a value read long before (a slow answer
                # after it, a busy machine) must not pass for current.
                values = self._fresh(mono)
        else:
            values = {}
        sample = Sample(
            time=epoch,
            trip_id=trip,
            values=values,
            fix=self.fresh_fix(),
            layout=self.layout,
            time_source=source,
            engine=engine,
            mono=mono,
        )
        with self._lock:
            self.rows += 1
        self._dispatch("on_sample", sample)
        return sample

    def stop(self) -> None:
        """Take no more rows, end the running trip and stop every listener (closing its file).

        A row being emitted meanwhile is handed to the listeners first: every row counted
        in ``rows`` reached them before they stopped.
        """
        with self._emit_lock:
            self._closed = True
        self.end_trip()
        with self._lock:
            listeners = list(self._listeners)
        for listener in listeners:
            try:
                listener.stop()
            except Exception:
                log.exception("listener %s failed to stop", type(listener).__name__)
