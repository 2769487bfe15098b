"""The trouble-code timeline: pure change detection, the schedule, and the polling thread."""

from __future__ import annotations

import threading
from collections.abc import Mapping
from concurrent.futures import Future
from typing import Any

import pytest

from eccm.clock import FakeClock
from eccm.errors import DeviceError
from eccm.obd.dtc_poller import DtcPoller, DtcSchedule
from eccm.trip.dtc import DtcTimeline, changes, state_of
from tests.waiting import wait_until

T0 = 1_700_000_000.0  # 2023-11-14T22:13:20Z


def report(mil: bool | None, stored: list[str] = [], pending: list[str] = []) -> dict[str, Any]:  # noqa: B006
    return {
        "mil": mil,
        "stored": [{"code": c, "description": f"about {c}"} for c in stored],
        "pending": [{"code": c, "description": f"about {c}"} for c in pending],
    }


def test_the_first_read_of_a_trip_is_its_initial_state() -> None:
    tl = DtcTimeline()
    events = tl.observe(T0, report(False, ["P0143"], []))
    assert events == [
        {
            "time": "2023-11-14T22:13:20.000Z",
            "event": "initial",
            "mil": False,
            "stored": [{"code": "P0143", "description": "about P0143"}],
            "pending": [],
        }
    ]
    assert tl.observe(T0 + 60, report(False, ["P0143"], [])) == []  # nothing changed
    assert tl.reads == 2 and len(tl.events) == 1


def test_each_change_is_an_event_with_its_time() -> None:
    tl = DtcTimeline()
    tl.observe(T0, report(False))
    added = tl.observe(T0 + 60, report(False, [], ["P0300"]))
    assert added == [
        {
            "time": "2023-11-14T22:14:20.000Z",
            "event": "dtc_added",
            "kind": "pending",
            "code": "P0300",
            "description": "about P0300",
        }
    ]
    # the pending code matures into a stored one and lights the MIL
    moved = tl.observe(T0 + 120, report(True, ["P0300"], []))
    assert [(e["event"], e.get("kind"), e.get("code")) for e in moved] == [
        ("mil_on", None, None),
        ("dtc_added", "stored", "P0300"),
        ("dtc_removed", "pending", "P0300"),
    ]
    cleared = tl.observe(T0 + 180, report(False))
    assert [(e["event"], e.get("code")) for e in cleared] == [
        ("mil_off", None),
        ("dtc_removed", "P0300"),
    ]
    doc = tl.to_json()
    assert doc["reads"] == 4 and len(doc["events"]) == 7  # type: ignore[arg-type]
    assert doc["state"] == {"mil": False, "stored": [], "pending": []}


def test_an_unknown_mil_is_no_change() -> None:
    assert changes(state_of(report(True)), state_of(report(None)), T0) == []
    assert changes(state_of(report(None)), state_of(report(True)), T0) == []


def test_odd_reports_are_read_safely() -> None:
    s = state_of({"mil": "yes", "stored": [("P0001", None), "junk", {"code": ""}], "pending": 7})
    assert s.mil is None and dict(s.stored) == {"P0001": ""} and dict(s.pending) == {}


def test_failures_are_counted() -> None:
    tl = DtcTimeline()
    tl.failed("obd_timeout: no answer")
    assert tl.to_json()["failed_reads"] == 1 and tl.to_json()["state"] is None
    assert tl.last_error == "obd_timeout: no answer"


def test_schedule_reads_at_once_in_a_new_trip_then_every_interval() -> None:
    s = DtcSchedule(60.0)
    assert not s.due(0.0, None)
    assert s.due(0.0, "A")
    s.done(0.0, "A")
    assert not s.due(59.9, "A")
    assert s.due(60.0, "A")
    assert s.due(10.0, "B")  # a new trip does not wait
    assert s.wait(10.0) == 1.0 and s.wait(59.5) == pytest.approx(0.5)
    assert s.wait(70) == 1.0  # overdue with no trip to read in: a tick, never 0 (a busy loop)


