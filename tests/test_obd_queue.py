"""The on-demand request queue on a fake clock: who runs, who is refused busy, who times
out. The requests run in the test's thread (as they would in the link thread) and their
timers fire when the test says: no link, no adapter, no sleep."""

from __future__ import annotations

import concurrent.futures
import math
from collections.abc import Callable
from typing import Any

import pytest

from eccm.clock import FakeClock
from eccm.errors import DeviceError
from eccm.obd.ondemand import Job, RequestQueue
from eccm.obd.share import MAX_START_WAIT, QUEUE_LIMIT, SHARE, AdapterBusy
from tests.obd_helpers import FakeTimers

IFACE = "/dev/obd"
CONN = object()  # what the link thread hands each request: here only passed through


def make(clock: FakeClock, timers: FakeTimers | None = None) -> RequestQueue:
    queue = RequestQueue(
        clock, IFACE, lambda: None, first_guess=0.05, timer=timers or FakeTimers(clock)
    )
    queue.set_state("connected")
    return queue


def run(queue: RequestQueue, clock: FakeClock, next_row: float) -> float:
    return queue.run(CONN, next_row, 0.05, lambda: False)


def taking(clock: FakeClock, seconds: float, result: Any = "done") -> Callable[[Any], Any]:
    def job(conn: Any) -> Any:
        clock.advance(seconds)
        return result

    return job


def test_requests_are_refused_at_once_unless_connected() -> None:
    clock = FakeClock()
    queue = RequestQueue(clock, IFACE, lambda: None, first_guess=0.05, timer=FakeTimers(clock))
    refused = queue.submit(lambda conn: "never")
    assert refused.done()
    with pytest.raises(DeviceError, match=r"^not_connected: the OBD adapter is disconnected"):
        refused.result(0)
    queue.set_state("connecting")
    with pytest.raises(DeviceError, match=rf"is connecting \(OBD_INTERFACE={IFACE}\)"):
        queue.submit(lambda conn: "never").result(0)


def test_a_request_runs_with_the_connection_in_the_idle_time_before_the_next_row() -> None:
    clock = FakeClock()
    timers = FakeTimers(clock)
    queue = make(clock, timers)
    woken: list[bool] = []
    queue._wake = lambda: woken.append(True)
    future = queue.submit(lambda conn: conn)
    assert woken == [True]  # the link thread is told
    assert run(queue, clock, clock.monotonic() + 0.2) == math.inf  # nothing left
    assert future.result(0) is CONN
    assert timers.made[0].cancelled  # its timeout no longer matters
    assert queue.share.tokens(clock.monotonic()) == pytest.approx(0.02)  # idle time is free


def test_priority_requests_go_first_and_a_failing_one_fails_only_itself() -> None:
    clock = FakeClock()
    queue = make(clock)
    order: list[str] = []
    first = queue.submit(lambda conn: order.append("read"))
    boom = queue.submit(lambda conn: 1 / 0)
    dtc = queue.submit(lambda conn: order.append("dtc"), 15.0, kind="dtc read", priority=True)
    run(queue, clock, clock.monotonic() + 1.0)
    assert order == ["dtc", "read"]
    assert first.done() and dtc.done()
    with pytest.raises(ZeroDivisionError):
        boom.result(0)


def test_a_full_queue_is_busy_at_once() -> None:
    clock = FakeClock()
    queue = make(clock)
    waiting = [queue.submit(lambda conn: None) for _ in range(QUEUE_LIMIT)]
    assert not any(f.done() for f in waiting)
    with pytest.raises(AdapterBusy, match=r"^busy: 8 requests are already waiting") as info:
        queue.submit(lambda conn: None).result(0)
    assert info.value.retry_after == MAX_START_WAIT
    assert queue.busy_refusals == 1


def test_without_idle_time_one_charged_request_and_the_rest_busy_with_a_hint() -> None:
    clock = FakeClock()
    queue = make(clock)
    now = clock.monotonic()
    charged = queue.submit(taking(clock, 0.1))
    late = queue.submit(lambda conn: "never")
    run(queue, clock, now)  # a row is due: no idle time
    assert charged.result(0) == "done"
    # 0.1 s charged: 0.08 s in debt, paid back at SHARE of the clock: far beyond the second
    # request's MAX_START_WAIT, so its caller hears it now, not after a timeout.
    with pytest.raises(AdapterBusy) as info:
        late.result(0)
    assert info.value.retry_after == pytest.approx(round(0.08 / SHARE, 1))
    assert f"retry in {info.value.retry_after:g} s" in str(info.value)
    assert queue.busy_refusals == 1
    assert len(queue) == 0


