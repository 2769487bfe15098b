"""On-demand reads against the ELM327 emulator: clients that loop reads of a value that is
not logged (so every read goes to the car) must not stop logging (issue 10, item 1).

Row rates are compared within one test, baseline and loaded windows taken in turn, so a
machine that is slow for everyone slows both alike. Clients that are refused wait a
little before asking again: the tests measure the adapter's share, not the CPU that
in-process threads spinning on refusals would take from the link thread.
"""

from __future__ import annotations

import concurrent.futures
import json
import threading
import time
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
from eccm.obd.share import AdapterBusy
from eccm.sample import Layout, Reading
from tests.emulator import emulated_car
from tests.obd_helpers import WAIT, Collector, config, make_hub
from tests.waiting import wait_until

WINDOW = 2.0  # seconds per measuring window
ROUNDS = 3  # baseline and loaded windows, taken in turn


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


def rows_in_window(link: ObdLink, seconds: float) -> int:
    start = link.rows
    time.sleep(seconds)  # a measuring window, not a synchronisation
    return link.rows - start


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


def measure(link: ObdLink, clients: Clients) -> tuple[int, int]:
    """(rows without clients, rows with the clients looping) over ROUNDS."""
    quiet = loaded = 0
    for _ in range(ROUNDS):
        quiet += rows_in_window(link, WINDOW)
        with clients:
            loaded += rows_in_window(link, WINDOW)
        clients._stop.clear()
        clients._threads.clear()
    return quiet, loaded


@pytest.mark.parametrize("running", [("0.1", 0.005)], indirect=True)
def test_two_clients_reading_an_unlogged_value_keep_the_row_rate(running: Running) -> None:
    """SAMPLE_INTERVAL leaves the adapter idle between rows: reads use that time."""
    clients = Clients(running.link)
    quiet, loaded = measure(running.link, clients)
    assert quiet > 0
    assert loaded >= 0.9 * quiet, (quiet, loaded, clients.served, clients.busy)
    # The clients are served, not shut out: the idle time between rows is theirs.
    assert clients.served >= 10
    assert not clients.errors, clients.errors[:3]


@pytest.mark.parametrize("running", [("0", 0.005)], indirect=True)
def test_clients_get_a_bounded_share_when_rows_run_back_to_back(running: Running) -> None:
    """SAMPLE_INTERVAL=0 leaves no idle time: reads get a small share, the rest are busy.

    Four clients that wait at most 0.1 s for their turn: a share of 5 % cannot serve them
    all in time.
    """
    clients = Clients(running.link, count=4, timeout=0.1)
    quiet, loaded = measure(running.link, clients)
    assert quiet > 0
    assert loaded >= 0.9 * quiet, (quiet, loaded, clients.served, clients.busy)
    assert clients.served >= 1  # a share, however small, is still served
    assert clients.busy >= 1
    assert all(0 < hint <= 5.0 for hint in clients.hints), clients.hints[:5]
    assert running.link.busy_refusals >= clients.busy
    assert not clients.errors, clients.errors[:3]


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
