"""The one owner of the python-OBD connection.

A thread connects to the ELM327 adapter, learns what the car supports, polls the fast and
slow commands, and publishes one row per round to the hub. On CAN, up to six mode 01 PIDs
share one request (``adapter.PidReader``), so a row of six fast values costs one answer
time of the car instead of six. When the adapter goes away (device gone, read errors,
UNABLE TO CONNECT) it ends the trip and reconnects with a capped backoff, through the
same OBD_INTERFACE path (a udev symlink may point to another device by then). When the
car goes silent for TRIP_END_TIMEOUT the trip ends and the car is asked again ever less
often, up to OBD_RECONNECT_MAX_INTERVAL apart; a new trip starts when it answers. Every other part of ECCM (the control
socket, the diagnostics) reaches the car through ``submit``: the request runs in this thread
between polling rounds, so only one thread ever touches the connection.

Error messages of futures start with the control socket's error code
(``not_connected: ...``, ``unknown_value: ...``, ``obd_timeout: ...``).
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import logging
import math
import os
import stat
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import obd
import obd.elm327
from obd.utils import OBDStatus

from eccm.clock import Clock
from eccm.config import Config
from eccm.errors import ConfigError, DeviceError
from eccm.hub import Hub
from eccm.obd.adapter import (
    Fallbacks,
    PidReader,
    answers_mode01,
    bound_reads,
    probe_prompt,
    query_reading,
    save_time,
)
from eccm.obd.multipid import MAX_PIDS, allows_multi_pid
from eccm.obd.plan import (
    Group,
    PollPlan,
    RateMeter,
    make_groups,
    resolve,
)
from eccm.obd.policy import FIRST_QUERY_TIME, LinkPolicy, Reconnection
from eccm.obd.share import MAX_START_WAIT, QUEUE_LIMIT, AdapterBusy, AdapterShare
from eccm.obd.values import describe, is_readable, known_command, plain
from eccm.sample import Layout, Reading

log = logging.getLogger(__name__)

T = TypeVar("T")

CONNECTING = "connecting"
CONNECTED = "connected"
DISCONNECTED = "disconnected"

# python-OBD's `timeout` only bounds each try of its baud-rate detection (a pseudo-terminal
# skips it); one second leaves room for a slow Bluetooth adapter and costs at most 6 s.
_BAUD_PROBE_TIMEOUT = 1.0


class _LibraryLog(logging.Handler):
    """Takes python-OBD's log records in place of its own stderr handler.

    python-OBD prints a line for every failed query and every retry. The link reports an
    outage once, in its own words, quoting the library's last complaint; the library's
    lines go on at DEBUG level under this module's logger.
    """

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self._last: dict[int, str] = {}
        self._first_error: dict[int, str] = {}

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = record.getMessage()
        except Exception:
            return
        if record.levelno >= logging.WARNING:
            self._last[threading.get_ident()] = message
        if record.levelno >= logging.ERROR:
            self._first_error.setdefault(threading.get_ident(), message)
        log.debug("python-OBD: %s", message)

    def take(self, first_error: bool = False) -> str | None:
        """The last warning python-OBD gave in this thread (and forget them all).

        ``first_error``: its first error instead, when there was one: a failed connection
        ends with a generic "Cannot load commands", the cause came before.
        """
        me = threading.get_ident()
        last = self._last.pop(me, None)
        first = self._first_error.pop(me, None)
        return (first or last) if first_error else last


_library_log = _LibraryLog()
_library_lock = threading.Lock()


def _adopt_library_log() -> None:
    with _library_lock:
        lib = logging.getLogger("obd")
        own = getattr(obd, "console_handler", None)
        if own is not None:
            lib.removeHandler(own)
        if _library_log not in lib.handlers:
            lib.addHandler(_library_log)
        lib.propagate = False
        lib.setLevel(logging.DEBUG if log.isEnabledFor(logging.DEBUG) else logging.WARNING)


def _is_serial_device(path: str) -> bool:
    try:
        return stat.S_ISCHR(os.stat(path).st_mode)
    except OSError:
        return False


def _baudrate(text: str) -> int | None:
    value = text.strip()
    if not value or value.lower() == "auto":
        return None
    try:
        baud = int(value)
    except ValueError:
        baud = 0
    if baud <= 0:
        raise ConfigError(
            f"OBD_BAUDRATE={text!r} is not valid: expected a serial speed such as 38400 "
            "or 115200, or empty to detect it"
        )
    return baud


def _protocol_id(text: str) -> str | None:
    value = text.strip().upper()
    if not value or value in ("0", "AUTO"):
        return None
    known = getattr(obd.elm327.ELM327, "_SUPPORTED_PROTOCOLS", None) or {}
    if value in known:
        return value
    if value in ("B", "C"):
        # Valid ELM327 numbers (user-defined CAN), but python-OBD has no decoder for them.
        log.error(
            "OBD_PROTOCOL=%s is a user-defined ELM327 protocol that python-OBD cannot decode; "
            "detecting the protocol instead (set one of %s, or leave it empty)",
            value,
            ", ".join(sorted(known)),
        )
        return None
    raise ConfigError(
        f"OBD_PROTOCOL={text!r} is not valid: expected an ELM327 protocol number "
        f"({', '.join(sorted(known))}), or empty to detect it"
    )


@dataclass(eq=False)
class _Job:
    fn: Callable[[Any], Any]
    future: concurrent.futures.Future[Any]
    kind: str = "request"
    start_by: float = math.inf  # monotonic time after which it is refused as busy
    timer: threading.Timer | None = None
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


class ObdLink:
    """Owner of the OBD adapter: connect, poll, publish, reconnect, run queued requests.

    ``connect`` builds the python-OBD connection (default ``obd.OBD``); it is called with
    the keyword arguments of ``obd.OBD``.
    """

    def __init__(
        self,
        cfg: Config,
        hub: Hub,
        clock: Clock,
        connect: Callable[..., Any] | None = None,
    ) -> None:
        self._cfg = cfg
        self._hub = hub
        self._clock = clock
        self._connect: Callable[..., Any] = connect if connect is not None else obd.OBD
        self._baudrate = _baudrate(cfg.obd_baudrate)
        self._protocol_id = _protocol_id(cfg.obd_protocol)
        self._lock = threading.Lock()  # state, jobs, supported, protocol, rows
        self._jobs: deque[_Job] = deque()
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._state = DISCONNECTED
        self._supported: dict[str, Any] = {}
        self._protocol: str | None = None
        self._rows = 0
        self._busy = 0  # on-demand requests refused as busy
        self._running_since: float | None = None  # when the running request started
        self._hint = MAX_START_WAIT  # the last retry hint the share gave
        self._share = AdapterShare(clock.monotonic(), first_guess=FIRST_QUERY_TIME)
        self._fast_meter = RateMeter(5.0)
        self._slow_meter = RateMeter(max(5.0, 3 * cfg.obd_slow_interval))
        self._policy = LinkPolicy(
            cfg.sample_interval,
            cfg.trip_end_timeout,
            cfg.obd_reconnect_max_interval,
            cfg.obd_slow_interval,
            clock.monotonic(),
        )
        self._warned: set[str] = set()
        self._undecodable: set[str] = set()
        # Groups the car would not answer as one request: kept across reconnections.
        self._fallbacks = Fallbacks()
        self._single_groups: tuple[frozenset[str], ...] = ()

    # -- what others read ----------------------------------------------------------
    @property
    def state(self) -> str:
        """One of "connecting", "connected" and "disconnected"."""
        with self._lock:
            return self._state

    @property
    def supported(self) -> dict[str, Any]:
        """Name → python-OBD command the car supported at the last connection."""
        with self._lock:
            return dict(self._supported)

    @property
    def protocol(self) -> str | None:
        """The OBD protocol's name while connected, e.g. "ISO 15765-4 (CAN 11/500)"."""
        with self._lock:
            return self._protocol

    @property
    def rows(self) -> int:
        """Rows published since start."""
        with self._lock:
            return self._rows

    @property
    def busy_refusals(self) -> int:
        """On-demand requests refused as busy since start (queue full, or no share of the
        adapter's time in time)."""
        with self._lock:
            return self._busy

    @property
    def fast_rate(self) -> float:
        """Rows per second over the last seconds."""
        return self._fast_meter.rate(self._clock.monotonic())

    @property
    def slow_rate(self) -> float:
        """Complete rounds of the slow commands per second over the last seconds."""
        return self._slow_meter.rate(self._clock.monotonic())

    @property
    def single_pid_groups(self) -> list[frozenset[str]]:
        """Groups of names the car refused in one request, read one by one since."""
        with self._lock:
            return list(self._single_groups)

    @property
    def running(self) -> bool:
        """The link thread is alive (it may outlive stop() while python-OBD connects)."""
        return self._thread is not None and self._thread.is_alive()

    @property
    def interface(self) -> str:
        return self._cfg.obd_interface or "(auto-detect)"

    # -- life cycle ----------------------------------------------------------------
    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError("ObdLink.start() may be called once")
        _adopt_library_log()
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
        self._set_state(DISCONNECTED)
        self._fail_pending("not_connected: the OBD link is stopped")

    # -- the request queue ---------------------------------------------------------
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
        future: concurrent.futures.Future[T] = concurrent.futures.Future()
        wait = timeout if priority else min(timeout, MAX_START_WAIT)
        job = _Job(fn, future, kind, self._clock.monotonic() + wait)
        job.timer = threading.Timer(timeout, self._expire, args=(job, timeout))
        job.timer.daemon = True
        with self._lock:
            if self._state != CONNECTED:
                state = self._state
                future.set_exception(
                    DeviceError(
                        f"not_connected: the OBD adapter is {state} "
                        f"(OBD_INTERFACE={self.interface})"
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
        self._wake.set()
        return future

    def read(self, name: str, timeout: float = 5.0) -> concurrent.futures.Future[Reading]:
        """Read any command the car supports now (a value need not be logged)."""
        key = name.strip().upper()

        def check() -> Any:
            cmd = self._supported.get(key)
            if cmd is None:
                if known_command(key):
                    raise DeviceError(f"unknown_value: the car does not support {key}")
                raise DeviceError(f"unknown_value: {key} is not a python-OBD command name")
            if not is_readable(cmd):
                raise DeviceError(f"unknown_value: {key} is not a value that can be read")
            return cmd

        def job(conn: Any) -> Reading:
            return self._read(conn, check())

        with self._lock:
            connected = self._state == CONNECTED
        if connected:
            # A name the car cannot answer costs no share of the adapter's time.
            try:
                check()
            except DeviceError as exc:
                refused: concurrent.futures.Future[Reading] = concurrent.futures.Future()
                refused.set_exception(exc)
                return refused
        return self.submit(job, timeout, kind=f"read {key}")

    def read_dtcs(self, timeout: float = 5.0) -> concurrent.futures.Future[dict[str, Any]]:
        """{"mil": bool | None, "stored": [{code, description}], "pending": [...]}.

        ``mil`` comes from 01 01 (None when the car does not give it); stored codes from
        mode 03, pending ones from mode 07.
        """

        def job(conn: Any) -> dict[str, Any]:
            mil: bool | None = None
            if "STATUS" in self._supported:
                status = conn.query(obd.commands.STATUS).value
                if status is not None:
                    mil = bool(status.MIL)
            stored = self._dtcs(conn, obd.commands.GET_DTC, "stored trouble codes (mode 03)")
            pending = self._dtcs(
                conn, obd.commands.GET_CURRENT_DTC, "pending trouble codes (mode 07)"
            )
            return {"mil": mil, "stored": stored, "pending": pending}

        return self.submit(job, timeout, kind="dtc read", priority=True)

    def clear_dtcs(self, timeout: float = 5.0) -> concurrent.futures.Future[str]:
        """Clear the trouble codes (mode 04): resets readiness monitors too.

        The result is what the ECU answered, as hex bytes, one message per ECU joined by
        "; ": "44" is a positive answer, "7F 04 xx" a refusal (xx: the reason).
        """

        def job(conn: Any) -> str:
            response = conn.query(obd.commands.CLEAR_DTC, force=True)
            answers = [bytes(m.data).hex(" ").upper() for m in response.messages if m.data]
            if not answers:
                raise DeviceError("obd_timeout: the car did not answer the request to clear")
            text = "; ".join(answers)
            log.warning("diagnostic trouble codes cleared on request; the car answered %s", text)
            return text

        return self.submit(job, timeout, kind="dtc clear", priority=True)

    # -- the thread ----------------------------------------------------------------
    def _main(self) -> None:
        try:
            self._loop()
        except Exception:  # a bug, not a device problem: say so before the link dies
            log.exception("the OBD link stopped on an unexpected error")
        finally:
            self._set_state(DISCONNECTED)
            self._fail_pending("not_connected: the OBD link is stopped")

    def _loop(self) -> None:
        retry = Reconnection(self._cfg.obd_reconnect_max_interval)
        while not self._stopping.is_set():
            delay = retry.delay()
            if delay > 0 and self._stopping.wait(delay):
                break
            self._set_state(CONNECTING)
            conn, problem = self._open()
            if self._stopping.is_set():
                self._close(conn)
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
                lost = self._session(conn)
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

    def _open(self) -> tuple[Any | None, str]:
        """A connection that reaches the car, or None and what the user should check."""
        iface = self._cfg.obd_interface
        port: str | None = None
        if iface:
            if not os.path.exists(iface):
                return None, (
                    f"{iface} does not exist: check that the adapter is plugged in (USB) or "
                    "paired and bound to an rfcomm device (Bluetooth), and that "
                    "OBD_INTERFACE names it"
                )
            if not os.access(iface, os.R_OK | os.W_OK):
                return None, (
                    f"no permission to open {iface}: add the user running ECCM to the "
                    "group that owns it (usually dialout)"
                )
            # Resolved at every attempt: a udev or test symlink may point elsewhere now, and
            # python-OBD recognises a pseudo-terminal only by its real name.
            port = os.path.realpath(iface)
            # python-OBD waits minutes on a device that never answers, except when it
            # detects the speed itself on a real serial port (one second per speed).
            if _is_serial_device(port) and (self._baudrate or port.startswith("/dev/pts/")):
                silent = probe_prompt(port, self._baudrate)
                if silent is not None:
                    return None, f"{iface} is not answering like an ELM327 adapter: {silent}"
        _library_log.take()
        try:
            conn = self._connect(
                portstr=port,
                baudrate=self._baudrate,
                protocol=self._protocol_id,
                fast=False,
                timeout=_BAUD_PROBE_TIMEOUT,
                check_voltage=False,
            )
        except Exception as exc:  # python-OBD reports by logging; a raise is still the device
            return None, f"python-OBD failed to open it ({exc})"
        status = conn.status()
        if status == OBDStatus.CAR_CONNECTED:
            if answers_mode01({c.name: c for c in conn.supported_commands}):
                return conn, ""
            # python-OBD calls a fixed protocol "connected" whenever the adapter does not
            # say UNABLE TO CONNECT, even when no ECU answered 0100 (ignition off).
            self._close(conn)
            return None, (
                "the adapter answers but the car lists no value (no answer to 0100): "
                f"is the ignition on? Check OBD_PROTOCOL (now {self._protocol_id or 'auto'})"
            )
        complaint = _library_log.take(first_error=True) or "no answer"
        self._close(conn)
        if status == OBDStatus.NOT_CONNECTED:
            if not iface:
                return None, (
                    "no ELM327 adapter found (auto-detect tries /dev/rfcomm* and "
                    "/dev/ttyUSB*): set OBD_INTERFACE to the adapter's device, e.g. /dev/obd"
                )
            return None, (
                f"{iface} did not answer like an ELM327 adapter ({complaint}): check that "
                "it is the OBD adapter, and OBD_BAUDRATE (empty = detect)"
            )
        return None, (
            f"the adapter answers but the car does not ({complaint}): is the ignition on? "
            f"Check OBD_PROTOCOL (now {self._protocol_id or 'auto'})"
        )

    def _session(self, conn: Any) -> str | None:
        """Poll until stopped (None) or until the adapter is lost (the reason)."""
        if not bound_reads(conn):
            log.debug("python-OBD's serial read timeout could not be shortened")
        supported = {c.name: c for c in conn.supported_commands}
        cfg = self._cfg
        resolution = resolve(cfg.obd_fast_commands, cfg.obd_slow_commands, supported)
        for warning in resolution.warnings:
            self._warn_once(warning)
        names = resolution.fast + resolution.slow
        layout = Layout(
            resolution.fast,
            resolution.slow,
            gps=cfg.gps_position_monitoring,
            info={name: describe(supported[name]) for name in names},
        )
        self._hub.set_layout(layout)
        protocol = str(conn.protocol_name() or "") or None
        protocol_id = str(conn.protocol_id() or "")
        adapter = plain(conn.query(obd.commands.ELM_VERSION).value)
        vin = self._read(conn, supported["VIN"]).value if "VIN" in supported else None
        settings = save_time(conn)
        self._hub.set_fact("protocol", protocol)
        if adapter is not None:
            self._hub.set_fact("adapter", str(adapter))
        if vin is not None:
            self._hub.set_fact("vin", str(vin))
        with self._lock:
            self._supported = supported
            self._protocol = protocol
        reader = PidReader(
            conn, supported, self._clock, fallbacks=self._fallbacks, undecodable=self._undecodable
        )
        multi = allows_multi_pid(protocol_id)
        if not multi:
            self._warn_once(
                f"{protocol or 'this protocol'} allows one PID per request: every value "
                "costs one answer time of the car (only CAN reads several at once)",
                level=logging.INFO,
            )

        def groups(names_: tuple[str, ...]) -> list[Group]:
            out: list[Group] = []
            for group in make_groups(names_, reader.shareable, MAX_PIDS if multi else 1):
                out.extend([(n,) for n in group] if reader.is_single(group) else [group])
            return out

        plan = PollPlan(
            groups(resolution.fast),
            groups(resolution.slow),
            cfg.obd_slow_interval,
            self._clock.monotonic(),
        )
        self._set_state(CONNECTED)
        log.info(
            "OBD connected on %s: %s, adapter %s, VIN %s, %d commands supported; "
            "logging %d fast values in %d requests per row and %d slow ones in %d requests "
            "every %g s%s",
            conn.port_name() or self.interface,
            protocol,
            adapter,
            vin or "unknown",
            len(supported),
            len(resolution.fast),
            len(plan.fast),
            len(resolution.slow),
            len(plan.slow),
            cfg.obd_slow_interval,
            f" ({', '.join(settings)})" if settings else "",
        )
        return self._poll(conn, reader, plan)

    def _warn_once(self, message: str, level: int = logging.WARNING) -> None:
        # Once per process, not per reconnection.
        if message not in self._warned:
            self._warned.add(message)
            log.log(level, message)

    def _poll(self, conn: Any, reader: PidReader, plan: PollPlan) -> str | None:
        """Read rounds until stopped (None) or the adapter is lost (the reason).

        Only I/O: when to read, what a silent car means and the rows' bounds are the
        policy's (:class:`eccm.obd.policy.LinkPolicy`).
        """
        mono = self._clock.monotonic
        policy = self._policy
        policy.connected(mono())
        while True:
            # Cleared before the queue is looked at: a submit after this point wakes the wait.
            self._wake.clear()
            if self._stopping.is_set():
                return None
            jobs_at = self._run_jobs(conn, policy.next_row)
            if self._lost(conn):
                return self._loss_reason()
            now = mono()
            if policy.facts_due(now):
                self._publish_rates()
            wait = policy.wait(now, jobs_at)
            if wait is not None:
                self._wake.wait(wait)
                continue
            row_start = now
            self._share.row()  # a round of reads comes between two charged requests
            lately = policy.lately
            readings, answered, lost = self._read_groups(reader, plan, plan.fast, lately, False)
            if lost is not None:
                return lost
            if answered or not plan.fast:
                budget = policy.slow_budget(row_start, mono())
                batch = plan.next_batch(mono(), budget)
                slow, slow_answered, lost = self._read_groups(reader, plan, batch, lately, answered)
                if lost is not None:
                    return lost
                if batch:
                    read = sum(len(g) for g in batch)
                    self._slow_meter.tick(mono(), read / max(1, len(plan.slow_names)))
                answered = answered or slow_answered
                readings.update(slow)
            if answered:
                bounds = policy.bounds(plan.cycle)
                self._hub.set_max_ages(bounds.fast, bounds.slow)
                self._publish(readings)
                policy.answered(row_start, mono())
            elif readings:
                if policy.silent(row_start, mono()) and self._hub.engine_trip:
                    log.info(
                        "the car has not answered for %g s (TRIP_END_TIMEOUT): trip ended; "
                        "asking it again at most %g s apart",
                        self._cfg.trip_end_timeout,
                        policy.probe_cap,
                    )
                    self._hub.end_trip()
                    self._hub.clear_values()
            else:
                policy.unasked(row_start, plan.next_due())

    def _read_groups(
        self,
        reader: PidReader,
        plan: PollPlan,
        groups: tuple[Group, ...] | list[Group],
        lately: bool,
        answered: bool,
    ) -> tuple[dict[str, Reading], bool, str | None]:
        """Read groups in turn: (readings, whether the car answered, loss reason or None)."""
        mono = self._clock.monotonic
        out: dict[str, Reading] = {}
        got = False
        for group in groups:
            started = mono()
            result = reader.read(group, lately=lately, now=answered or got)
            elapsed = mono() - started
            if result.requests:
                self._policy.request_took(elapsed / result.requests)
            out.update(result.readings)
            got = got or any(r.value is not None for r in result.readings.values())
            if result.split:
                plan.split(group)
                with self._lock:
                    self._single_groups = tuple(self._fallbacks.single)
            if result.lost is not None:
                lost = self._loss_reason() if result.lost == "disconnected" else result.lost
                return out, got, lost
        return out, got, None

    def _read(self, conn: Any, cmd: Any) -> Reading:
        return query_reading(conn, cmd, self._clock, self._undecodable)

    def _publish_rates(self) -> None:
        self._hub.set_fact("fast_hz", f"{self.fast_rate:.1f}")
        self._hub.set_fact("slow_hz", f"{self.slow_rate:.2f}")

    def _publish(self, readings: dict[str, Reading]) -> None:
        if not self._hub.engine_trip:
            self._hub.begin_trip()
        self._hub.update_values(readings)
        self._hub.emit(engine=True)
        with self._lock:
            self._rows += 1
        self._fast_meter.tick(self._clock.monotonic())

    def _dtcs(self, conn: Any, cmd: Any, what: str) -> list[dict[str, str]]:
        response = conn.query(cmd, force=True)
        if response.value is None:
            raise DeviceError(f"obd_timeout: the car did not answer the request for {what}")
        codes: dict[str, str] = {}
        for code, description in response.value:
            codes.setdefault(str(code), str(description or ""))
        return [{"code": c, "description": d} for c, d in codes.items()]

    def _run_jobs(self, conn: Any, next_row: float) -> float:
        """Run the queued requests that the share allows now; refuse those that would not
        get their turn in time. Returns when to look at the queue again (inf: empty)."""
        mono = self._clock.monotonic
        while not self._lost(conn):
            now = mono()
            with self._lock:
                while self._jobs and self._jobs[0].claimed:  # timed out or cancelled
                    self._jobs.popleft()
                if not self._jobs:
                    return math.inf
                job = self._jobs[0]
            # A kind never run yet is guessed to take one request of the polling loop.
            self._share.first_guess = self._policy.query_time
            turn = self._share.turn(now, next_row, job.kind)
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
            self._share.ran(job.kind, started, mono(), next_row)
        return math.inf

    def _expire(self, job: _Job, timeout: float) -> None:
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
        if job.fail(self._busy_error(hint)):
            with self._lock:
                self._busy += 1

    @staticmethod
    def _busy_error(hint: float) -> AdapterBusy:
        return AdapterBusy(
            "busy: the OBD adapter is logging and on-demand requests get a bounded share "
            f"of its time (retry in {hint:g} s)",
            hint,
        )

    def _refuse_late(self, turn_at: float, wait: float) -> None:
        """Refuse as busy every queued request that may start only after its start_by:
        its caller hears it at once instead of waiting for a timeout."""
        with self._lock:
            late = [job for job in self._jobs if job.start_by < turn_at]
            for job in late:
                self._jobs.remove(job)
        hint = self._share.retry_after(wait)
        with self._lock:
            self._hint = hint
        for job in late:
            if job.fail(self._busy_error(hint)):  # not if its timer settled it first
                with self._lock:
                    self._busy += 1

    def _fail_pending(self, message: str) -> None:
        with self._lock:
            jobs = list(self._jobs)
            self._jobs.clear()
        for job in jobs:
            job.fail(DeviceError(message))

    def _teardown(self, conn: Any) -> None:
        with self._lock:
            self._state = DISCONNECTED
            self._protocol = None
        self._fail_pending("not_connected: the OBD adapter was disconnected")
        self._hub.set_fact("obd", DISCONNECTED)
        self._hub.set_fact("fast_hz", None)
        self._hub.set_fact("slow_hz", None)
        if self._hub.engine_trip:
            self._hub.end_trip()
        self._hub.clear_values()
        self._close(conn)

    def _set_state(self, state: str) -> None:
        with self._lock:
            self._state = state
        self._hub.set_fact("obd", state)

    @staticmethod
    def _lost(conn: Any) -> bool:
        return bool(conn.status() == OBDStatus.NOT_CONNECTED)

    @staticmethod
    def _loss_reason() -> str:
        return _library_log.take() or "the adapter stopped answering"

    @staticmethod
    def _close(conn: Any | None) -> None:
        if conn is None:
            return
        try:
            conn.close()
        except Exception as exc:  # closing a vanished port: nothing left to do
            log.debug("closing the OBD connection: %s", exc)
