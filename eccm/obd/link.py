"""The one owner of the python-OBD connection.

A thread connects to the ELM327 adapter (:mod:`eccm.obd.connection`), polls the car over
that connection (:class:`eccm.obd.poller.Poller`: learn what it supports, read the fast and
slow commands, publish one row per round to the hub) and runs the on-demand requests of
other parts between rounds (:class:`eccm.obd.ondemand.RequestQueue`). When the adapter
goes away (device gone, read errors, UNABLE TO CONNECT) it ends the trip and reconnects
with a capped backoff (:class:`eccm.obd.policy.Reconnection`), through the same
OBD_INTERFACE path (a udev symlink may point to another device by then). When the car goes
silent for TRIP_END_TIMEOUT the trip ends and the car is asked again ever less often, up
to OBD_RECONNECT_MAX_INTERVAL apart; a new trip starts when it answers
(:class:`eccm.obd.policy.LinkPolicy`). Every other part of ECCM (the control socket, the
diagnostics) reaches the car through ``submit``, so only one thread ever touches the
connection.

Error messages of futures start with the control socket's error code
(``not_connected: ...``, ``unknown_value: ...``, ``obd_timeout: ...``, ``busy: ...``).
"""

from __future__ import annotations

import concurrent.futures
import logging
import threading
from collections.abc import Callable
from typing import Any, TypeVar

import obd

from eccm.clock import Clock
from eccm.errors import DeviceError
from eccm.hub import Hub
from eccm.obd import requests
from eccm.obd.battery import BatteryWatch
from eccm.obd.connection import (
    adopt_library_log,
    close,
    open_connection,
    read_voltage,
    warn_undecodable_protocol,
)
from eccm.obd.ondemand import RequestQueue
from eccm.obd.policy import FIRST_QUERY_TIME, Reconnection
from eccm.obd.poller import Poller
from eccm.obd.publisher import Publisher
from eccm.obd.settings import ObdSettings
from eccm.sample import Reading

log = logging.getLogger(__name__)

T = TypeVar("T")

# How often the adapter's battery voltage (ATRV, one command to the adapter, none to the
# car) is read at most: while the engine runs, and while it is off (then only when the link
# asks the car anyway, so a parked car is woken no more often for it).
VOLTAGE_RUNNING_EVERY = 60.0
VOLTAGE_OFF_EVERY = 5.0

CONNECTING = "connecting"
CONNECTED = "connected"
DISCONNECTED = "disconnected"