def test_a_priority_request_waits_its_whole_timeout_for_its_turn() -> None:
    clock = FakeClock()
    queue = make(clock)
    queue.submit(taking(clock, 0.1))
    run(queue, clock, clock.monotonic())
    dtc = queue.submit(lambda conn: "codes", 15.0, kind="dtc read", priority=True)
    again_at = run(queue, clock, clock.monotonic())
    assert not dtc.done() and again_at > clock.monotonic()  # looked at again, not refused
    clock.advance(again_at - clock.monotonic())
    queue.row()  # rows went on meanwhile
    run(queue, clock, clock.monotonic())
    assert dtc.result(0) == "codes"


def test_a_request_held_up_by_a_stuck_one_for_its_whole_timeout_times_out() -> None:
    clock = FakeClock()
    timers = FakeTimers(clock)
    queue = make(clock, timers)
    waiting: list[concurrent.futures.Future[Any]] = []

    def stuck(conn: Any) -> str:
        waiting.append(queue.submit(lambda conn: "never", 5.0))
        clock.advance(6.0)  # a slow car; the other request's timer fires meanwhile
        timers.fire_due()
        return "late"

    first = queue.submit(stuck, 30.0)
    run(queue, clock, clock.monotonic() + 10.0)
    assert first.result(0) == "late"
    with pytest.raises(TimeoutError, match=r"^obd_timeout: .* within 5 s"):
        waiting[0].result(0)
    assert queue.busy_refusals == 0


def test_a_request_that_waited_for_its_share_until_its_timeout_is_busy() -> None:
    clock = FakeClock()
    timers = FakeTimers(clock)
    queue = make(clock, timers)
    queue.submit(taking(clock, 0.1))
    run(queue, clock, clock.monotonic())
    dtc = queue.submit(lambda conn: "never", 2.0, kind="dtc read", priority=True)
    run(queue, clock, clock.monotonic())
    clock.advance(2.0)
    timers.fire_due()
    with pytest.raises(AdapterBusy, match=r"^busy: the OBD adapter is logging"):
        dtc.result(0)
    assert queue.busy_refusals == 1


def test_a_request_the_link_starts_as_its_timer_fires_is_not_counted_busy() -> None:
    """The timer of a request and the link thread race for it: when the link claims it
    first (it runs and is answered), the timer must not count a busy refusal."""
    queue = make(FakeClock())
    future: concurrent.futures.Future[Any] = concurrent.futures.Future()
    job = Job(lambda conn: None, future)

    def claimed_by_the_link_thread() -> bool:
        job.claimed = True  # the link thread got there between the timer's look and claim
        return False

    job.claim = claimed_by_the_link_thread  # type: ignore[method-assign]
    queue.expire(job, 5.0)
    assert queue.busy_refusals == 0
    assert not future.done()


def test_a_lost_connection_fails_the_waiting_requests_and_refuses_new_ones() -> None:
    clock = FakeClock()
    queue = make(clock)
    waiting = [queue.submit(lambda conn: "never") for _ in range(2)]
    queue.set_state("disconnected", "not_connected: the OBD adapter was disconnected")
    for future in waiting:
        with pytest.raises(DeviceError, match=r"^not_connected: the OBD adapter was disconnected"):
            future.result(0)
    assert queue.submit(lambda conn: "never").done()


def test_nothing_runs_on_a_lost_adapter_and_cancelled_requests_are_skipped() -> None:
    clock = FakeClock()
    queue = make(clock)
    ran: list[str] = []
    cancelled = queue.submit(lambda conn: ran.append("cancelled"))
    kept = queue.submit(lambda conn: ran.append("kept"))
    assert queue.run(CONN, clock.monotonic() + 1.0, 0.05, lambda: True) == math.inf
    assert ran == []
    assert cancelled.cancel()
    run(queue, clock, clock.monotonic() + 1.0)
    assert ran == ["kept"] and kept.done()
