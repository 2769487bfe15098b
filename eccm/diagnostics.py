"""The diagnostics timeline: stored and pending trouble codes and the MIL, read during a
trip every OBD_DTC_INTERVAL through the OBD owner; each change is an event with its time.

:class:`DtcTimeline` is the pure change detector (reports in, events out);
:class:`DtcPoller` is the small thread that asks the OBD link (``read_dtcs``: modes 03 and
07, and 01 01 for the MIL) and hands each report to a sink (the trip computer), which
keeps one timeline per trip.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import CancelledError, Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from typing import Any, Protocol

from eccm.clock import Clock
from eccm.errors import DeviceError
from eccm.sample import iso_utc

log = logging.getLogger(__name__)

READ_TIMEOUT = 15.0  # modes 03 + 07 + 01 01 on a slow K-line car (as the socket's DTC)
_RUN_MARGIN = 10.0  # once the link took the request it runs to its end
_TICK = 1.0  # seconds between two looks at the trip while nothing is due
KINDS = ("stored", "pending")


@dataclass(frozen=True)
class DtcState:
    """What one read found: the MIL (None when the car does not say) and code → description."""

    mil: bool | None
    stored: Mapping[str, str] = field(default_factory=dict)
    pending: Mapping[str, str] = field(default_factory=dict)

    def codes(self, kind: str) -> Mapping[str, str]:
        return self.stored if kind == "stored" else self.pending

    def to_json(self) -> dict[str, object]:
        return {
            "mil": self.mil,
            "stored": _listing(self.stored),
            "pending": _listing(self.pending),
        }


def _listing(codes: Mapping[str, str]) -> list[dict[str, str]]:
    return [{"code": c, "description": d} for c, d in sorted(codes.items())]


def _codes(raw: object) -> dict[str, str]:
    """{code: description} of the link's list of {"code", "description"} (or pairs)."""
    out: dict[str, str] = {}
    if not isinstance(raw, Sequence) or isinstance(raw, str):
        return out
    for item in raw:
        if isinstance(item, Mapping):
            code, desc = item.get("code"), item.get("description")
        elif isinstance(item, Sequence) and not isinstance(item, str) and len(item) == 2:
            code, desc = item[0], item[1]
        else:
            continue
        if code:
            out.setdefault(str(code), "" if desc is None else str(desc))
    return out


def state_of(report: Mapping[str, object]) -> DtcState:
    """A report of ``ObdLink.read_dtcs`` as a DtcState."""
    mil = report.get("mil")
    return DtcState(
        mil=mil if isinstance(mil, bool) else None,
        stored=_codes(report.get("stored")),
        pending=_codes(report.get("pending")),
    )


def changes(before: DtcState, after: DtcState, time: float) -> list[dict[str, object]]:
    """Events that lead from ``before`` to ``after``, stamped ``time`` (epoch seconds).

    A MIL that was or became unknown is no change: the car only stopped saying.
    """
    at = iso_utc(time)
    events: list[dict[str, object]] = []
    if before.mil is not None and after.mil is not None and before.mil != after.mil:
        events.append({"time": at, "event": "mil_on" if after.mil else "mil_off"})
    for kind in KINDS:
        old, new = before.codes(kind), after.codes(kind)
        for code in sorted(new.keys() - old.keys()):
            events.append(
                {"time": at, "event": "dtc_added", "kind": kind, "code": code,
                 "description": new[code]}
            )  # fmt: skip
        for code in sorted(old.keys() - new.keys()):
            events.append(
                {"time": at, "event": "dtc_removed", "kind": kind, "code": code,
                 "description": old[code]}
            )  # fmt: skip
    return events


class DtcTimeline:
    """The events of one trip: its first read in full ("initial"), then every change."""

    def __init__(self) -> None:
        self.state: DtcState | None = None
        self.events: list[dict[str, object]] = []
        self.reads = 0
        self.failed_reads = 0
        self.last_error: str | None = None

    def observe(self, time: float, report: Mapping[str, object]) -> list[dict[str, object]]:
        """A successful read at ``time``; returns the events it adds."""
        new = state_of(report)
        self.reads += 1
        self.last_error = None
        if self.state is None:
            added: list[dict[str, object]] = [
                {"time": iso_utc(time), "event": "initial", **new.to_json()}
            ]
        else:
            added = changes(self.state, new, time)
        self.state = new
        self.events.extend(added)
        return added

    def failed(self, reason: str) -> None:
        self.failed_reads += 1
        self.last_error = reason

    def to_json(self) -> dict[str, object]:
        state = self.state.to_json() if self.state is not None else None
        return {
            "reads": self.reads,
            "failed_reads": self.failed_reads,
            "last_error": self.last_error,
            "state": state,
            "events": list(self.events),
        }


# -- the thread --------------------------------------------------------------------------
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
