"""The API of the running daemon: the one place every front end calls.

The control socket (``control/protocol.py``) calls it now; the web page and MQTT come next.
A front end turns its wire format into calls of :class:`Service` and the typed replies and
errors back into its wire format; every rule a user relies on is written here once:

- **Scopes.** A caller (:class:`Caller`) holds a set of scopes, granted when it
  authenticated (:class:`Credentials`): ``SOCKET_SERVER_SECRET`` grants every scope,
  ``SOCKET_SERVER_READ_SECRET`` only ``read``. Every service call names the scope it needs
  (:func:`needs`) and raises :class:`Forbidden` when the caller lacks it, before anything
  else happens (a read-only caller learns nothing from a refused clear, and spends no token).
- **The DTC-clear policy.** A clear takes two steps: a random token bound to the caller,
  single use, valid ``token_ttl`` seconds; the car must be at standstill (SPEED read again
  when the logged one is stale), the adapter connected, the clear allowed in config; every
  request, refusal and clear is logged (the audit lines).
- **Typed errors.** :class:`ServiceError` and one subclass per error code of SPEC §5; the
  OBD link's ``"code: message"`` errors are converted once, here (:func:`from_link_error`).

What the service needs of the daemon is a :class:`Backend` (``backend.py`` has the
one over the real parts; tests give an in-memory one). Calls may block (an on-demand read
waits for the OBD link's queue): a front end calls them from a thread of its own.
"""

from __future__ import annotations

import enum
import functools
import hashlib
import hmac
import logging
import math
import secrets
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import CancelledError
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from typing import ClassVar, Concatenate, ParamSpec, Protocol, TypedDict, TypeVar

from eccm.clock import Clock
from eccm.errors import DeviceError, EccmError
from eccm.gnss.fix import Fix
from eccm.obd.share import AdapterBusy
from eccm.sample import Plain, Reading
from eccm.store.listing import StoredFile

log = logging.getLogger(__name__)

READ_TIMEOUT = 5.0  # an on-demand read of one value
DTC_TIMEOUT = 15.0  # modes 03 + 07 + 01 01 on a slow K-line car
TOKEN_TTL = 30.0  # a DTC-clear token
SPEED_MAX_AGE = 2.0  # older than this, the logged SPEED is read again before a clear
CLEAR_WARNING = "clears stored codes and resets readiness monitors"
# A refused request repeated within this many seconds (same front end, client and reason)
# is counted in the next audit record instead of writing one of its own: a client in a
# loop (an MQTT publisher, a script) made a file and an S3 object per refusal. Each is
# still logged.
REFUSAL_RECORD_GAP = 60.0
ECHO_LIMIT = 40


# -- scopes ----------------------------------------------------------------------------------
class Scope(enum.Enum):
    READ = "read"  # values, GNSS, status, trip, DTC read, WATCH, SUPPORTED
    CONTROL = "control"  # upload now
    DIAGNOSE = "diagnose"  # DTC clear


ALL_SCOPES: frozenset[Scope] = frozenset(Scope)
READ_ONLY: frozenset[Scope] = frozenset({Scope.READ})


def scope_names(scopes: Iterable[Scope]) -> list[str]:
    """Scope names in a fixed order (read, control, diagnose), as replies list them."""
    held = set(scopes)
    return [s.value for s in Scope if s in held]


