"""Opening the python-OBD connection, and saying what to check when it does not open.

python-OBD reports a failed connection by logging (and by a status), and waits minutes on
a device that never answers. :func:`open_connection` checks the device first (exists,
permission, answers with a prompt), hands it to python-OBD with the configured speed and
protocol, and turns what python-OBD reported into one sentence that names the setting to
check (OBD_INTERFACE, OBD_BAUDRATE, OBD_PROTOCOL). python-OBD's own log lines are taken
over here (:class:`LibraryLog`) and passed on at DEBUG level.
"""

from __future__ import annotations

import logging
import os
import stat
import threading
from collections.abc import Callable
from typing import Any

import obd
import obd.elm327
from obd.utils import OBDStatus

from eccm.obd.adapter import answers_mode01, probe_prompt
from eccm.obd.settings import UNDECODABLE_PROTOCOLS, ObdSettings

# The link's lines, under the name they always had (the log format shows it).
log = logging.getLogger("eccm.obd.link")

# python-OBD's `timeout` only bounds each try of its baud-rate detection (a pseudo-terminal
# skips it); one second leaves room for a slow Bluetooth adapter and costs at most 6 s.
BAUD_PROBE_TIMEOUT = 1.0

# python-OBD's complaints when the adapter answered but refused one of its set-up commands
# (obd/elm327.py: "ATE0 did not return 'OK'", "ATH1 did not return 'OK', ...").
SETUP_COMMANDS = ("ATE0 ", "ATH1 ", "ATL0 ")


class LibraryLog(logging.Handler):
    """Takes python-OBD's log records in place of its own stderr handler.

    python-OBD prints a line for every failed query and every retry. The link reports an
    outage once, in its own words, quoting the library's last complaint; the library's
    lines go on at DEBUG level under the link's logger.
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


library_log = LibraryLog()
_library_lock = threading.Lock()


def adopt_library_log() -> None:
    """Route python-OBD's records to :data:`library_log` (once per process is enough)."""
    with _library_lock:
        lib = logging.getLogger("obd")
        own = getattr(obd, "console_handler", None)
        if own is not None:
            lib.removeHandler(own)
        if library_log not in lib.handlers:
            lib.addHandler(library_log)
        lib.propagate = False
        lib.setLevel(logging.DEBUG if log.isEnabledFor(logging.DEBUG) else logging.WARNING)


def warn_undecodable_protocol(settings: ObdSettings) -> None:
    """Say once, at start, that OBD_PROTOCOL=B or C is detected instead."""
    if settings.protocol in UNDECODABLE_PROTOCOLS:
        known = getattr(obd.elm327.ELM327, "_SUPPORTED_PROTOCOLS", None) or {}
        # Valid ELM327 numbers (user-defined CAN), but python-OBD has no decoder for them.
        log.error(
            "OBD_PROTOCOL=%s is a user-defined ELM327 protocol that python-OBD cannot decode; "
            "detecting the protocol instead (set one of %s, or leave it empty)",
            settings.protocol,
            ", ".join(sorted(known)),
        )


def is_lost(conn: Any) -> bool:
    """python-OBD says the adapter is gone."""
    return bool(conn.status() == OBDStatus.NOT_CONNECTED)


def loss_reason() -> str:
    """Why the adapter was lost, in python-OBD's last words of this thread."""
    return library_log.take() or "the adapter stopped answering"


def close(conn: Any | None) -> None:
    if conn is None:
        return
    try:
        conn.close()
    except Exception as exc:  # closing a vanished port: nothing left to do
        log.debug("closing the OBD connection: %s", exc)


def _is_serial_device(path: str) -> bool:
    try:
        return stat.S_ISCHR(os.stat(path).st_mode)
    except OSError:
        return False


def _check_device(iface: str, baudrate: int | None) -> tuple[str | None, str]:
    """(the port python-OBD gets, "") or (None, what the user should check)."""
    if not os.path.exists(iface):
        return None, (
            f"{iface} does not exist: check that the adapter is plugged in (USB) or "
            "paired and bound to an rfcomm device (Bluetooth), and that "
            "OBD_INTERFACE names it"
        )
    if os.path.isdir(iface) or os.path.isfile(iface):
        # A typo (OBD_INTERFACE=/dev/serial, a folder) is no adapter that fails to answer.
        kind = "a folder" if os.path.isdir(iface) else "a file"
        return None, (
            f"{iface} is {kind}, not a serial device: set OBD_INTERFACE to the adapter's "
            "device (e.g. /dev/obd, /dev/ttyUSB0 or /dev/rfcomm0)"
        )
    if not os.access(iface, os.R_OK | os.W_OK):
        return None, (
            f"no permission to open {iface}: add the user running ECCM to the "
            "group that owns it (usually dialout)"
        )
    # Resolved at every attempt: a udev or test symlink may point elsewhere now, and
    # python-OBD recognises a pseudo-terminal only by its real name.
    port = os.path.realpath(iface)
    # python-OBD waits minutes on a device that never answers, except when it detects the
    # speed itself on a real serial port (one second per speed).
    if _is_serial_device(port) and (baudrate or port.startswith("/dev/pts/")):
        silent = probe_prompt(port, baudrate)
        if silent is not None:
            return None, f"{iface} is not answering like an ELM327 adapter: {silent}"
    return port, ""