class ObdLink:
    """Owner of the OBD adapter: connect, poll, publish, reconnect, run queued requests.

    ``connect`` builds the python-OBD connection (default ``obd.OBD``); it is called with
    the keyword arguments of ``obd.OBD``.
    """

    def __init__(
        self,
        settings: ObdSettings,
        hub: Hub,
        clock: Clock,
        connect: Callable[..., Any] | None = None,
    ) -> None:
        self._settings = settings
        self._clock = clock
        self._connect: Callable[..., Any] = connect if connect is not None else obd.OBD
        warn_undecodable_protocol(settings)
        self._lock = threading.Lock()  # state
        self._state = DISCONNECTED
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._requests = RequestQueue(
            clock, self.interface, self._wake.set, first_guess=FIRST_QUERY_TIME
        )
        self._out = Publisher(hub, clock, settings.slow_interval)
        self._battery = BatteryWatch(settings.low_battery_voltage)
        self._next_voltage = float("-inf")
        self._poller = Poller(
            settings,
            hub,
            clock,
            self._requests,
            self._out,
            self._wake,
            self._stopping,
            battery=self._note_voltage,
        )

    # -- what others read ----------------------------------------------------------
    @property
    def state(self) -> str:
        """One of "connecting", "connected" and "disconnected"."""
        with self._lock:
            return self._state

    @property
    def supported(self) -> dict[str, Any]:
        """Name → python-OBD command the car supported at the last connection."""
        return self._poller.supported

    @property
    def protocol(self) -> str | None:
        """The OBD protocol's name while connected, e.g. "ISO 15765-4 (CAN 11/500)"."""
        return self._poller.protocol

    @property
    def rows(self) -> int:
        """Rows published since start."""
        return self._out.rows

    @property
    def busy_refusals(self) -> int:
        """On-demand requests refused as busy since start (queue full, or no share of the
        adapter's time in time)."""
        return self._requests.busy_refusals

    @property
    def fast_rate(self) -> float:
        """Rows per second over the last seconds."""
        return self._out.fast_rate

    @property
    def slow_rate(self) -> float:
        """Complete rounds of the slow commands per second over the last seconds."""
        return self._out.slow_rate

    @property
    def single_pid_groups(self) -> list[frozenset[str]]:
        """Groups of names the car refused in one request, read one by one since."""
        return self._poller.single_pid_groups

    @property
    def elm_voltage(self) -> float | None:
        """The car battery's voltage at the adapter's last ATRV (None: not read yet)."""
        return self._battery.volts

    @property
    def running(self) -> bool:
        """The link thread is alive (it may outlive stop() while python-OBD connects)."""
        return self._thread is not None and self._thread.is_alive()

    @property
    def interface(self) -> str:
        return self._settings.interface_shown

    # -- life cycle ----------------------------------------------------------------
    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError("ObdLink.start() may be called once")
        adopt_library_log()
        self._thread = threading.Thread(target=self._main, name="eccm-obd", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 3.0) -> None:
        """Stop polling, end the trip and close the adapter; returns within ``timeout``.

        python-OBD cannot be interrupted while it connects (it sleeps and waits on the
        serial port): then the thread closes the connection by itself once it returns.
        """
        self._stopping.set()
        self._wake.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)
            if thread.is_alive():
                log.info(
                    "the OBD adapter has not answered yet (connecting or a slow answer); "
                    "the link closes it when it does"
                )
        self._set_state(DISCONNECTED, "not_connected: the OBD link is stopped")

    # -- requests ------------------------------------------------------------------
    def submit(
        self,
        fn: Callable[[Any], T],
        timeout: float = 5.0,
        *,
        kind: str = "request",
        priority: bool = False,
    ) -> concurrent.futures.Future[T]:
        """Run ``fn(connection)`` in the link thread between polling rounds.

        Rows come first: ``fn`` gets a bounded share of the adapter's time (see
        :mod:`eccm.obd.share`). The future fails at once with DeviceError("not_connected
        ...") when the adapter is not connected, with DeviceError("not_connected ...")
        when the connection is lost before ``fn`` ran, with :class:`AdapterBusy` ("busy:
        ...", and when to retry) when the queue is full or ``fn`` would not get its turn
        within MAX_START_WAIT (``timeout`` if shorter; a ``priority`` request waits its
        whole ``timeout``), and with TimeoutError when the link could not start ``fn``
        within ``timeout`` seconds (a request before it still running). Once started,
        ``fn`` runs to its end (a python-OBD query is bounded by the adapter's own
        timeout). ``kind`` names requests of the same duration ("read VIN"): the link
        learns how long each kind takes. A ``priority`` request (a DTC read or clear,
        rare and one at a time) goes before the queued reads.
        """
        return self._requests.submit(fn, timeout, kind=kind, priority=priority)

    def read(self, name: str, timeout: float = 5.0) -> concurrent.futures.Future[Reading]:
        """Read any command the car supports now (a value need not be logged)."""
        key = name.strip().upper()
        poller = self._poller

        def job(conn: Any) -> Reading:
            return poller.query(conn, requests.readable_command(poller.supported, key))

        if self.state == CONNECTED:
            # A name the car cannot answer costs no share of the adapter's time.
            try:
                requests.readable_command(poller.supported, key)
            except DeviceError as exc:
                refused: concurrent.futures.Future[Reading] = concurrent.futures.Future()
                refused.set_exception(exc)
                return refused
        return self.submit(job, timeout, kind=f"read {key}")

    def read_dtcs(
        self, timeout: float = 5.0, *, detail: bool = False
    ) -> concurrent.futures.Future[dict[str, Any]]:
        """{"mil": bool | None, "stored": [{code, description}], "pending": [...]}, with
        ``detail`` readiness and freeze frame too (see :func:`eccm.obd.requests.read_dtcs`)."""
        poller = self._poller
        return self.submit(
            lambda conn: requests.read_dtcs(conn, poller.supported, detail=detail),
            timeout,
            kind="dtc detail" if detail else "dtc read",
            priority=True,
        )

    def clear_dtcs(self, timeout: float = 5.0) -> concurrent.futures.Future[str]:
        """Clear the trouble codes (mode 04); the ECU's answer as hex bytes (see
        :func:`eccm.obd.requests.clear_dtcs`)."""
        return self.submit(requests.clear_dtcs, timeout, kind="dtc clear", priority=True)

    # -- the thread ----------------------------------------------------------------
    def _main(self) -> None:
        try:
            self._loop()
        except Exception:  # a bug, not a device problem: say so before the link dies
            log.exception("the OBD link stopped on an unexpected error")
        finally:
            self._set_state(DISCONNECTED, "not_connected: the OBD link is stopped")

    def _loop(self) -> None:
        retry = Reconnection(self._settings.reconnect_max_interval)
        while not self._stopping.is_set():
            delay = retry.delay()
            if delay > 0 and self._stopping.wait(delay):
                break
            self._set_state(CONNECTING)
            conn, problem = open_connection(
                self._settings,
                self._connect,
                adapter_only=lambda c: self._note_voltage(c, engine_running=False),
            )
            if self._stopping.is_set():
                close(conn)
                break
            if conn is None:
                self._set_state(DISCONNECTED)
                if retry.failed(self._clock.monotonic()):
                    log.warning(
                        "cannot connect to the OBD adapter (OBD_INTERFACE=%s): %s. "
                        "Retrying in the background, at most %g s apart "
                        "(OBD_RECONNECT_MAX_INTERVAL); logged once until it connects",
                        self.interface,
                        problem,
                        retry.cap,
                    )
                else:
                    log.debug("OBD adapter still unavailable: %s", problem)
                continue
            ended = retry.connected()
            if ended is not None:
                log.info(
                    "OBD adapter connected again after %.0f s (%d failed attempts)",
                    self._clock.monotonic() - ended.since,
                    ended.attempts,
                )
            try:
                lost = self._poller.run(conn, lambda: self._set_state(CONNECTED))
            except Exception:  # a bug in a round must not end logging for good
                log.exception("the OBD link failed; reconnecting")
                lost = "unexpected error"
            finally:
                self._teardown(conn)
            if lost is not None:
                log.warning(
                    "lost the OBD adapter (OBD_INTERFACE=%s): %s; trip ended, reconnecting",
                    self.interface,
                    lost,
                )
                retry.lost(self._clock.monotonic())

    def _note_voltage(self, conn: Any, engine_running: bool) -> None:
        """Read ATRV now and then (see VOLTAGE_*_EVERY), publish it, warn of a low battery."""
        now = self._clock.monotonic()
        if now < self._next_voltage:
            return
        self._next_voltage = now + (VOLTAGE_RUNNING_EVERY if engine_running else VOLTAGE_OFF_EVERY)
        volts = read_voltage(conn)
        if volts is not None:
            self._out.voltage(volts)
        warning = self._battery.reading(volts, now, engine_running)
        if warning is not None:
            log.warning(warning)

    def _teardown(self, conn: Any) -> None:
        with self._lock:
            self._state = DISCONNECTED
        self._poller.forget()
        self._requests.set_state(DISCONNECTED, "not_connected: the OBD adapter was disconnected")
        self._out.disconnected()
        close(conn)

    def _set_state(self, state: str, fail_with: str | None = None) -> None:
        """The link's state, as STATUS and on-demand requests see it; ``fail_with``: fail
        the waiting requests with it."""
        with self._lock:
            self._state = state
        self._requests.set_state(state, fail_with)
        self._out.state(state)
