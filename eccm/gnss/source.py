"""The one reader of the GNSS receiver: a thread that moves bytes into a decoder.

The receiver is a serial device speaking NMEA (``/dev/gnss``, ``/dev/ttyACM0``...) or a
gpsd daemon (``gpsd://host:port``). A missing, unplugged or failing receiver is closed and
reopened with a capped backoff, for ever: a car drives through garages and tunnels, cables
wiggle, and the logger must keep logging engine data without a position meanwhile.
"""

from __future__ import annotations

import datetime as dt
import errno
import logging
import os
import socket
import threading
from collections.abc import Callable
from typing import Protocol
from urllib.parse import urlsplit

import serial

from eccm.backoff import Backoff
from eccm.clock import Clock
from eccm.errors import ConfigError, DeviceError
from eccm.gnss.fix import RELEASE_PIVOT, DropCounter, Fix, PositionFilter
from eccm.gnss.gpsd import WATCH_COMMAND, GpsdDecoder
from eccm.gnss.nmea import NmeaDecoder

log = logging.getLogger(__name__)

GPSD_DEFAULT_PORT = 2947
READ_TIMEOUT = 0.5  # seconds a read may block: bounds how long stop() waits for the thread
CONNECT_TIMEOUT = 1.5  # gpsd connect; kept short for the same reason
SILENCE_WARNING = 10.0  # seconds open without one usable sentence before saying so
# A receiver whose data lasted less than STABLE seconds, FLAPPING times in a row, has a loose
# connector or cable: said once instead of a WARNING and an INFO per drop-out.
STABLE = 60.0
FLAPPING = 2


class FixDecoder(Protocol):
    sentences: int
    skipped: int

    def feed(self, data: bytes) -> list[Fix]: ...


def _rejected_times(decoder: FixDecoder | None) -> int:
    # Times the decoder found implausible (an RMC date, a gpsd time past the horizon).
    return int(getattr(decoder, "rejected_times", 0)) if decoder is not None else 0


class _Port(Protocol):
    def read(self) -> bytes:
        """Bytes received so far (b"" after READ_TIMEOUT without any); DeviceError on loss."""
        ...

    def close(self) -> None: ...


class _SerialPort:
    def __init__(self, device: str, baudrate: int) -> None:
        if os.path.isdir(device) or os.path.isfile(device):
            # A typo (GPS_INTERFACE=/dev/serial, a folder), not a receiver that fails.
            kind = "a folder" if os.path.isdir(device) else "a file"
            raise DeviceError(
                f"{kind}, not a serial device: set GPS_INTERFACE to the receiver's device "
                "(e.g. /dev/gnss, /dev/ttyACM0) or to gpsd://host:port"
            )
        try:
            self._serial = serial.Serial(device, baudrate, timeout=READ_TIMEOUT)
        except (serial.SerialException, OSError, ValueError) as e:
            raise DeviceError(_explain_open_error(e)) from e
        try:
            # Whatever queued while nobody read is old: its fixes would be stale.
            self._serial.reset_input_buffer()
        except (serial.SerialException, OSError) as e:
            self._serial.close()
            raise DeviceError(f"cannot be set up ({e})") from e

    def read(self) -> bytes:
        try:
            data: bytes = self._serial.read(self._serial.in_waiting or 1)
        except (serial.SerialException, OSError) as e:
            raise DeviceError(f"read error, unplugged? ({e})") from e
        return data

    def close(self) -> None:
        try:
            self._serial.close()
        except (serial.SerialException, OSError) as e:
            log.debug("closing the GNSS serial port: %s", e)


class _GpsdPort:
    def __init__(self, host: str, port: int) -> None:
        try:
            self._sock = socket.create_connection((host, port), timeout=CONNECT_TIMEOUT)
        except OSError as e:
            raise DeviceError(
                f"cannot connect ({e}): is gpsd running (systemctl status gpsd) "
                f"and listening on {host}:{port}?"
            ) from e
        try:
            self._sock.settimeout(READ_TIMEOUT)
            self._sock.sendall(WATCH_COMMAND)
        except OSError as e:
            self._sock.close()
            raise DeviceError(f"connection lost while sending WATCH ({e})") from e

    def read(self) -> bytes:
        try:
            data = self._sock.recv(65536)
        except TimeoutError:
            return b""
        except OSError as e:
            raise DeviceError(f"gpsd connection lost ({e})") from e
        if not data:
            raise DeviceError("gpsd closed the connection")
        return data

    def close(self) -> None:
        self._sock.close()


def _explain_open_error(e: BaseException) -> str:
    code = getattr(e, "errno", None)
    if code == errno.ENOENT:
        hint = "not found: check GPS_INTERFACE and that the receiver is plugged in"
    elif code == errno.EACCES:
        hint = "permission denied: add the user running ECCM to the dialout group"
    elif code == errno.EBUSY:
        hint = "busy: another program (gpsd?) holds it; use GPS_INTERFACE=gpsd://127.0.0.1:2947"
    else:
        hint = f"cannot be opened ({e})"
    return hint


