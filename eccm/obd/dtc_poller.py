"""The trouble-code poller: during a trip, every OBD_DTC_INTERVAL, asks the OBD link
(``read_dtcs``: modes 03 and 07, and 01 01 for the MIL) and hands each report to a sink (the
trip computer, which keeps one :class:`eccm.trip.dtc.DtcTimeline` per trip).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from concurrent.futures import CancelledError, Future
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any, Protocol

from eccm.clock import Clock
from eccm.errors import DeviceError

log = logging.getLogger(__name__)

READ_TIMEOUT = 15.0  # modes 03 + 07 + 01 01 on a slow K-line car (as the socket's DTC)
_RUN_MARGIN = 10.0  # once the link took the request it runs to its end
_TICK = 1.0  # seconds between two looks at the trip while nothing is due


class DtcLink(Protocol):
    def read_dtcs(self, timeout: float = ...) -> Future[dict[str, Any]]: ...


class DtcSink(Protocol):
    def on_dtcs(self, trip_id: str, time: float, report: Mapping[str, object]) -> None: ...

    def on_dtcs_failed(self, trip_id: str, reason: str) -> None: ...


class DtcSchedule:
    """When to read: at once in a new trip, then every ``interval`` seconds. Pure."""

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self._trip: str | None = None
        self._next = 0.0

    def due(self, now: float, trip: str | None) -> bool:
        if trip is None:
            return False
        return trip != self._trip or now >= self._next

    def done(self, now: float, trip: str) -> None:
        """A read was tried (whatever its outcome) at ``now`` in ``trip``."""
        self._trip = trip
        self._next = now + self.interval

    def wait(self, now: float) -> float:
        """Seconds until the next look (a new trip is noticed within a tick).

        A read that is overdue with no trip to read it in waits a whole tick: returning 0
        there would spin the thread at full CPU while the adapter is away.
        """
        if self._next <= now:
            return _TICK
        return min(_TICK, self._next - now)


class DtcPoller:
    """Reads the trouble codes during engine trips and hands them to ``sink``.

    ``trip()`` names the running engine trip (None between trips, or while only GNSS
    rows are written); ``now()`` is the wall time events are stamped with (GNSS-corrected).
    """

    def __init__(
        self,
        link: DtcLink,
        sink: DtcSink,
        *,
        interval: float,
        clock: Clock,
        trip: Callable[[], str | None],
        now: Callable[[], float],
        timeout: float = READ_TIMEOUT,
    ) -> None:
        self._link = link
        self._sink = sink
        self._clock = clock
        self._trip = trip
        self._now = now
        self._timeout = timeout
        self.schedule = DtcSchedule(interval)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._failing = False
        self.reads = 0
        self.failures = 0

    def start(self) -> None:
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self._run, name="eccm-dtc", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 2.0) -> None:
        """Stop looking; a read in flight is abandoned (the link fails it when it stops)."""
        self._stop.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.poll_once()
            except Exception:
                log.exception("trouble code poller failed; it goes on")
            self._stop.wait(self.schedule.wait(self._clock.monotonic()))

    def poll_once(self) -> bool:
        """Read now if due; True if a read was tried."""
        trip = self._trip()
        if not self.schedule.due(self._clock.monotonic(), trip) or trip is None:
            return False
        self.schedule.done(self._clock.monotonic(), trip)
        try:
            report = self._result(self._link.read_dtcs(self._timeout))
        except _Abandoned:
            return True
        except (DeviceError, TimeoutError, FutureTimeout, CancelledError) as exc:
            reason = str(exc) or type(exc).__name__
            self.failures += 1
            self._sink.on_dtcs_failed(trip, reason)
            if not self._failing:
                log.warning(
                    "cannot read the trouble codes (%s); trying again every %g s",
                    reason,
                    self.schedule.interval,
                )
            self._failing = True
            return True
        if self._failing:
            log.info("trouble codes read again")
        self._failing = False
        self.reads += 1
        self._sink.on_dtcs(trip, self._now(), report)
        return True

    def _result(self, future: Future[dict[str, Any]]) -> dict[str, Any]:
        # In short waits, so that stop() never waits for a slow car.
        deadline = self._clock.monotonic() + self._timeout + _RUN_MARGIN
        while True:
            if self._stop.is_set():
                future.cancel()
                raise _Abandoned
            try:
                return future.result(timeout=0.25)
            except FutureTimeout:
                if self._clock.monotonic() >= deadline:
                    future.cancel()
                    raise TimeoutError("obd_timeout: the car did not answer in time") from None


class _Abandoned(Exception):
    """The poller stopped while a read was in flight."""