def open_connection(
    settings: ObdSettings,
    connect: Callable[..., Any],
    adapter_only: Callable[[Any], None] | None = None,
) -> tuple[Any | None, str]:
    """A connection that reaches the car, or None and what the user should check.

    ``connect`` builds the python-OBD connection (``obd.OBD`` in the daemon);
    ``adapter_only(conn)`` is called before a connection is closed whose adapter answers
    but whose car does not (a parked car: the battery voltage is read then).
    """
    iface = settings.interface
    port: str | None = None
    if iface:
        port, problem = _check_device(iface, settings.baudrate)
        if port is None:
            return None, problem
    library_log.take()
    protocol = settings.python_obd_protocol
    try:
        conn = connect(
            portstr=port,
            baudrate=settings.baudrate,
            protocol=protocol,
            fast=False,
            timeout=BAUD_PROBE_TIMEOUT,
            check_voltage=False,
        )
    except Exception as exc:  # python-OBD reports by logging; a raise is still the device
        return None, f"python-OBD failed to open it ({exc})"
    status = conn.status()
    lists_values = status == OBDStatus.CAR_CONNECTED and answers_mode01(
        {c.name: c for c in conn.supported_commands}
    )
    complaint = "" if lists_values else library_log.take(first_error=True) or "no answer"
    why = explain(status, lists_values, iface, complaint, protocol)
    if why is None:
        return conn, ""
    if adapter_only is not None and status != OBDStatus.NOT_CONNECTED:
        adapter_only(conn)
    close(conn)
    return None, why


def explain(
    status: str, lists_values: bool, iface: str, complaint: str, protocol: str | None
) -> str | None:
    """What python-OBD's connection attempt means for the user: None when it reaches the
    car, else what to check. Pure.

    ``status``: python-OBD's ``OBDStatus``; ``lists_values``: the car listed a mode 01
    value (it answered 0100); ``iface``: OBD_INTERFACE (empty: auto-detect);
    ``complaint``: python-OBD's first error; ``protocol``: what python-OBD was asked for.
    """
    if status == OBDStatus.CAR_CONNECTED:
        if lists_values:
            return None
        # python-OBD calls a fixed protocol "connected" whenever the adapter does not say
        # UNABLE TO CONNECT, even when no ECU answered 0100 (ignition off).
        return (
            "the adapter answers but the car lists no value (no answer to 0100): "
            f"is the ignition on? Check OBD_PROTOCOL (now {protocol or 'auto'})"
        )
    if status == OBDStatus.NOT_CONNECTED:
        if not iface:
            return (
                "no ELM327 adapter found (auto-detect tries /dev/rfcomm* and "
                "/dev/ttyUSB*): set OBD_INTERFACE to the adapter's device, e.g. /dev/obd"
            )
        if complaint.startswith(SETUP_COMMANDS):
            # It answered with a prompt at this speed (the probe, or python-OBD's own
            # speed detection, saw one): the speed is right, the adapter refused a set-up
            # command python-OBD cannot do without (headers on, no linefeeds, no echo).
            return (
                f"{iface} answers like an ELM327 but refused a set-up command ({complaint}): "
                "python-OBD needs ATE0, ATH1 and ATL0, which this adapter does not accept; "
                "OBD_BAUDRATE is not the cause: use another adapter (every ELM327 since "
                "version 1.0 accepts them)"
            )
        return (
            f"{iface} did not answer like an ELM327 adapter ({complaint}): check that "
            "it is the OBD adapter, and OBD_BAUDRATE (empty = detect)"
        )
    return (
        f"the adapter answers but the car does not ({complaint}): is the ignition on? "
        f"Check OBD_PROTOCOL (now {protocol or 'auto'})"
    )


def read_voltage(conn: Any) -> float | None:
    """The adapter's reading of the car battery (ATRV), in volts; None without one.

    ``force``: ATRV is the adapter's own command, asked whether or not the car answers.
    """
    try:
        value = conn.query(obd.commands.ELM_VOLTAGE, force=True).value
    except Exception:  # an adapter gone mid-read: the link finds out by itself
        return None
    magnitude = getattr(value, "magnitude", value)
    return float(magnitude) if isinstance(magnitude, int | float) else None