# -- errors ----------------------------------------------------------------------------------
class ServiceError(EccmError):
    """A request cannot be carried out; ``code`` is one of the error codes of SPEC §5.

    Raise a subclass (``NotConnected("...")``); ``ServiceError(code, message)`` and
    :func:`error_for` exist for codes that arrive as data.
    """

    code: str
    message: str
    retry_after: float | None

    def __init__(self, code: str, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.retry_after = retry_after  # busy: seconds after which asking again may succeed


class _Coded(ServiceError):
    CODE: ClassVar[str] = "server_error"

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(self.CODE, message, retry_after)


class BadRequest(_Coded):
    CODE = "bad_request"


class UnknownValue(_Coded):
    CODE = "unknown_value"


class ConfirmInvalid(_Coded):
    CODE = "confirm_invalid"


class Forbidden(_Coded):
    CODE = "forbidden"


class VehicleMoving(_Coded):
    CODE = "vehicle_moving"


class NotConnected(_Coded):
    CODE = "not_connected"


class ObdTimeout(_Coded):
    CODE = "obd_timeout"


class Busy(_Coded):
    CODE = "busy"


class ServerError(_Coded):
    CODE = "server_error"


_BY_CODE: Mapping[str, type[_Coded]] = {
    cls.CODE: cls
    for cls in (
        BadRequest,
        UnknownValue,
        ConfirmInvalid,
        Forbidden,
        VehicleMoving,
        NotConnected,
        ObdTimeout,
        Busy,
        ServerError,
    )
}
SERVICE_CODES = frozenset(_BY_CODE)


def error_for(code: str, message: str, retry_after: float | None = None) -> ServiceError:
    """The typed error of ``code`` (a plain :class:`ServiceError` for another code)."""
    cls = _BY_CODE.get(code)
    if cls is None:
        return ServiceError(code, message, retry_after)
    return cls(message, retry_after)


# The OBD link's errors start with one of these codes ("obd_timeout: the car did not answer").
_LINK_CODES = frozenset({"not_connected", "obd_timeout", "unknown_value", "busy"})


def from_link_error(exc: BaseException, what: str) -> ServiceError:
    """An error of a request on the OBD link's queue as a typed error; ``what`` says what was
    asked ("reading RPM"). The link's messages are kept; their ``code:`` prefix chooses the
    class. Timeouts without a code are the car's, anything else is the adapter's failure."""
    if isinstance(exc, CancelledError):
        return NotConnected(f"the OBD link stopped ({what})")
    code, _, message = str(exc).partition(": ")
    if isinstance(exc, AdapterBusy):
        return Busy(message, exc.retry_after)
    if code in _LINK_CODES and message:
        return error_for(code, message)
    if isinstance(exc, (FutureTimeout, TimeoutError)):
        return ObdTimeout(f"the car did not answer in time ({what})")
    if isinstance(exc, DeviceError):
        return NotConnected(f"the OBD adapter failed ({what}): {exc}")
    return ServerError(f"{what} failed: {exc}")


# -- typed requests and replies --------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class ValueInfo:
    """One value GET can name (a SUPPORTED entry)."""

    name: str
    unit: str | None
    description: str
    logged: bool  # in the data file (read every row or every slow interval), or GPS


@dataclass(frozen=True, slots=True)
class ValueEntry:
    value: Plain | bool  # JSON-safe: NaN and infinities are None
    unit: str | None
    age_ms: int | None  # None: no value yet


@dataclass(frozen=True, slots=True)
class Values:
    """A VALUES (or LIVE) reply: wall ``time`` of the answer, entries by name."""

    time: float
    values: Mapping[str, ValueEntry]


@dataclass(frozen=True, slots=True)
class Position:
    """A fresh GNSS fix with a position (speed in m/s)."""

    time: float | None  # UTC epoch seconds of the fix, None if the receiver gave none
    lat: float | None
    lon: float | None
    alt: float | None
    speed: float | None
    track: float | None
    satellites: int | None
    hdop: float | None
    quality: int | None
    age_ms: int


@dataclass(frozen=True, slots=True)
class Dtc:
    code: str
    description: str


@dataclass(frozen=True, slots=True)
class DtcReport:
    mil: bool | None  # None: the car does not say
    stored: tuple[Dtc, ...]
    pending: tuple[Dtc, ...]
    # Mode 02 frame 0 as python-OBD decodes it ({name: {value, unit}}); None: none read.
    freeze_frame: Mapping[str, object] | None = None
    # Readiness monitors of 01 01 ({name: {available, complete}}); None: not read.
    readiness: Mapping[str, object] | None = None

    @classmethod
    def from_mapping(cls, raw: Mapping[str, object]) -> DtcReport:
        mil = raw.get("mil")
        frame, ready = raw.get("freeze_frame"), raw.get("readiness")
        return cls(
            mil if isinstance(mil, bool) else None,
            tuple(Dtc(**c) for c in dtc_codes(raw.get("stored"))),
            tuple(Dtc(**c) for c in dtc_codes(raw.get("pending"))),
            frame if isinstance(frame, Mapping) and frame else None,
            ready if isinstance(ready, Mapping) else None,
        )

    def as_dict(self) -> dict[str, object]:
        """The report as JSON-ready fields (an audit record's ``before``)."""
        return {
            "mil": self.mil,
            "stored": [{"code": d.code, "description": d.description} for d in self.stored],
            "pending": [{"code": d.code, "description": d.description} for d in self.pending],
            "freeze_frame": None if self.freeze_frame is None else dict(self.freeze_frame),
            "readiness": None if self.readiness is None else dict(self.readiness),
        }


class StatusReport(TypedDict):
    """The fields of a STATUS reply (README, Commands)."""

    obd: str
    protocol: str | None
    adapter: str | None
    elm_voltage: float | None
    vin: str | None
    fast_hz: float | None
    slow_hz: float | None
    trip: str | None
    recording: str | None
    rows: int
    rows_total: int
    rows_dropped: int
    upload_queue: int
    last_upload: str | None
    last_error: str | None
    gnss: str
    time_source: str
    gnss_dropped: int | None
    gnss_time_rejected: int
    uptime_s: float
    ondemand_busy: int
    disk_used_bytes: int | None
    disk_budget_bytes: int | None


@dataclass(frozen=True, slots=True)
class ClearResult:
    ok: bool  # the ECU acknowledged (positive answer to mode 04)
    answer: str  # what the ECU answered, as text


@dataclass(frozen=True, slots=True)
class ClearConfirm:
    """The first step of a DTC clear: confirm with ``token`` within ``expires_in`` s."""

    token: str
    expires_in: int
    warning: str


# -- the daemon, as the service sees it ------------------------------------------------------
class Backend(Protocol):
    """The daemon's parts. Failures are :class:`ServiceError`."""

    def now(self) -> float:
        """Wall time (GNSS-corrected when the system clock is off)."""
        ...

    def values(self) -> Mapping[str, Reading]:
        """Every current value: logged OBD values and, with a fresh fix, the GPS_* values."""
        ...

    def catalogue(self) -> Sequence[ValueInfo]:
        """Every value GET may name: logged ones first, then supported ones, then GPS.

        A changed catalogue must be a new object: the service keeps its index of the
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
        """The fields of a STATUS reply (a :class:`StatusReport` from the real daemon)."""
        ...

    def read_dtcs(self, timeout: float, *, detail: bool = False) -> Mapping[str, object]:
        """{"mil": bool, "stored": [{"code", "description"}], "pending": [...]}; with
        ``detail`` also "readiness" and, when the car keeps one, "freeze_frame"."""
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

    def files(self) -> Sequence[StoredFile]:
        """Closed data files and trip summaries of the record directory (none without one)."""
        ...

    def track(self) -> tuple[str | None, Sequence[tuple[float, float]]]:
        """(running trip id, its positions as (latitude, longitude), oldest first)."""
        ...

    def subscribe(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` (quick, any thread) whenever new values are in: a front end
        that streams them pushes at once instead of polling. A backend without a data
        flow of its own may never call it."""
        ...


# -- callers and their secrets ---------------------------------------------------------------
class Caller:
    """Who calls: a name for log lines (``peer``: the client's address) and its scopes;
    ``front`` (socket, web, mqtt) and ``address`` (the client's, when the front end knows
    it) for the audit record of a DTC clear.

    A front end makes one per authenticated session. It carries that session's pending
    DTC-clear token, so that a token works only for the caller who asked for it.
    """

    def __init__(
        self, name: str, scopes: Iterable[Scope], *, front: str = "", address: str | None = None
    ) -> None:
        self.name = name
        self.scopes = frozenset(scopes)
        self.front = front
        self.address = address
        # The pending DTC-clear token and its monotonic expiry (the service sets it).
        self.clear_token: tuple[str, float] | None = None

    def __repr__(self) -> str:
        return f"Caller({self.name!r}, {scope_names(self.scopes)})"

    def forget(self) -> None:
        """The session ended: a pending token dies with it."""
        self.clear_token = None

    def require(self, scope: Scope, what: str) -> None:
        if scope not in self.scopes:
            held = ", ".join(scope_names(self.scopes)) or "none"
            raise Forbidden(
                f"{what} needs the {scope.value} scope, which only SOCKET_SERVER_SECRET "
                f"grants; this session has: {held}"
            )


class Credentials:
    """The secrets and the scopes each grants: ``secret`` every scope, ``read_secret`` (if
    any) ``read`` only. Both are checked on every attempt, in constant time, so that the
    time taken says nothing about which one (if either) matched."""

    def __init__(self, secret: str, read_secret: str = "") -> None:
        if not secret:
            # config.py refuses this already; an empty key would make every HMAC "right".
            raise ValueError("the control socket needs a secret")
        if read_secret == secret:
            raise ValueError("the read-only secret must differ from the full one")
        self._keys: tuple[tuple[bytes, frozenset[Scope]], ...] = (
            (secret.encode("utf-8"), ALL_SCOPES),
            *(((read_secret.encode("utf-8"), READ_ONLY),) if read_secret else ()),
        )

    def by_hmac(self, nonce: str, proof: str) -> frozenset[Scope] | None:
        """Scopes of the secret whose HMAC-SHA256 of ``nonce`` is ``proof`` (hex)."""
        # surrogatepass: a lone surrogate (JSON's "\ud800") is a wrong secret, not a crash.
        given = proof.lower().encode("utf-8", "surrogatepass")
        return self._match(
            lambda key: hmac.compare_digest(
                hmac.new(key, nonce.encode("ascii"), hashlib.sha256).hexdigest().encode(), given
            )
        )

    def by_plain(self, given: str) -> frozenset[Scope] | None:
        """Scopes of the secret ``given`` is."""
        # Digests of both, so that the comparison does not leak the secret's length.
        # surrogatepass: a lone surrogate (JSON's "\ud800") is a wrong secret, not a crash.
        digest = hashlib.sha256(given.encode("utf-8", "surrogatepass")).digest()
        return self._match(lambda key: hmac.compare_digest(hashlib.sha256(key).digest(), digest))

    def _match(self, check: Callable[[bytes], bool]) -> frozenset[Scope] | None:
        found: frozenset[Scope] | None = None
        for key, scopes in self._keys:  # no early exit: every key costs the same
            if check(key) and found is None:
                found = scopes
        return found


# -- the service -----------------------------------------------------------------------------
_P = ParamSpec("_P")
_R = TypeVar("_R")


def needs(
    scope: Scope, what: str
) -> Callable[
    [Callable[Concatenate[Service, Caller, _P], _R]],
    Callable[Concatenate[Service, Caller, _P], _R],
]:
    """Mark a service call with the scope it needs; the caller is checked before the call."""

    def wrap(
        fn: Callable[Concatenate[Service, Caller, _P], _R],
    ) -> Callable[Concatenate[Service, Caller, _P], _R]:
        @functools.wraps(fn)
        def checked(self: Service, caller: Caller, /, *args: _P.args, **kw: _P.kwargs) -> _R:
            caller.require(scope, what)
            return fn(self, caller, *args, **kw)

        checked.__dict__["scope"] = scope
        return checked

    return wrap


def scope_of(call: Callable[..., object]) -> Scope | None:
    """The scope a service call needs (None: not a scoped call)."""
    scope = getattr(call, "scope", None)
    return scope if isinstance(scope, Scope) else None


def echo(text: str, limit: int = ECHO_LIMIT) -> str:
    """Peer text to quote in a message: cut short (JSON escaping does the rest)."""
    return text if len(text) <= limit else text[:limit] + "..."


class Service:
    """The running daemon for front ends. One per daemon, shared by every session (its own
    state is a cache rebuilt by identity; per-caller state lives on the :class:`Caller`)."""

    def __init__(
        self,
        backend: Backend,
        clock: Clock,
        *,
        allow_dtc_clear: bool = True,
        read_timeout: float = READ_TIMEOUT,
        dtc_timeout: float = DTC_TIMEOUT,
        token_ttl: float = TOKEN_TTL,
        audit: Callable[[Mapping[str, object]], object] | None = None,
    ) -> None:
        self._backend = backend
        # Where the audit record of each clear and refusal goes (store/audit.py writes
        # it as a file next to the data files); None: the log lines only.
        self._audit = audit
        self._clock = clock
        self._allow_clear = allow_dtc_clear
        self._read_timeout = read_timeout
        self._dtc_timeout = dtc_timeout
        self.token_ttl = token_ttl
        # (front end, client, refusal code) -> (monotonic time of its last record, refusals
        # since then that were not recorded)
        self._refusals: dict[tuple[str, str | None, str], tuple[float, int]] = {}
        self._refusals_lock = threading.Lock()
        # (the backend's catalogue, index by name): swapped as one tuple, so that sessions
        # on other threads see either the old pair or the new one.
        self._catalogue_index: tuple[object, Mapping[str, ValueInfo]] = (None, {})

    def now(self) -> float:
        """Wall time of a reply."""
        return self._backend.now()

    # -- read ------------------------------------------------------------------------------
    @needs(Scope.READ, "the list of supported values")
    def supported(self, caller: Caller) -> Sequence[ValueInfo]:
        return self._backend.catalogue()

    @needs(Scope.READ, "reading values")
    def values(
        self, caller: Caller, names: Sequence[str] | None, *, read_missing: bool = True
    ) -> Values:
        """Current values of ``names`` (None: every logged value and any other current one).
        ``read_missing``: read a supported value that is not logged from the car now (GET);
        else it is given as no value (LIVE lines never poll the car)."""
        current = self._backend.values()
        catalogue = self._catalogue()
        now = self._clock.monotonic()
        if names is None:
            names = [n for n, v in catalogue.items() if v.logged]
            names += [n for n in current if n not in catalogue]
        out: dict[str, ValueEntry] = {}
        for name in names:
            reading = current.get(name)
            if reading is None:
                info = catalogue.get(name)
                if info is None:
                    raise self._unknown(name)
                if not info.logged and read_missing:
                    reading = self._backend.read(name, self._read_timeout)
                else:
                    out[name] = ValueEntry(None, info.unit, None)
                    continue
            out[name] = ValueEntry(
                plain(reading.value), reading.unit, max(0, round((now - reading.at) * 1000))
            )
        return Values(self._backend.now(), out)

    @needs(Scope.READ, "reading values")
    def reads_car(self, caller: Caller, names: Sequence[str] | None) -> bool:
        """Whether :meth:`values` of ``names`` would read the car (a name supported but not
        logged, without a current value): a front end runs such a call where waiting does
        no harm (a worker, not its event loop), and the others at once."""
        if names is None:
            return False  # every value: nothing unlogged is read
        catalogue = self._catalogue()
        unlogged = [n for n in names if (info := catalogue.get(n)) is not None and not info.logged]
        if not unlogged:
            return False  # the common GET: no copy of the current values
        current = self._backend.values()
        return any(n not in current for n in unlogged)

    @needs(Scope.READ, "watching values")
    def check_watch(self, caller: Caller, names: Sequence[str]) -> None:
        """Refuse a WATCH of these names: unknown, or not logged (streaming those would
        poll the car on every line and slow the logging)."""
        catalogue = self._catalogue()
        for name in names:
            info = catalogue.get(name)
            if info is None:
                raise self._unknown(name)
            if not info.logged:
                raise BadRequest(
                    f"{echo(name)} is not logged: WATCH streams logged values "
                    f"(GET {echo(name)} reads it once)"
                )

    @needs(Scope.READ, "reading the position")
    def position(self, caller: Caller) -> Position | None:
        """The latest fresh fix with a position, or None."""
        fix = self._backend.gnss()
        if fix is None or not fix.has_position:
            return None
        return Position(
            time=fix.time_utc,
            lat=_number(fix.latitude),
            lon=_number(fix.longitude),
            alt=_number(fix.altitude),
            speed=_number(fix.speed),
            track=_number(fix.track),
            satellites=fix.satellites,
            hdop=_number(fix.hdop),
            quality=fix.quality,
            age_ms=max(0, round((self._clock.monotonic() - fix.received) * 1000)),
        )

    @needs(Scope.READ, "the status")
    def status(self, caller: Caller) -> Mapping[str, object]:
        return self._backend.status()

    @needs(Scope.READ, "the trip computer")
    def trip(self, caller: Caller) -> Mapping[str, object]:
        return self._backend.trip()

    @needs(Scope.READ, "the trip's track")
    def track(self, caller: Caller) -> tuple[str | None, Sequence[tuple[float, float]]]:
        return self._backend.track()

    @needs(Scope.READ, "reading trouble codes")
    def dtc_report(self, caller: Caller) -> DtcReport:
        return DtcReport.from_mapping(self._backend.read_dtcs(self._dtc_timeout, detail=True))

    @needs(Scope.READ, "the list of files")
    def files(self, caller: Caller) -> Sequence[StoredFile]:
        return self._backend.files()

    @needs(Scope.READ, "downloading a file")
    def file(self, caller: Caller, name: str) -> StoredFile:
        """A listed file by its exact name: a name is looked up, never made into a path."""
        for f in self._backend.files():
            if f.name == name:
                return f
        raise UnknownValue(f"no closed data file or trip summary called {echo(name)!r}")

    def subscribe(self, callback: Callable[[], None]) -> None:
        """``callback`` is called (on the daemon's threads: it must be quick) whenever new
        values are in. Not scoped: it says nothing but "something changed"; what changed
        is read with :meth:`values`, which is."""
        subscribe = getattr(self._backend, "subscribe", None)
        if subscribe is not None:  # in-memory test backends may have no data flow
            subscribe(callback)

    # -- control ---------------------------------------------------------------------------
    @needs(Scope.CONTROL, "an upload")
    def upload(self, caller: Caller) -> int:
        """Close the current file and upload now; the number of files queued."""
        return self._backend.upload_now()

    # -- diagnose: the DTC-clear policy ----------------------------------------------------
    @needs(Scope.DIAGNOSE, "clearing trouble codes")
    def request_clear(self, caller: Caller) -> ClearConfirm:
        """Step one: check the clear may go to the car now, and hand out a token."""
        try:
            self._clear_allowed()
        except ServiceError as exc:
            log.info("DTC clear requested by %s refused: %s", caller.name, exc.code)
            repeated = self._repeated_refusals(caller, exc.code)
            if repeated is not None:
                self._record(caller, "refused", refusal=exc, repeated=repeated)
            raise
        token = secrets.token_hex(4)
        caller.clear_token = (token, self._clock.monotonic() + self.token_ttl)
        log.info("DTC clear requested by %s: waiting for confirmation", caller.name)
        return ClearConfirm(token, round(self.token_ttl), CLEAR_WARNING)

    @needs(Scope.DIAGNOSE, "clearing trouble codes")
    def confirm_clear(self, caller: Caller, given: str) -> ClearResult:
        """Step two: the token of step one (single use, whatever comes next), the checks
        again, then mode 04."""
        pending, caller.clear_token = caller.clear_token, None
        now = self._clock.monotonic()
        if (
            pending is None
            or not hmac.compare_digest(pending[0].encode(), given.lower().encode("utf-8"))
            or now > pending[1]
        ):
            log.info(
                "DTC clear confirmation from %s refused: invalid or expired token", caller.name
            )
            # The first step in the caller's own words (each front end names it its way).
            again = _FIRST_STEP.get(caller.front, "DTC CLEAR")
            raise ConfirmInvalid(
                "no such token in this session, or it expired (a token works once, "
                f"for {self.token_ttl:g} s): send {again} again"
            )
        before: DtcReport | None = None
        rid = secrets.token_hex(8)  # the "sending" record and the final one are one record
        try:
            self._clear_allowed()
            # The evidence a clear erases, for the audit record: unreadable, nothing is cleared.
            before = DtcReport.from_mapping(self._backend.read_dtcs(self._dtc_timeout, detail=True))
            # Durable before mode 04 goes out: a power cut during the clear (the ignition
            # turned off) still leaves the evidence, its outcome "sending". Not written (a
            # full or read-only card): nothing is cleared, as when it cannot be read.
            self._record(caller, "sending", before, record_id=rid, required=True)
            result = self._backend.clear_dtcs(self._dtc_timeout)
        except ServiceError as exc:
            log.warning(
                "DTC clear confirmed by %s not done: %s (%s)", caller.name, exc.code, exc.message
            )
            outcome = "refused" if before is None else "failed"
            self._record(caller, outcome, before, refusal=exc, record_id=rid)
            raise
        outcome = "cleared" if result.ok else "not_acknowledged"
        self._record(caller, outcome, before, result, record_id=rid)
        log.warning(
            "DTC clear confirmed by %s sent to the car: the ECU answered %r (%s)",
            caller.name,
            result.answer,
            "acknowledged" if result.ok else "not acknowledged",
        )
        return result

    def _repeated_refusals(self, caller: Caller, code: str) -> int | None:
        """None when this refusal is not recorded (one like it was, less than
        REFUSAL_RECORD_GAP ago); else how many like it went unrecorded before it."""
        now = self._clock.monotonic()
        key = (caller.front, caller.address, code)
        with self._refusals_lock:
            last = self._refusals.get(key)
            if last is not None and now - last[0] < REFUSAL_RECORD_GAP:
                self._refusals[key] = (last[0], last[1] + 1)
                return None
            for k in [k for k, (t, n) in self._refusals.items() if now - t >= REFUSAL_RECORD_GAP]:
                if not self._refusals[k][1]:
                    del self._refusals[k]  # nothing left to count: forget it
            self._refusals[key] = (now, 0)
            return 0 if last is None else last[1]

    def _record(
        self,
        caller: Caller,
        outcome: str,
        before: DtcReport | None = None,
        result: ClearResult | None = None,
        refusal: ServiceError | None = None,
        record_id: str | None = None,
        required: bool = False,
        repeated: int = 0,
    ) -> None:
        """Hand the audit record of a clear (or its refusal) to the audit sink; a failure
        to write it is logged, never raised over the ECU's answer. ``required`` (the record
        written before mode 04): a failure raises :class:`ServerError` instead."""
        if self._audit is None:
            return
        record: dict[str, object] = {
            "id": record_id or secrets.token_hex(8),
            "time": self._backend.now(),
            "outcome": outcome,
            "front_end": caller.front or None,
            "client": caller.address,
            "caller": caller.name,
            "scopes": scope_names(caller.scopes),
            "clear": "mode 04: every ECU's stored and pending codes, freeze frame, readiness",
            "before": None if before is None else before.as_dict(),
            "ecu_answer": None if result is None else result.answer,
            "acknowledged": None if result is None else result.ok,
            "refused": None
            if refusal is None
            else {"code": refusal.code, "message": refusal.message},
        }
        if repeated:
            # Refusals like this one, of the same client, since the last record of them.
            record["repeated_refusals"] = repeated
        try:
            self._audit(record)
        except Exception as exc:
            if required:
                raise ServerError(
                    f"the audit record of the clear could not be written ({exc}): "
                    "nothing was sent to the car"
                ) from exc
            log.exception("the audit record of a DTC clear by %s was not written", caller.name)

    def _clear_allowed(self) -> None:
        """Raise unless a clear may go to the car now."""
        if not self._allow_clear:
            raise Forbidden("DTC CLEAR is disabled (SOCKET_SERVER_ALLOW_DTC_CLEAR=no)")
        if self._backend.obd_state() != "connected":
            raise NotConnected("the OBD adapter is not connected")
        speed = self._speed()
        if speed is None:
            raise VehicleMoving("the speed is unknown: cannot tell the car is stopped")
        if speed > 0:
            raise VehicleMoving(f"the car is moving ({speed:g} km/h): stop first")

    def _speed(self) -> float | None:
        reading = self._backend.values().get("SPEED")
        now = self._clock.monotonic()
        if reading is None or now - reading.at > SPEED_MAX_AGE:
            try:
                reading = self._backend.read("SPEED", self._read_timeout)
            except ServiceError as exc:
                if exc.code == UnknownValue.CODE:
                    return None
                raise
        value = reading.value
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return None
        return float(value) if math.isfinite(value) else None

    # -- helpers ---------------------------------------------------------------------------
    def _catalogue(self) -> Mapping[str, ValueInfo]:
        """The backend's catalogue by name; rebuilt only when the backend gives a new one
        (DaemonBackend hands out the same tuple while nothing changed: GET stays cheap)."""
        listing = self._backend.catalogue()
        seen, index = self._catalogue_index
        if listing is not seen:
            index = {v.name: v for v in listing}
            self._catalogue_index = (listing, index)
        return index

    def _unknown(self, name: str) -> UnknownValue:
        hint = "see SUPPORTED"
        if self._backend.obd_state() != "connected":
            hint = "the adapter is not connected, so what the car supports is not known yet"
        return UnknownValue(f"unknown value {echo(name)!r}: {hint}")


# How each front end asks for a DTC clear's first step (for the message of a bad token).
_FIRST_STEP = {"socket": "DTC CLEAR", "web": "the clear request", "mqtt": "dtc_clear"}


def plain(value: object) -> Plain | bool:
    """A value JSON can carry without surprise: NaN and infinities become null."""
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    return str(value)


def _number(value: float | None) -> float | None:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def dtc_codes(raw: object) -> list[dict[str, str]]:
    """Trouble codes as {"code", "description"} entries, from the link's or python-OBD's
    shapes; anything else is left out."""
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