def parse_gpsd_url(interface: str) -> tuple[str, int]:
    """``gpsd://host[:port]`` → (host, port); ConfigError if it is not such a URL."""
    parts = urlsplit(interface)
    try:
        port = parts.port
    except ValueError as e:
        raise ConfigError(f"GPS_INTERFACE={interface!r}: the port is not a number") from e
    if parts.scheme != "gpsd" or not parts.hostname:
        raise ConfigError(f"GPS_INTERFACE={interface!r}: expected gpsd://host:port")
    return parts.hostname, port or GPSD_DEFAULT_PORT


class GnssSource:
    """Reads the receiver in a thread and calls ``on_fix`` with every fix, from that thread.

    ``interface`` is a serial device path or ``gpsd://host:port``. The source never stops by
    itself: a missing or failing receiver is retried with a backoff capped at
    ``max_backoff`` seconds, with one WARNING when it goes away and one INFO when it is back.
    ``backoff`` replaces the whole reopening schedule (tests use it). ``pivot`` is the
    GPS week rollover pivot of a serial receiver's dates (see :class:`NmeaDecoder`): only
    a replay of a capture older than this release changes it.
    """

    def __init__(
        self,
        interface: str,
        baudrate: int,
        on_fix: Callable[[Fix], None],
        clock: Clock,
        max_backoff: float = 10.0,
        *,
        backoff: Backoff | None = None,
        pivot: dt.date = RELEASE_PIVOT,
    ) -> None:
        self._interface = interface
        self._pivot = pivot
        self._baudrate = baudrate
        self._on_fix = on_fix
        self._clock = clock
        self._gpsd = parse_gpsd_url(interface) if interface.startswith("gpsd://") else None
        self._backoff = backoff or Backoff(base=0.5, factor=2.0, cap=max_backoff)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._connected = False
        self._fixes = 0
        self._skipped_before = 0  # skips counted by the decoders of earlier connections
        self._rejected_before = 0  # implausible dates, likewise
        self._decoder: FixDecoder | None = None
        # One counter and one filter for the source's life: a jump is judged against the
        # last accepted position across reconnections, and drops log once a minute.
        self._drops = DropCounter(clock)
        self._positions = PositionFilter(self._drops)
        self._outage_since: float | None = None
        self._back_since: float | None = None  # monotonic: the receiver's data came back
        self._short_sessions = 0  # sessions in a row that ended within STABLE s of data
        self._flapping = False  # said once: outages and returns go to DEBUG meanwhile
        self._announced = False
        self._session_had_data = False

    # ------------------------------------------------------------------ public
    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError("GnssSource already started")
        self._thread = threading.Thread(target=self._run, name="gnss-source", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 2.0) -> None:
        """Stop the thread; returns once it ended (or after ``timeout`` seconds)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                log.warning("GNSS reader thread did not stop within %.1f s", timeout)

    @property
    def running(self) -> bool:
        """The reader thread is alive."""
        return self._thread is not None and self._thread.is_alive()

    @property
    def connected(self) -> bool:
        """The receiver (or gpsd) is open."""
        return self._connected

    @property
    def fixes(self) -> int:
        """Fixes delivered to ``on_fix`` since start."""
        return self._fixes

    @property
    def dropped(self) -> int:
        """Values dropped as impossible (out of range, position jumps) since start."""
        return self._drops.total

    @property
    def skipped(self) -> int:
        """Garbage runs and unusable sentences or reports since start."""
        decoder = self._decoder
        return self._skipped_before + (decoder.skipped if decoder is not None else 0)

    @property
    def rejected_times(self) -> int:
        """Epochs whose date was no plausible time (NMEA; gpsd resolves dates itself)."""
        decoder = self._decoder
        return self._rejected_before + _rejected_times(decoder)

    # ------------------------------------------------------------------ thread
    def _run(self) -> None:
        backoff = self._backoff
        while not self._stop.is_set():
            delay = backoff.delay()
            if delay:
                log.debug("GNSS: next attempt to open %s in %.1f s", self._interface, delay)
                if self._stop.wait(delay):
                    break
            self._session_had_data = False
            try:
                self._session()
            except DeviceError as e:
                self._outage(str(e))
            except Exception:  # a bug must not end position logging for the whole drive
                log.exception("GNSS reader failed unexpectedly; reopening %s", self._interface)
                self._outage("unexpected error")
            # A connection that delivered data earns an immediate reopen; one that failed
            # before any sentence arrived keeps climbing the backoff, so a port that opens
            # and fails at once does not spin.
            backoff = backoff.succeeded() if self._session_had_data else backoff.failed()

    def _open(self) -> _Port:
        if self._gpsd is not None:
            return _GpsdPort(*self._gpsd)
        return _SerialPort(self._interface, self._baudrate)

    def _session(self) -> None:
        """Open and read until stop(); DeviceError when the receiver fails."""
        port = self._open()
        # gpsd resolves the week rollover itself, against its own build: the pivot only
        # bounds its times from above.
        decoder: FixDecoder = (
            GpsdDecoder(self._clock, self._drops, self._pivot)
            if self._gpsd is not None
            else NmeaDecoder(self._clock, self._pivot, self._drops)
        )
        self._decoder = decoder
        self._connected = True
        opened_at = self._clock.monotonic()
        silence_warned = False
        silence_logged = False
        usable_at, usable = opened_at, 0
        silent_reads = 0  # reads in a row that found no new sentence past the silence
        if not self._announced:
            self._announced = True
            log.info("GNSS: reading %s", self._describe())
        else:
            log.debug("GNSS: opened %s", self._interface)
        try:
            while not self._stop.is_set():
                data = port.read()
                if data:
                    for fix in decoder.feed(data):
                        self._deliver(fix)
                now = self._clock.monotonic()
                if decoder.sentences != usable:
                    usable_at, usable = now, decoder.sentences
                    silent_reads = 0
                if decoder.sentences and not self._session_had_data:
                    self._session_had_data = True
                    self._recovered()
                    if silence_logged:
                        log.info("GNSS: %s now sends usable data", self._interface)
                elif self._session_had_data and now - usable_at > SILENCE_WARNING:
                    # A receiver that stops talking without closing the port (a hung USB
                    # receiver, a cut data wire): its position is stale already (the hub
                    # leaves the columns empty); reopening it is what may bring it back.
                    # Only once a read begun past the silence found nothing too: after
                    # ECCM itself was held up (a suspended or swapping system), the first
                    # read takes one byte of what queued meanwhile, the next one the rest.
                    silent_reads += 1
                    if silent_reads < 2:
                        continue
                    raise DeviceError(
                        f"it stopped sending for {SILENCE_WARNING:.0f} s although the port "
                        "is open; reopening it"
                    )
                elif (
                    not self._session_had_data
                    and not silence_warned
                    and now - opened_at > SILENCE_WARNING
                ):
                    silence_warned = True
                    if self._outage_since is not None:
                        continue  # reported already, as the outage that is going on
                    silence_logged = True
                    log.warning(
                        "GNSS: %s is open but sent no usable %s for %.0f s (%s)",
                        self._interface,
                        "report" if self._gpsd else "NMEA sentence",
                        SILENCE_WARNING,
                        "does gpsd see a receiver? try gpsmon"
                        if self._gpsd
                        else f"check GPS_BAUDRATE={self._baudrate} and that it outputs NMEA",
                    )
        finally:
            port.close()
            self._connected = False
            self._skipped_before += decoder.skipped
            self._rejected_before += _rejected_times(decoder)
            self._decoder = None

    def _deliver(self, fix: Fix) -> None:
        fix = self._positions.check(fix)
        self._fixes += 1
        try:
            self._on_fix(fix)
        except Exception:  # a consumer's bug must not stop the reader
            log.exception("GNSS: the fix consumer failed")

    def _describe(self) -> str:
        if self._gpsd is not None:
            return f"gpsd at {self._gpsd[0]}:{self._gpsd[1]}"
        return f"{self._interface} at {self._baudrate} baud"

    def _outage(self, reason: str) -> None:
        if self._outage_since is not None:
            log.debug("GNSS receiver still unavailable: %s", reason)
            return
        now = self._clock.monotonic()
        self._outage_since = now
        back, self._back_since = self._back_since, None
        if back is not None and now - back < STABLE:
            self._short_sessions += 1
        else:
            self._short_sessions = 0
            self._flapping = False
        if self._flapping:
            log.debug("GNSS receiver %s dropped out again: %s", self._interface, reason)
        elif self._short_sessions >= FLAPPING:
            # A loose connector or cable: two lines per drop-out, for hours, said once.
            self._flapping = True
            log.warning(
                "GNSS receiver %s keeps dropping out (%s; %d times within %.0f s of coming "
                "back): a loose connector or cable? Not logged again until it stays %.0f s",
                self._interface,
                reason,
                self._short_sessions + 1,
                STABLE,
                STABLE,
            )
        else:
            log.warning(
                "GNSS receiver %s unavailable: %s%s Logging continues without position; "
                "retrying in the background (every %.0f s at most).",
                self._interface,
                reason,
                "" if reason.endswith((".", "?", "!")) else ".",
                self._backoff.cap,
            )

    def _recovered(self) -> None:
        self._back_since = self._clock.monotonic()
        if self._outage_since is not None:
            log.log(
                logging.DEBUG if self._flapping else logging.INFO,
                "GNSS receiver %s is back after %.1f s",
                self._interface,
                self._clock.monotonic() - self._outage_since,
            )
            self._outage_since = None
