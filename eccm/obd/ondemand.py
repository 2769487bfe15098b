"""The queue of on-demand requests: what other parts of ECCM ask the car between two rows.

The control socket, the trouble-code poller and whatever front end comes next reach the
car only through :meth:`RequestQueue.submit`: a request is a function of the python-OBD
connection, run by the link thread (the one owner of the connection) when
:class:`eccm.obd.share.AdapterShare` gives it a turn. Requests that cannot get their turn
in time are refused as busy at once, with a hint of when asking again can succeed.

The link thread calls :meth:`RequestQueue.run`; any thread calls ``submit``. Each request
also has a timer (injected: tests fire it by hand) that settles it when it waited its whole
timeout; the times compared are the injected clock's.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import math
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

from eccm.clock import Clock
from eccm.errors import DeviceError
from eccm.obd.share import MAX_START_WAIT, QUEUE_LIMIT, AdapterBusy, AdapterShare

T = TypeVar("T")

CONNECTED = "connected"


class Timer(Protocol):
    def start(self) -> None: ...

    def cancel(self) -> None: ...


TimerFactory = Callable[[float, Callable[[], None]], Timer]


def thread_timer(seconds: float, action: Callable[[], None]) -> Timer:
    """The production timer: a daemon ``threading.Timer``."""
    timer = threading.Timer(seconds, action)
    timer.daemon = True
    return timer


@dataclass(eq=False)
class Job:
    fn: Callable[[Any], Any]
    future: concurrent.futures.Future[Any]
    kind: str = "request"
    start_by: float = math.inf  # monotonic time after which it is refused as busy
    timer: Timer | None = None
    claimed: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock)

    def claim(self) -> bool:
        """Only one of the link thread, the timeout and a failure gets to settle a job."""
        with self.lock:
            if self.claimed:
                return False
            self.claimed = True
        if self.timer is not None:
            self.timer.cancel()
        return True

    def fail(self, exc: BaseException) -> bool:
        """Settle it with ``exc``; False when another settled it first."""
        if not self.claim():
            return False
        if not self.future.done():
            # Its caller may have cancelled it meanwhile.
            with contextlib.suppress(concurrent.futures.InvalidStateError):
                self.future.set_exception(exc)
        return True


def busy_error(hint: float) -> AdapterBusy:
    return AdapterBusy(
        "busy: the OBD adapter is logging and on-demand requests get a bounded share "
        f"of its time (retry in {hint:g} s)",
        hint,
    )


class RequestQueue:
    """Requests waiting for the link thread, accepted only while the adapter is connected.

    ``interface`` names OBD_INTERFACE in refusals; ``wake`` tells the link thread a request
    came; ``first_guess`` is how long a kind of request never run yet is expected to take.
    """

    def __init__(
        self,
        clock: Clock,
        interface: str,
        wake: Callable[[], None],
        *,
        first_guess: float,
        timer: TimerFactory = thread_timer,
    ) -> None:
        self._clock = clock
        self._interface = interface
        self._wake = wake
        self._timer = timer
        self._lock = threading.Lock()  # jobs, state, counters
        self._jobs: deque[Job] = deque()
        self._state = "disconnected"
        self._busy = 0  # requests refused as busy
        self._running_since: float | None = None  # when the running request started
        self._hint = MAX_START_WAIT  # the last retry hint the share gave
        self.share = AdapterShare(clock.monotonic(), first_guess=first_guess)

    @property
    def busy_refusals(self) -> int:
        """Requests refused as busy since start (queue full, or no share of the adapter's
        time in time)."""
        with self._lock:
            return self._busy

    def __len__(self) -> int:
        with self._lock:
            return len(self._jobs)

    def set_state(self, state: str, fail_with: str | None = None) -> None:
        """The link's state: requests are taken only while it is "connected". ``fail_with``:
        fail the waiting requests with DeviceError(fail_with), in the same step (a request
        cannot slip in between)."""
        with self._lock:
            self._state = state
            jobs = list(self._jobs) if fail_with is not None else []
            if fail_with is not None:
                self._jobs.clear()
        for job in jobs:
            job.fail(DeviceError(fail_with or ""))

    def submit(
        self,
        fn: Callable[[Any], T],
        timeout: float = 5.0,
        *,
        kind: str = "request",
        priority: bool = False,
    ) -> concurrent.futures.Future[T]:
        """Queue ``fn(connection)``; see :meth:`eccm.obd.link.ObdLink.submit`."""
        future: concurrent.futures.Future[T] = concurrent.futures.Future()
        wait = timeout if priority else min(timeout, MAX_START_WAIT)
        job = Job(fn, future, kind, self._clock.monotonic() + wait)
        job.timer = self._timer(timeout, lambda: self.expire(job, timeout))
        with self._lock:
            if self._state != CONNECTED:
                future.set_exception(
                    DeviceError(
                        f"not_connected: the OBD adapter is {self._state} "
                        f"(OBD_INTERFACE={self._interface})"
                    )
                )
                return future
            if len(self._jobs) >= QUEUE_LIMIT:
                self._busy += 1
                future.set_exception(
                    AdapterBusy(
                        f"busy: {len(self._jobs)} requests are already waiting for the OBD "
                        f"adapter (retry in {MAX_START_WAIT:g} s)",
                        MAX_START_WAIT,
                    )
                )
                return future
            if priority:
                self._jobs.appendleft(job)
            else:
                self._jobs.append(job)
        job.timer.start()
        self._wake()
        return future

    def run(self, conn: Any, next_row: float, query_time: float, lost: Callable[[], bool]) -> float:
        """Run the queued requests that the share allows now (in the link thread); refuse
        those that would not get their turn in time. ``next_row``: when the next row is
        due; ``query_time``: how long one request of the polling loop takes (the guess for
        a kind never run yet); ``lost``: the adapter is gone (stop running requests).
        Returns when to look at the queue again (inf: empty)."""
        if not self._jobs:
            # Nothing queued (nearly every row): no lock, no look at the adapter. A submit
            # from now on wakes the link, which looks again.
            return math.inf
        mono = self._clock.monotonic
        while not lost():
            now = mono()
            with self._lock:
                while self._jobs and self._jobs[0].claimed:  # timed out or cancelled
                    self._jobs.popleft()
                if not self._jobs:
                    return math.inf
                job = self._jobs[0]
            self.share.first_guess = query_time
            turn = self.share.turn(now, next_row, job.kind)
            if not turn.run:
                self._refuse_late(now + turn.wait, turn.wait)
                with self._lock:
                    waiting = bool(self._jobs)
                return now + turn.wait if waiting else math.inf
            with self._lock:
                if self._jobs and self._jobs[0] is job:
                    self._jobs.popleft()
            if not job.claim() or not job.future.set_running_or_notify_cancel():
                continue
            started = mono()
            with self._lock:
                self._running_since = started
            try:
                result = job.fn(conn)
            except Exception as exc:
                job.future.set_exception(exc)
            else:
                job.future.set_result(result)
            finally:
                with self._lock:
                    self._running_since = None
            self.share.ran(job.kind, started, mono(), next_row)
        return math.inf

    def row(self) -> None:
        """A round of reads begins: it comes between two charged requests."""
        self.share.row()

    def expire(self, job: Job, timeout: float) -> None:
        """The timer of a request that did not start within its timeout."""
        with self._lock:
            since = self._running_since
            hint = self._hint
        # Held up all along by one request that still runs: the adapter is stuck on it (a
        # slow car), which is a timeout. Otherwise it waited for its turn: busy.
        if since is not None and self._clock.monotonic() - since >= timeout:
            job.fail(
                TimeoutError(
                    f"obd_timeout: the OBD link could not run the request within {timeout:g} s"
                )
            )
            return
        # It waited for its share of the adapter's time (rows first): busy, not a timeout.
        # Counted only if this settled it: the link thread may have started it meanwhile.
        if job.fail(busy_error(hint)):
            with self._lock:
                self._busy += 1

    def _refuse_late(self, turn_at: float, wait: float) -> None:
        """Refuse as busy every queued request that may start only after its start_by:
        its caller hears it at once instead of waiting for a timeout."""
        with self._lock:
            late = [job for job in self._jobs if job.start_by < turn_at]
            for job in late:
                self._jobs.remove(job)
        hint = self.share.retry_after(wait)
        with self._lock:
            self._hint = hint
        for job in late:
            if job.fail(busy_error(hint)):  # not if its timer settled it first
                with self._lock:
                    self._busy += 1
