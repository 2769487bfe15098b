"""What the control session asks of the daemon, and the implementation over the real parts.

The session (``protocol.py``) only talks to a :class:`Backend`; tests give it an in-memory
one, the daemon a :class:`DaemonBackend` over the hub, the OBD link, the recorder and the
uploader. Every call may block (an on-demand read waits for the OBD link's queue), so the
server calls it from the connection's own thread.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Mapping, Sequence
from concurrent.futures import CancelledError, Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from typing import Any, Protocol

from eccm.clock import Clock
from eccm.config import Config
from eccm.errors import DeviceError, ProtocolError
from eccm.gnss.fix import Fix
from eccm.hub import Hub
from eccm.obd.share import AdapterBusy
from eccm.sample import GPS_COLUMNS, GPS_UNITS, Plain, Reading, iso_utc

log = logging.getLogger(__name__)

# Commands of the link's `supported` table that are not values GET can name: DTC services
# have their own command, and the PID bitmaps only say what else is supported.
_NOT_VALUES = frozenset({"GET_DTC", "CLEAR_DTC", "GET_CURRENT_DTC", "FREEZE_DTC"})
_NOT_VALUE_PREFIXES = ("PIDS_", "MIDS_", "DTC_")
_LINK_CODES = frozenset({"not_connected", "obd_timeout", "unknown_value", "busy"})


class Refused(ProtocolError):
    """A command cannot be carried out; ``code`` is one of the error codes of SPEC §5."""

    def __init__(self, code: str, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.retry_after = retry_after  # busy: seconds after which asking again may succeed


@dataclass(frozen=True, slots=True)
class ValueInfo:
    """One value GET can name (a SUPPORTED entry)."""

    name: str
    unit: str | None
    description: str
    logged: bool  # in the data file (read every row or every slow interval), or GPS


@dataclass(frozen=True, slots=True)
class ClearResult:
    ok: bool  # the ECU acknowledged (positive answer to mode 04)
    answer: str  # what the ECU answered, as text


class Backend(Protocol):
    """The daemon as the control session sees it. Failures are :class:`Refused`."""

    def now(self) -> float:
        """Wall time (GNSS-corrected when the system clock is off)."""
        ...

    def values(self) -> Mapping[str, Reading]:
        """Every current value: logged OBD values and, with a fresh fix, the GPS_* values."""
        ...

    def catalogue(self) -> Sequence[ValueInfo]:
        """Every value GET may name: logged ones first, then supported ones, then GPS.

        A changed catalogue must be a new object: the session keeps its index of the
        last one it saw by identity.
        """
        ...

    def read(self, name: str, timeout: float) -> Reading:
        """Read a supported but unlogged value from the car now, through the OBD owner."""
        ...

    def obd_state(self) -> str:
        """connecting, connected or disconnected."""
        ...

    def gnss(self) -> Fix | None:
        """The latest fresh fix, or None."""
        ...

    def status(self) -> Mapping[str, object]:
        """The fields of a STATUS reply (without ``class``)."""
        ...

    def read_dtcs(self, timeout: float) -> Mapping[str, object]:
        """{"mil": bool, "stored": [{"code", "description"}], "pending": [...]}."""
        ...

    def clear_dtcs(self, timeout: float) -> ClearResult:
        """Send mode 04 to the car."""
        ...

    def upload_now(self) -> int:
        """Close the current file, wake the uploader; the number of files waiting."""
        ...

    def trip(self) -> Mapping[str, object]:
        """The live trip computer (the fields of a TRIP reply, without ``class``)."""
        ...


# -- the real parts, as far as the backend uses them (structural, so that a part can be
#    replaced by a test double and its module need not be imported here) ----------------
class LinkLike(Protocol):
    @property
    def state(self) -> str: ...

    @property
    def supported(self) -> Mapping[str, Any]: ...

    def read(self, name: str, timeout: float = ...) -> Future[Reading]: ...

    def read_dtcs(self, timeout: float = ...) -> Future[dict[str, Any]]: ...

    def clear_dtcs(self, timeout: float = ...) -> Future[str]: ...


class TripLike(Protocol):
    def live(self) -> Mapping[str, object]: ...


class GnssLike(Protocol):
    @property
    def dropped(self) -> int: ...

    @property
    def rejected_times(self) -> int: ...


class RecorderLike(Protocol):
    @property
    def current_file(self) -> str | None: ...

    @property
    def rows_in_file(self) -> int: ...

    @property
    def rows_dropped(self) -> int: ...

    @property
    def last_error(self) -> str | None: ...

    def rotate_now(self) -> None: ...


class UploaderLike(Protocol):
    def wake(self) -> None: ...

    def queue_length(self) -> int: ...

    @property
    def last_upload(self) -> str | None: ...

    @property
    def last_error(self) -> str | None: ...


def fix_readings(fix: Fix) -> dict[str, Reading]:
    """A fix as GPS_* readings, in the data file's units."""
    raw: tuple[Plain, ...] = (
        None if fix.time_utc is None else iso_utc(fix.time_utc),
        fix.latitude,
        fix.longitude,
        fix.altitude,
        fix.speed,
        fix.track,
        fix.quality,
        fix.satellites,
        fix.hdop,
    )
    return {
        name: Reading(value, GPS_UNITS[name][0] or None, fix.received)
        for name, value in zip(GPS_COLUMNS, raw, strict=True)
    }