def test_the_thread_idles_between_trips() -> None:
    """Regression: with no trip (no adapter) the thread once spun at 100 % CPU."""
    looks = [0]

    def no_trip() -> str | None:
        looks[0] += 1
        return None

    clock = FakeClock()
    poller = DtcPoller(Link(), Sink(), interval=60.0, clock=clock, trip=no_trip, now=lambda: T0)
    poller.schedule.done(clock.monotonic(), "old")
    clock.advance(120)  # the next read is overdue, and there is no trip to read it in
    poller.start()
    try:
        wait_until(lambda: looks[0] >= 1, timeout=30, what="a first look")
        # An observation window, not a synchronisation: a busy loop looks thousands of times.
        threading.Event().wait(0.3)
    finally:
        poller.stop(timeout=10)
    assert looks[0] <= 2


# -- the thread, with a link that answers like ObdLink.read_dtcs ----------------------------
class Link:
    def __init__(self) -> None:
        self.answer: dict[str, Any] | Exception = report(False)
        self.calls = 0

    def read_dtcs(self, timeout: float = 5.0) -> Future[dict[str, Any]]:
        self.calls += 1
        f: Future[dict[str, Any]] = Future()
        if isinstance(self.answer, Exception):
            f.set_exception(self.answer)
        else:
            f.set_result(self.answer)
        return f


class Sink:
    def __init__(self) -> None:
        self.got: list[tuple[str, float, Mapping[str, object]]] = []
        self.failed: list[tuple[str, str]] = []
        self.lock = threading.Lock()

    def on_dtcs(self, trip_id: str, time: float, report: Mapping[str, object]) -> None:
        with self.lock:
            self.got.append((trip_id, time, report))

    def on_dtcs_failed(self, trip_id: str, reason: str) -> None:
        with self.lock:
            self.failed.append((trip_id, reason))


def test_poller_reads_in_trips_only_and_every_interval() -> None:
    clock = FakeClock()
    link, sink = Link(), Sink()
    trip: list[str | None] = [None]
    poller = DtcPoller(link, sink, interval=60.0, clock=clock, trip=lambda: trip[0], now=lambda: T0)
    assert poller.poll_once() is False and link.calls == 0  # no trip: the car is not asked
    trip[0] = "A"
    assert poller.poll_once() is True
    assert sink.got == [("A", T0, report(False))]
    clock.advance(30)
    assert poller.poll_once() is False
    clock.advance(30)
    link.answer = DeviceError("not_connected: the OBD adapter is disconnected")
    assert poller.poll_once() is True
    assert sink.failed == [("A", "not_connected: the OBD adapter is disconnected")]
    trip[0] = "B"
    link.answer = report(True, ["P0143"])
    assert poller.poll_once() is True
    assert sink.got[-1][0] == "B" and poller.reads == 2 and poller.failures == 1


def test_poller_thread_starts_and_stops_promptly() -> None:
    clock = FakeClock()
    link, sink = Link(), Sink()
    poller = DtcPoller(link, sink, interval=60.0, clock=clock, trip=lambda: "A", now=lambda: T0)
    poller.start()
    try:
        wait_until(lambda: sink.got, timeout=30, what="a first read")
    finally:
        poller.stop(timeout=10)
    assert poller._thread is not None and not poller._thread.is_alive()
    assert link.calls == 1  # the fake clock did not move: no second read


def test_a_read_in_flight_is_abandoned_at_stop() -> None:
    never: Future[dict[str, Any]] = Future()

    class Slow:
        def read_dtcs(self, timeout: float = 5.0) -> Future[dict[str, Any]]:
            return never

    sink = Sink()
    poller = DtcPoller(
        Slow(), sink, interval=60.0, clock=FakeClock(), trip=lambda: "A", now=lambda: T0
    )
    poller.start()
    wait_until(lambda: poller.schedule._trip == "A", timeout=30, what="the read to start")
    poller.stop(timeout=10)
    assert poller._thread is not None and not poller._thread.is_alive()
    assert never.cancelled() and sink.got == [] and sink.failed == []
