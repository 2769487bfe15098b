"""The hub: the latest values and fix, and the fan-out of samples to listeners.

Data flows one way: the OBD link and the GNSS source write here; the recorder and the trip
computer listen; the control socket reads the latest state. Listener errors are routed to
the log, never back into the thread that published (python-can's Notifier is the model).
Which trip a row belongs to is decided by :class:`eccm.trip.segment.TripSegmenter`, called
under the hub's lock.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Callable, Iterable, Mapping
from typing import Protocol

from eccm.clock import Clock
from eccm.gnss.fix import Fix
from eccm.sample import FAST_AGE_CAP, Layout, Reading, Sample
from eccm.timebase import TimeBase
from eccm.trip.segment import ENGINE_QUIET, TripEnd, TripSegmenter, Why

log = logging.getLogger(__name__)


class Listener(Protocol):
    def on_sample(self, sample: Sample) -> None:
        """A row was taken (called in the publishing thread: return quickly)."""
        ...

    def on_trip_end(self, trip_id: str) -> None:
        """Trip ``trip_id`` ended: no more rows of it follow."""
        ...

    def stop(self) -> None:
        """The hub stopped: finish up (close the file, hand over the summary)."""
        ...


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
        trips: TripSegmenter | None = None,
    ) -> None:
        """``layout`` is the columns to use until the OBD link has learnt what the car has;
        ``trips`` segments the rows into trips (its defaults: adopt a GNSS-only segment
        within 30 s, never end one for lack of rows)."""
        self.clock = clock
        self._layout = layout
        self._fast_names = frozenset(layout.fast)  # of the layout, for every row
        self.timebase = timebase or TimeBase()
        self._max_fix_age = max_fix_age
        self._lock = threading.Lock()
        # Held through a whole emit (count and hand-out): stop() takes it to close the hub,
        # so that no row is counted and then handed to listeners that already stopped.
        self._emit_lock = threading.Lock()
        self._closed = False
        self._listeners: list[Listener] = []
        self._listeners_now: tuple[Listener, ...] = ()  # a copy for each row, made once
        self._values: dict[str, Reading] = {}
        # Oldest a fast / a slow engine value may be in a row or a GET (the OBD link sets
        # them from SAMPLE_INTERVAL, OBD_SLOW_INTERVAL and what it achieves).
        self._fast_age = FAST_AGE_CAP
        self._slow_age = math.inf
        self._fix: Fix | None = None
        self._trips = trips or TripSegmenter()  # under the lock
        self._facts: dict[str, str] = {}
        self._layout_watchers: list[Callable[[Layout], None]] = []
        self.rows = 0

    # -- listeners ---------------------------------------------------------------------
    def add_listener(self, listener: Listener) -> None:
        with self._lock:
            self._listeners.append(listener)
            self._listeners_now = tuple(self._listeners)

    def _to_listeners(self, what: str, call: Callable[[Listener], None]) -> None:
        """``call`` every listener in turn; one that fails is logged (``what`` says in
        what: "in on_sample") and the others are still called."""
        with self._lock:
            listeners = list(self._listeners)
        for listener in listeners:
            try:
                call(listener)
            except Exception:
                log.exception("listener %s failed %s", type(listener).__name__, what)

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
            # A car whose rows come slowly (K-line) gets longer before position rows fill
            # in its trip: a fast value's bound is about the time its rows take.
            self._trips.engine_quiet = max(ENGINE_QUIET, 2 * fast)

    def set_layout(self, layout: Layout) -> None:
        """The OBD link resolved the columns (supported fast and slow commands)."""
        with self._lock:
            self._layout = layout
            self._fast_names = frozenset(layout.fast)
            watchers = tuple(self._layout_watchers)
        for watcher in watchers:
            try:
                watcher(layout)
            except Exception:
                log.exception("a layout watcher failed")

    def watch_layout(self, watcher: Callable[[Layout], None]) -> None:
        """Call ``watcher`` with each layout the OBD link resolves (in the link's thread)."""
        with self._lock:
            self._layout_watchers.append(watcher)

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

    def settling(self) -> bool:
        """True while the receiver's first epochs say the clock is about to be corrected
        (:meth:`TimeBase.settling`): a trip opened now would be named on the wrong date."""
        return self.timebase.settling(self.clock.time(), self.clock.monotonic())

    def reserve_trip_ids(self, trip_ids: Iterable[str]) -> None:
        """Trip ids an earlier run used (its files): no trip of this run takes one."""
        with self._lock:
            self._trips.reserve(trip_ids)

    def begin_trip(self) -> str:
        """The car answers: start an engine trip (see :meth:`TripSegmenter.begin_engine`)."""
        epoch, _source, mono = self._stamp()
        with self._lock:
            # The old trip ends and the new one opens in one step under the lock: a GNSS
            # row in between would open a trip of its own that nobody ends.
            begin = self._trips.begin_engine(epoch, mono)
        if begin.adopted:
            log.info("trip %s continues with engine data", begin.trip)
            return begin.trip
        if begin.ended is not None:
            self._ended(begin.ended, begin.trip)
        log.info("trip %s started", begin.trip)
        return begin.trip

    def end_trip(self) -> None:
        with self._lock:
            ended = self._trips.end()
        if ended is not None:
            self._ended(ended)

    def end_idle_gnss_trip(self) -> None:
        """End a GNSS-only segment that got no row for TRIP_END_TIMEOUT (the receiver
        reports no fix); call it as fixes without position come in."""
        with self._lock:
            ended = self._trips.end_if_idle(self.clock.monotonic())
        if ended is not None:
            self._ended(ended)

    def _ended(self, end: TripEnd, successor: str | None = None) -> None:
        """Log the end of a trip and tell every listener. Called outside the lock."""
        if end.why is Why.CLOCK_STEP:
            log.warning(
                "the clock stepped by %.0f s: trip %s ends, the drive goes on as trip %s",
                end.step,
                end.trip,
                successor,
            )
        elif end.why is Why.NO_POSITION:
            log.info("trip %s ended: no position for over %g s", end.trip, self._trips.gnss_timeout)
        else:
            log.info("trip %s ended", end.trip)
        self._to_listeners("in on_trip_end", lambda listener: listener.on_trip_end(end.trip))

    @property
    def trip(self) -> str | None:
        with self._lock:
            return self._trips.trip

    @property
    def engine_trip(self) -> bool:
        with self._lock:
            return self._trips.engine

    @property
    def engine_trip_id(self) -> str | None:
        """The running engine trip's id, read in one step (None: no engine trip)."""
        with self._lock:
            return self._trips.trip if self._trips.engine else None

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
        fast, fast_age, slow_age = self._fast_names, self._fast_age, self._slow_age
        return {
            name: reading
            for name, reading in self._values.items()
            if mono - reading.at <= (fast_age if name in fast else slow_age)
        }

    def facts(self) -> dict[str, str]:
        with self._lock:
            return dict(self._facts)

    # -- samples -----------------------------------------------------------------------
    def emit(self, engine: bool = True) -> Sample | None:
        """Build a sample from the latest state and hand it to every listener.

        ``engine=False`` is a GNSS-only row while the car does not answer: it opens a
        GNSS-only segment (a trip of its own) when no trip runs, and is dropped (None)
        while an engine trip runs, whose rows the OBD link writes, unless the car has given
        no row for a few seconds (see :data:`eccm.trip.segment.ENGINE_QUIET`). After :meth:`stop` no row
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
        with self._lock:
            row = self._trips.row(epoch, mono, engine)
            trip = row.trip
            if trip is None:
                return None
            if row.ended is None:
                # The usual row: everything in one hold of the lock.
                values = self._fresh(mono) if engine else {}
                fix, layout = self._fix, self._layout
                self.rows += 1
                listeners = self._listeners_now
        if row.ended is not None:
            self._ended(row.ended, trip)
            with self._lock:
                # Judged at the row's own time: a value read long before (a slow answer
                # after it, a busy machine) must not pass for current.
                values = self._fresh(mono) if engine else {}
                fix, layout = self._fix, self._layout
                self.rows += 1
                listeners = self._listeners_now
        if fix is not None and self.clock.monotonic() - fix.received > self._max_fix_age:
            fix = None  # as fresh_fix()
        sample = Sample(
            time=epoch,
            trip_id=trip,
            values=values,
            fix=fix,
            layout=layout,
            time_source=source,
            engine=engine,
            mono=mono,
        )
        for listener in listeners:
            try:
                listener.on_sample(sample)
            except Exception:
                log.exception("listener %s failed %s", type(listener).__name__, "in on_sample")
        return sample

    def close(self) -> None:
        """Take no more rows and end the running trip (its file is closed, its summary
        handed over), the listeners still running: the daemon's stop lets MQTT publish
        that trip before it goes (:meth:`stop` follows).

        A row being emitted meanwhile is handed to the listeners first: every row counted
        in ``rows`` reached them.
        """
        with self._emit_lock:
            self._closed = True
        self.end_trip()

    def stop(self) -> None:
        """:meth:`close` (if not done yet) and stop every listener."""
        self.close()
        self._to_listeners("to stop", lambda listener: listener.stop())