def _is_value_command(name: str) -> bool:
    return name not in _NOT_VALUES and not name.startswith(_NOT_VALUE_PREFIXES)


def _description(name: str, command: object | None) -> str:
    desc = getattr(command, "desc", None)
    if isinstance(desc, str):
        return desc
    try:
        import obd

        if obd.commands.has_name(name):
            return str(obd.commands[name].desc)
    except Exception:  # python-OBD is a dependency; a description is only a nicety
        pass
    return ""


def _ack(answer: str) -> bool:
    """Whether every ECU answered mode 04 positively (service 0x44).

    The link gives one answer per ECU as hex bytes joined by "; ". A refusal is a negative
    response ``7F 04 <NRC>`` (e.g. 22: conditions not correct, which many ECUs answer
    while the engine runs).
    """
    answers = [a.strip().upper() for a in answer.split(";") if a.strip()]
    return bool(answers) and all(a.replace(" ", "").startswith("44") for a in answers)


class DaemonBackend:
    """The backend over the running daemon's parts. ``link`` None: no OBD at all;
    ``recorder`` None: FILE_RECORDING=no; ``uploader`` None: S3 sync is off; ``trip``
    None: no trip computer."""

    # Concurrent on-demand reads queued into the OBD link by all clients together: each
    # one delays the logging loop, so a burst of clients must not starve it.
    MAX_READS_IN_FLIGHT = 4
    # The link's timeout bounds the wait for the adapter to take a request; once taken it
    # runs to its end (bounded by python-OBD's own timeouts), so we wait this much longer.
    RUN_MARGIN = 10.0

    def __init__(
        self,
        *,
        cfg: Config | None = None,
        hub: Hub,
        link: LinkLike | None,
        recorder: RecorderLike | None = None,
        uploader: UploaderLike | None = None,
        started_at: float | None = None,
        clock: Clock | None = None,
        trip: TripLike | None = None,
        gnss: GnssLike | None = None,
    ) -> None:
        self._gnss_source = gnss
        self._cfg = cfg
        self._trip = trip
        self._hub = hub
        self._link = link
        self._recorder = recorder
        self._uploader = uploader
        self._clock: Clock = clock or hub.clock
        self._started = self._clock.monotonic() if started_at is None else started_at
        self._reads = threading.BoundedSemaphore(self.MAX_READS_IN_FLIGHT)
        self._dtc = threading.Lock()
        self._busy = 0  # requests this backend refused as busy (the link counts its own)
        self._busy_lock = threading.Lock()
        self._units: dict[str, str] = {}  # learnt from on-demand reads, for SUPPORTED
        self._cache_key: object = None
        self._cache: tuple[ValueInfo, ...] = ()
        self._cache_lock = threading.Lock()

    # -- values ------------------------------------------------------------------------
    def now(self) -> float:
        return self._hub.now()

    def values(self) -> Mapping[str, Reading]:
        out = self._hub.latest_values()
        if self._hub.layout.gps:
            fix = self._hub.fresh_fix()
            if fix is not None and fix.has_position:
                out.update(fix_readings(fix))
        return out

    def _supported(self) -> Mapping[str, Any]:
        if self._link is None:
            return {}
        try:
            return dict(self._link.supported)
        except Exception:  # a link that is reconnecting may swap its table under us
            log.debug("supported table not readable", exc_info=True)
            return {}

    def catalogue(self) -> Sequence[ValueInfo]:
        layout = self._hub.layout
        supported = self._supported()
        key = (layout, tuple(supported), len(self._units))
        with self._cache_lock:
            if key == self._cache_key:
                return self._cache
        logged = layout.obd
        out: list[ValueInfo] = []
        for name in logged:
            unit, desc = layout.info.get(name, ("", ""))
            out.append(
                ValueInfo(
                    name,
                    unit or self._units.get(name),
                    desc or _description(name, supported.get(name)),
                    True,
                )
            )
        for name, command in supported.items():
            if name in logged or not _is_value_command(name):
                continue
            out.append(ValueInfo(name, self._units.get(name), _description(name, command), False))
        if layout.gps:
            out.extend(
                ValueInfo(name, GPS_UNITS[name][0] or None, GPS_UNITS[name][1], True)
                for name in GPS_COLUMNS
            )
        result = tuple(out)
        with self._cache_lock:
            self._cache_key, self._cache = key, result
        return result

    def read(self, name: str, timeout: float) -> Reading:
        link = self._require_link()
        if not self._reads.acquire(blocking=False):
            raise self._refuse_busy("too many on-demand reads in flight", 0.5)
        try:
            reading = self._wait(link.read(name, timeout), timeout, f"reading {name}")
        finally:
            self._reads.release()
        if not isinstance(reading, Reading):
            raise Refused("server_error", f"the OBD link returned no reading for {name}")
        if reading.unit:
            self._units[name] = reading.unit
        return reading

    def obd_state(self) -> str:
        if self._link is None:
            return "disconnected"
        try:
            return str(self._link.state)
        except Exception:
            return "disconnected"

    def gnss(self) -> Fix | None:
        fix = self._hub.fresh_fix()
        return fix if fix is not None and fix.has_position else None

    # -- status ------------------------------------------------------------------------
    def status(self) -> Mapping[str, object]:
        facts = self._hub.facts()
        rec, up = self._recorder, self._uploader
        gnss = "off"
        if self._hub.layout.gps:
            gnss = "fix" if self.gnss() is not None else "no fix"
        return {
            "obd": self.obd_state(),
            "protocol": facts.get("protocol"),
            "adapter": facts.get("adapter"),
            "vin": facts.get("vin"),
            "fast_hz": _number(facts.get("fast_hz")),
            "slow_hz": _number(facts.get("slow_hz")),
            "trip": self._hub.trip,
            "recording": None if rec is None else rec.current_file,
            "rows": 0 if rec is None else rec.rows_in_file,
            "rows_total": self._hub.rows,
            # Rows the recorder lost (full disk, disk too slow), since the start.
            "rows_dropped": 0 if rec is None else rec.rows_dropped,
            "upload_queue": 0 if up is None else up.queue_length(),
            "last_upload": None if up is None else up.last_upload,
            # A recording problem (full disk) matters more than an upload one.
            "last_error": (rec.last_error if rec is not None else None)
            or (None if up is None else up.last_error),
            "gnss": gnss,
            "time_source": self._hub.timebase.source,
            # Impossible GNSS values left empty (out of range, position jumps) and GNSS
            # times not adopted (unconfirmed epochs, implausible dates): issue 10.
            "gnss_dropped": None if self._gnss_source is None else self._gnss_source.dropped,
            "gnss_time_rejected": self._hub.timebase.rejected
            + (0 if self._gnss_source is None else self._gnss_source.rejected_times),
            "uptime_s": round(self._clock.monotonic() - self._started, 1),
            "ondemand_busy": self._busy_count(),
        }

    # -- DTCs ----------------------------------------------------------------------------
    def read_dtcs(self, timeout: float) -> Mapping[str, object]:
        link = self._require_link()
        if not self._dtc.acquire(blocking=False):
            raise self._refuse_busy("another DTC request is running", 1.0)
        try:
            raw = self._wait(link.read_dtcs(timeout), timeout, "reading DTCs")
        finally:
            self._dtc.release()
        mil = raw.get("mil")
        return {
            "mil": mil if isinstance(mil, bool) else None,  # None: the car does not say
            "stored": _codes(raw.get("stored")),
            "pending": _codes(raw.get("pending")),
        }

    def clear_dtcs(self, timeout: float) -> ClearResult:
        link = self._require_link()
        if not self._dtc.acquire(blocking=False):
            raise self._refuse_busy("another DTC request is running", 1.0)
        try:
            answer = self._wait(link.clear_dtcs(timeout), timeout, "clearing DTCs")
        finally:
            self._dtc.release()
        text = "" if answer is None else str(answer)
        return ClearResult(_ack(text), text)

    # -- upload ------------------------------------------------------------------------
    def upload_now(self) -> int:
        if self._uploader is None:
            raise Refused("forbidden", "uploads are off: S3_SERVER_ENDPOINT is empty")
        if self._recorder is not None:
            self._recorder.rotate_now()
        self._uploader.wake()
        return int(self._uploader.queue_length())

    # -- trip computer -------------------------------------------------------------------
    def trip(self) -> Mapping[str, object]:
        if self._trip is None:
            return {"active": False, "trip": None, "previous": None}
        return self._trip.live()

    # -- helpers -----------------------------------------------------------------------
    def _refuse_busy(self, why: str, retry_after: float) -> Refused:
        with self._busy_lock:
            self._busy += 1
        return Refused("busy", f"{why} (retry in {retry_after:g} s)", retry_after)

    def _busy_count(self) -> int:
        """On-demand requests refused as busy since start, here and by the OBD link."""
        link_count = getattr(self._link, "busy_refusals", 0)  # test doubles may lack it
        with self._busy_lock:
            return self._busy + (link_count if isinstance(link_count, int) else 0)

    def _require_link(self) -> LinkLike:
        link = self._link
        if link is None or self.obd_state() != "connected":
            raise Refused("not_connected", "the OBD adapter is not connected")
        return link

    @classmethod
    def _wait(cls, future: Future[Any], timeout: float, what: str) -> Any:
        """The result of a request on the OBD link's queue, errors turned into codes.

        The link's errors start with the code ("not_connected: ...", "obd_timeout: ...",
        "unknown_value: ..."); the rest is the message.
        """
        try:
            return future.result(timeout + cls.RUN_MARGIN)
        except AdapterBusy as exc:
            _code, _, message = str(exc).partition(": ")
            raise Refused("busy", message, exc.retry_after) from exc
        except CancelledError:
            raise Refused("not_connected", f"the OBD link stopped ({what})") from None
        except (FutureTimeout, TimeoutError, DeviceError) as exc:
            if isinstance(exc, (FutureTimeout, TimeoutError)) and not future.done():
                future.cancel()
            code, _, message = str(exc).partition(": ")
            if code in _LINK_CODES and message:
                raise Refused(code, message) from exc
            if isinstance(exc, (FutureTimeout, TimeoutError)):
                raise Refused("obd_timeout", f"the car did not answer in time ({what})") from exc
            raise Refused("not_connected", f"the OBD adapter failed ({what}): {exc}") from exc


def _number(text: str | None) -> float | None:
    try:
        return None if text is None else float(text)
    except ValueError:
        return None


def _codes(raw: object) -> list[dict[str, str]]:
    out: list[dict[str, str]] = []
    if not isinstance(raw, Sequence) or isinstance(raw, str):
        return out
    for item in raw:
        if isinstance(item, Mapping):
            code, desc = item.get("code"), item.get("description")
        elif isinstance(item, Sequence) and not isinstance(item, str) and len(item) == 2:
            code, desc = item[0], item[1]  # python-OBD's own (code, description) tuples
        else:
            continue
        out.append({"code": str(code), "description": "" if desc is None else str(desc)})
    return out


def plain(value: object) -> Plain | bool:
    """A value JSON can carry without surprise: NaN and infinities become null."""
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    return str(value)
