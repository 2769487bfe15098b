"""The daemon's parts as the service API sees them: :class:`DaemonBackend`.

:class:`eccm.service.Service` (the one API every front end calls: the control socket, the
web page, MQTT) only talks to a :class:`~eccm.service.Backend`; tests give it an in-memory
one, the daemon a :class:`DaemonBackend` over the hub, the OBD link, the recorder and the
uploader. It sits next to the service, not in a front end's package, since it serves them
all. Every call may block (an on-demand read waits for the OBD link's queue), so a front
end calls the service from a thread of its own. Failures are typed :class:`~eccm.service.ServiceError`.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import CancelledError, Future
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any, Protocol

from eccm.clock import Clock
from eccm.errors import DeviceError
from eccm.gnss.fix import Fix
from eccm.hub import Hub
from eccm.sample import GPS_COLUMNS, GPS_UNITS, Plain, Reading, Sample, iso_utc
from eccm.service import (
    Busy,
    ClearResult,
    Forbidden,
    NotConnected,
    ServerError,
    StatusReport,
    ValueInfo,
    dtc_codes,
    from_link_error,
)
from eccm.store.budget import MIB, DiskSettings, inventory
from eccm.store.listing import StoredFile, list_files
from eccm.trip.track import TrackKeeper

log = logging.getLogger(__name__)

# Seconds between two looks at the record directory's size for STATUS.
DISK_LOOK_S = 10.0
# UPLOAD closes the open file at most once in this many seconds; later requests within it
# only wake the uploader (what they ask for, the closed files going up, still happens).
UPLOAD_ROTATION_GAP = 10.0

# Commands of the link's `supported` table that are not values GET can name: DTC services
# have their own command, and the PID bitmaps only say what else is supported.
_NOT_VALUES = frozenset({"GET_DTC", "CLEAR_DTC", "GET_CURRENT_DTC", "FREEZE_DTC"})
_NOT_VALUE_PREFIXES = ("PIDS_", "MIDS_", "DTC_")


# -- the real parts, as far as the backend uses them (structural, so that a part can be
#    replaced by a test double and its module need not be imported here) ----------------
class LinkLike(Protocol):
    @property
    def state(self) -> str: ...

    @property
    def supported(self) -> Mapping[str, Any]: ...

    def read(self, name: str, timeout: float = ...) -> Future[Reading]: ...

    def read_dtcs(self, timeout: float = ..., *, detail: bool = ...) -> Future[dict[str, Any]]: ...

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
        disk: DiskSettings | None = None,
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
        # The record directory and its budget, for STATUS and the file list (None: neither).
        self._disk_settings = disk
        self._trip = trip
        self._hub = hub
        self._link = link
        self._recorder = recorder
        self._uploader = uploader
        self._clock: Clock = clock or hub.clock
        self._started = self._clock.monotonic() if started_at is None else started_at
        self._last_rotation = -math.inf  # monotonic time UPLOAD last closed the file
        self._reads = threading.BoundedSemaphore(self.MAX_READS_IN_FLIGHT)
        self._dtc = threading.Lock()
        self._busy = 0  # requests this backend refused as busy (the link counts its own)
        self._busy_lock = threading.Lock()
        self._units: dict[str, str] = {}  # learnt from on-demand reads, for SUPPORTED
        self._cache_key: object = None
        self._cache: tuple[ValueInfo, ...] = ()
        self._cache_lock = threading.Lock()
        self._disk: tuple[float, int | None] | None = None  # (when, bytes) of the last look
        # Other parts' current problems (the MQTT publisher's broker refusal), for STATUS.
        self._error_sources: list[Callable[[], str | None]] = []
        # The running trip's positions, for a map opened mid-drive.
        self._track = TrackKeeper()
        hub.add_listener(self._track)

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
            raise ServerError(f"the OBD link returned no reading for {name}")
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
    def status(self) -> StatusReport:
        facts = self._hub.facts()
        rec, up = self._recorder, self._uploader
        gnss = "off"
        if self._hub.layout.gps:
            gnss = "fix" if self.gnss() is not None else "no fix"
        return {
            "obd": self.obd_state(),
            "protocol": facts.get("protocol"),
            "adapter": facts.get("adapter"),
            # The car battery at the adapter (ATRV, volts): a parked car's drain shows here.
            "elm_voltage": _number(facts.get("elm_voltage")),
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
            or (None if up is None else up.last_error)
            or self._other_error(),
            "gnss": gnss,
            "time_source": self._hub.timebase.source,
            # Impossible GNSS values left empty (out of range, position jumps) and GNSS
            # times not adopted (unconfirmed epochs, implausible dates): issue 10.
            "gnss_dropped": None if self._gnss_source is None else self._gnss_source.dropped,
            "gnss_time_rejected": self._hub.timebase.rejected
            + (0 if self._gnss_source is None else self._gnss_source.rejected_times),
            "uptime_s": round(self._clock.monotonic() - self._started, 1),
            "ondemand_busy": self._busy_count(),
            "disk_used_bytes": self._disk_used(),
            "disk_budget_bytes": None
            if self._disk_settings is None
            else int(self._disk_settings.max_local_storage_mb * MIB),
        }

    def _disk_used(self) -> int | None:
        """Bytes in the record directory (uploaded/ included), as the disk budget counts them.

        Looked at most every DISK_LOOK_S: a dashboard asks STATUS every few seconds and a
        directory listing on an SD card is not free.
        """
        if self._disk_settings is None:
            return None
        now = self._clock.monotonic()
        last = self._disk
        if last is not None and now - last[0] < DISK_LOOK_S:
            return last[1]
        try:
            used: int | None = inventory(self._disk_settings.record_dir).total
        except OSError:
            used = None
        self._disk = (now, used)
        return used

    # -- DTCs ----------------------------------------------------------------------------
    def read_dtcs(self, timeout: float, *, detail: bool = False) -> Mapping[str, object]:
        link = self._require_link()
        if not self._dtc.acquire(blocking=False):
            raise self._refuse_busy("another DTC request is running", 1.0)
        try:
            future = link.read_dtcs(timeout, detail=True) if detail else link.read_dtcs(timeout)
            raw = self._wait(future, timeout, "reading DTCs")
        finally:
            self._dtc.release()
        mil = raw.get("mil")
        out: dict[str, object] = {
            "mil": mil if isinstance(mil, bool) else None,  # None: the car does not say
            "stored": dtc_codes(raw.get("stored")),
            "pending": dtc_codes(raw.get("pending")),
        }
        for extra in ("readiness", "freeze_frame"):
            if extra in raw:
                out[extra] = raw[extra]
        return out

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
            raise Forbidden("uploads are off: S3_SERVER_ENDPOINT is empty")
        now = self._clock.monotonic()
        if self._recorder is not None and now - self._last_rotation >= UPLOAD_ROTATION_GAP:
            # One close per gap: a client sending UPLOAD in a loop (any front end, any
            # caller with the control scope) made a tiny file and an S3 object per request.
            self._last_rotation = now
            self._recorder.rotate_now()
        self._uploader.wake()
        return int(self._uploader.queue_length())

    # -- trip computer -------------------------------------------------------------------
    def trip(self) -> Mapping[str, object]:
        if self._trip is None:
            return {"active": False, "trip": None, "previous": None}
        return self._trip.live()

    def track(self) -> tuple[str | None, Sequence[tuple[float, float]]]:
        return self._track.snapshot()

    # -- files and changes -------------------------------------------------------------
    def files(self) -> Sequence[StoredFile]:
        if self._disk_settings is None or self._recorder is None:
            return ()
        return list_files(self._disk_settings.record_dir, complete=True)

    def subscribe(self, callback: Callable[[], None]) -> None:
        self._hub.add_listener(_OnSample(callback))

    def add_error_source(self, source: Callable[[], str | None]) -> None:
        """``source()`` (quick, any thread) gives a part's current problem or None; STATUS
        shows it as ``last_error`` when recording and uploads have none."""
        self._error_sources.append(source)

    # -- helpers -----------------------------------------------------------------------
    def _other_error(self) -> str | None:
        for source in self._error_sources:
            text = source()
            if text:
                return text
        return None

    def _refuse_busy(self, why: str, retry_after: float) -> Busy:
        with self._busy_lock:
            self._busy += 1
        return Busy(f"{why} (retry in {retry_after:g} s)", retry_after)

    def _busy_count(self) -> int:
        """On-demand requests refused as busy since start, here and by the OBD link."""
        link_count = getattr(self._link, "busy_refusals", 0)  # test doubles may lack it
        with self._busy_lock:
            return self._busy + (link_count if isinstance(link_count, int) else 0)

    def _require_link(self) -> LinkLike:
        link = self._link
        if link is None or self.obd_state() != "connected":
            raise NotConnected("the OBD adapter is not connected")
        return link

    @classmethod
    def _wait(cls, future: Future[Any], timeout: float, what: str) -> Any:
        """The result of a request on the OBD link's queue; its errors made typed once, by
        :func:`eccm.service.from_link_error` (the link's messages start with the code)."""
        try:
            return future.result(timeout + cls.RUN_MARGIN)
        except (CancelledError, FutureTimeout, TimeoutError, DeviceError) as exc:
            if isinstance(exc, (FutureTimeout, TimeoutError)) and not future.done():
                future.cancel()
            raise from_link_error(exc, what) from exc


class _OnSample:
    """A hub listener that only says "a row is out" (called on the hub's thread)."""

    def __init__(self, callback: Callable[[], None]) -> None:
        self._callback = callback

    def on_sample(self, sample: Sample) -> None:
        self._callback()

    def on_trip_end(self, trip_id: str) -> None:
        pass

    def stop(self) -> None:
        pass


def _number(text: str | None) -> float | None:
    try:
        return None if text is None else float(text)
    except ValueError:
        return None


__all__ = ["DaemonBackend", "fix_readings"]
