"""On-demand reads: clients that loop reads of a value that is not logged (so every read
goes to the car) must not stop logging (issue 10, item 1).

How many rows logging keeps is a matter of time: it is measured on a fake clock, with the
link thread's loop driven by hand over the real queue, share and policy (``simulate``), so
a loaded machine cannot change the answer. Against the ELM327 emulator the tests check
behaviour only: clients are served, refused ones get a hint, rows go on.
"""

from __future__ import annotations

import concurrent.futures
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest

from eccm.backend import DaemonBackend
from eccm.clock import FakeClock, SystemClock
from eccm.control.client import hmac_proof
from eccm.control.protocol import Session
from eccm.errors import DeviceError
from eccm.hub import Hub
from eccm.obd.link import ObdLink
from eccm.obd.ondemand import RequestQueue
from eccm.obd.policy import FIRST_QUERY_TIME, LinkPolicy
from eccm.obd.share import BURST, MAX_DEBT, SHARE, AdapterBusy
from eccm.sample import Layout, Reading
from tests.emulator import emulated_car
from tests.obd_helpers import WAIT, Collector, FakeTimers, config, make_hub
from tests.waiting import wait_until


@dataclass
class Clients:
    """Threads looping on-demand reads of an unlogged value, as two polling clients do."""

    link: ObdLink
    name: str = "VIN"
    count: int = 2
    timeout: float = 5.0
    served: int = 0
    busy: int = 0
    hints: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.link.read(self.name, timeout=self.timeout).result(WAIT)
            except AdapterBusy as exc:
                with self._lock:
                    self.busy += 1
                    self.hints.append(exc.retry_after)
                self._stop.wait(exc.retry_after)
                continue
            except (DeviceError, TimeoutError) as exc:
                with self._lock:
                    self.errors.append(str(exc))
                self._stop.wait(0.02)
                continue
            with self._lock:
                self.served += 1

    def __enter__(self) -> Clients:
        for i in range(self.count):
            thread = threading.Thread(target=self._loop, name=f"client-{i}", daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(WAIT)


@dataclass
class Running:
    link: ObdLink
    hub: Hub
    rows: Collector


@pytest.fixture
def running(request: pytest.FixtureRequest) -> Iterator[Running]:
    interval, delay = request.param
    with emulated_car(delay=delay) as emu:
        cfg = config(
            OBD_INTERFACE=emu.get_pty(),
            OBD_PROTOCOL="6",
            OBD_FAST_COMMANDS="RPM,SPEED",
            OBD_SLOW_COMMANDS="COOLANT_TEMP",
            OBD_SLOW_INTERVAL="1",
            SAMPLE_INTERVAL=interval,
        )
        hub, rows = make_hub()
        link = ObdLink(cfg, hub, SystemClock())
        link.start()
        try:
            wait_until(lambda: link.state == "connected", WAIT, "the link to connect")
            rows.wait_rows(3)
            yield Running(link, hub, rows)
        finally:
            link.stop()


@pytest.mark.parametrize("running", [("0.1", 0.005)], indirect=True)
def test_two_clients_reading_an_unlogged_value_are_served_while_rows_go_on(
    running: Running,
) -> None:
    """SAMPLE_INTERVAL leaves the adapter idle between rows: reads use that time."""
    with Clients(running.link) as clients:
        wait_until(lambda: clients.served >= 10, WAIT, "ten reads served")
        running.rows.wait_rows(10)
    assert not clients.errors, clients.errors[:3]


@pytest.mark.parametrize("running", [("0", 0.005)], indirect=True)
def test_clients_of_back_to_back_rows_get_a_share_and_busy_replies_with_a_hint(
    running: Running,
) -> None:
    """SAMPLE_INTERVAL=0 leaves no idle time: reads get a small share, the rest are busy.

    Four clients that wait at most 0.1 s for their turn: a share of a few percent cannot
    serve them all in time.
    """
    with Clients(running.link, count=4, timeout=0.1) as clients:
        wait_until(lambda: clients.served >= 1 and clients.busy >= 1, WAIT, "served and busy")
        running.rows.wait_rows(10)
    assert all(0 < hint <= 5.0 for hint in clients.hints), clients.hints[:5]
    assert running.link.busy_refusals >= clients.busy
    assert not clients.errors, clients.errors[:3]


@dataclass
class Simulated:
    rows: int = 0
    served: int = 0
    busy: int = 0
    hints: list[float] = field(default_factory=list)


def simulate(
    interval: float,
    clients: int,
    timeout: float,
    *,
    seconds: float = 60.0,
    read_time: float = 0.03,
    round_time: float = 0.02,
) -> Simulated:
    """The link thread's loop (``Poller._poll``) on a fake clock, over the real queue, share
    and policy: rounds of reads take ``round_time``, an on-demand read ``read_time``.
    ``clients`` each ask again once answered, or after the hint of a busy reply."""
    clock = FakeClock()
    timers = FakeTimers(clock)
    queue = RequestQueue(
        clock, "/dev/obd", lambda: None, first_guess=FIRST_QUERY_TIME, timer=timers
    )
    queue.set_state("connected")
    policy = LinkPolicy(interval, 30.0, 10.0, 1.0, clock.monotonic())
    futures: list[concurrent.futures.Future[str] | None] = [None] * clients
    ask_at = [clock.monotonic()] * clients
    out = Simulated()

    def read(conn: object) -> str:
        clock.advance(read_time)
        return "WP0ZZZ99ZTS390000"

    end = clock.monotonic() + seconds
    while clock.monotonic() < end:
        now = clock.monotonic()
        for i, future in enumerate(futures):
            if future is not None and future.done():
                exc = future.exception()
                if isinstance(exc, AdapterBusy):
                    out.busy += 1
                    out.hints.append(exc.retry_after)
                    ask_at[i] = now + exc.retry_after
                else:
                    assert exc is None, exc
                    out.served += 1
                futures[i] = future = None
            if future is None and now >= ask_at[i]:
                futures[i] = queue.submit(read, timeout, kind="read VIN")
        jobs_at = queue.run(None, policy.next_row, policy.query_time, lambda: False)
        timers.fire_due()
        now = clock.monotonic()
        policy.facts_due(now)
        wait = policy.wait(now, jobs_at)
        if wait is not None:
            # A client asking again wakes the link thread.
            asking = [
                t - now for t, f in zip(ask_at, futures, strict=True) if f is None and t > now
            ]
            clock.advance(min([wait, *asking]))
            continue
        queue.row()
        clock.advance(round_time)
        policy.request_took(round_time)
        policy.round_end(now, clock.monotonic(), 1.0, asked=True, answered=True, slow_due=None)
        out.rows += 1
    return out


def test_on_the_fake_clock_two_clients_reading_in_idle_time_cost_no_rows() -> None:
    quiet = simulate(0.1, clients=0, timeout=5.0)
    loaded = simulate(0.1, clients=2, timeout=5.0)
    assert quiet.rows == pytest.approx(600, abs=2)  # one row every SAMPLE_INTERVAL
    assert loaded.rows >= 0.9 * quiet.rows, (quiet, loaded)
    # Served in the idle time between rows: about one read per row each.
    assert loaded.served >= 1000 and loaded.busy == 0


def test_on_the_fake_clock_back_to_back_rows_keep_nine_tenths_and_busy_says_when() -> None:
    quiet = simulate(0.0, clients=0, timeout=0.1)
    loaded = simulate(0.0, clients=4, timeout=0.1)
    assert quiet.rows == pytest.approx(3000, abs=2)  # one row per round of 0.02 s
    assert loaded.rows >= 0.9 * quiet.rows, (quiet.rows, loaded.rows)
    assert loaded.served >= 1  # a share, however small, is still served
    # ...and bounded: charged time refills at SHARE of the clock (plus one MAX_DEBT).
    assert loaded.served * 0.03 <= SHARE * 60.0 + MAX_DEBT + BURST
    assert loaded.busy >= 1
    assert all(0 < hint <= 5.0 for hint in loaded.hints), loaded.hints[:5]


class _BusyLink:
    """A link that refuses every on-demand read as busy, as ObdLink does."""

    state = "connected"
    supported: dict[str, object] = {"VIN": None}  # noqa: RUF012 - a read-only stand-in
    busy_refusals = 0

    def read(self, name: str, timeout: float = 5.0) -> concurrent.futures.Future[Reading]:
        self.busy_refusals += 1
        future: concurrent.futures.Future[Reading] = concurrent.futures.Future()
        future.set_exception(AdapterBusy("busy: the OBD adapter is logging (retry in 0.6 s)", 0.6))
        return future

    def read_dtcs(self, timeout: float = 5.0) -> concurrent.futures.Future[dict[str, object]]:
        raise NotImplementedError

    def clear_dtcs(self, timeout: float = 5.0) -> concurrent.futures.Future[str]:
        raise NotImplementedError


def test_a_busy_get_says_when_to_retry_and_status_counts_it() -> None:
    clock = FakeClock()
    hub = Hub(clock, 2.0, Layout(("RPM",), (), gps=False))
    backend = DaemonBackend(hub=hub, link=_BusyLink())
    session = Session(backend, "a secret", clock, peer="127.0.0.1:5", address="127.0.0.1")
    session.data_to_send()
    proof = hmac_proof("a secret", session.nonce)
    session.receive_data(f"AUTH HMAC {proof}\nGET VIN\nSTATUS\n".encode())
    while session.step():
        pass
    clock.advance(0.6)  # the next line is taken after the hint
    while session.step():
        pass
    replies = [json.loads(line) for line in session.data_to_send().splitlines()]
    assert replies[1] == {
        "class": "ERROR",
        "code": "busy",
        "message": "the OBD adapter is logging (retry in 0.6 s)",
        "retry_after": 0.6,
    }
    assert replies[2]["class"] == "STATUS" and replies[2]["ondemand_busy"] == 1


def test_a_client_that_ignores_retry_after_is_paused_not_answered_at_full_speed() -> None:
    """A greedy client asking again at once after `busy` would cost the daemon a reply per
    request (thousands a second, CPU taken from logging): the session takes its next line
    only after the hint (at most BUSY_PAUSE_MAX), and TCP pushes back meanwhile."""
    clock = FakeClock()
    hub = Hub(clock, 2.0, Layout(("RPM",), (), gps=False))
    link = _BusyLink()
    backend = DaemonBackend(hub=hub, link=link)
    session = Session(backend, "a secret", clock, peer="127.0.0.1:5", address="127.0.0.1")
    session.data_to_send()
    proof = hmac_proof("a secret", session.nonce)
    session.receive_data(f"AUTH HMAC {proof}\n".encode() + b"GET VIN\n" * 50)
    while session.step():
        pass
    replies = [json.loads(line) for line in session.data_to_send().splitlines()]
    assert [r["class"] for r in replies] == ["AUTH", "ERROR"]
    assert link.busy_refusals == 1
    assert not session.wants_data  # not reading meanwhile: the client's sends back up
    deadline = session.next_deadline()
    assert deadline is not None and deadline <= clock.monotonic() + 0.6
    clock.advance(0.6)
    session.tick()
    assert session.step()  # the next GET, after the hint
    assert link.busy_refusals == 2
    assert not session.step()
