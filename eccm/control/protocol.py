"""The control socket protocol (SPEC §5) as a sans-I/O session; h11's Connection is the model.

Bytes from the peer go in with :meth:`Session.receive_data`; :meth:`Session.step` handles at
most one complete line (so that the caller can stop taking requests while replies pile up);
:meth:`Session.tick` handles time: the auth and idle timeouts, an AUTH held back by the
failure delay, WATCH lines. :meth:`Session.data_to_send` hands out the bytes to write. No
socket, no thread, time from an injected clock: the server only moves bytes, and tests drive
a session with a fake clock.

Framing is hand-written rather than taken from a library: it is a few lines, and the limits
(256 bytes before AUTH, 1024 after, judged on the bytes as they arrive so that 4 MiB without
a newline is never buffered) are the point of it.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import json
import logging
import math
import re
import secrets
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from eccm import __version__
from eccm.clock import Clock
from eccm.control.authlimit import AuthLimiter, Verdict
from eccm.control.backend import Backend, Refused, ValueInfo, plain
from eccm.sample import Reading, iso_utc

log = logging.getLogger(__name__)

PROTO = 1
LINE_LIMIT_BEFORE_AUTH = 256
LINE_LIMIT_AFTER_AUTH = 1024
AUTH_TIMEOUT = 10.0
IDLE_TIMEOUT = 300.0
TOKEN_TTL = 30.0
WATCH_MIN_INTERVAL = 0.1
WATCH_MAX_INTERVAL = 3600.0
WATCH_DEFAULT_INTERVAL = 1.0
READ_TIMEOUT = 5.0  # an on-demand GET of one value
DTC_TIMEOUT = 15.0  # modes 03 + 07 + 01 01 on a slow K-line car
SPEED_MAX_AGE = 2.0  # older than this, the logged SPEED is read again before a clear
ECHO_LIMIT = 40
# After a `busy` reply the session takes its next line only after the reply's retry_after, at
# most this long: a client that asks again at once would otherwise cost a reply per request,
# thousands a second of CPU taken from logging. TCP pushes back on its sends meanwhile.
BUSY_PAUSE_MAX = 1.0

ERROR_CODES = (
    "bad_request",
    "unknown_command",
    "unknown_value",
    "noauth",
    "auth_failed",
    "confirm_invalid",
    "forbidden",
    "vehicle_moving",
    "line_too_long",
    "too_many_clients",
    "not_connected",
    "obd_timeout",
    "busy",
    "server_error",
)

HELP = (
    "AUTH HMAC <hex of HMAC-SHA256(key=secret, msg=nonce)>",
    "AUTH <secret>",
    "SUPPORTED",
    "GET [NAME ...]",
    "GNSS",
    "STATUS",
    "DTC",
    "DTC CLEAR",
    "DTC CLEAR CONFIRM <token>",
    "UPLOAD",
    "TRIP",
    "WATCH [NAME ...] [EVERY <seconds>]",
    "WATCH OFF",
    "PING",
    "HELP",
    "QUIT",
)
_BEFORE_AUTH = frozenset({"AUTH", "PING", "HELP", "QUIT"})
_CLEAR_WARNING = "clears stored codes and resets readiness monitors"
_HTTP_REQUEST = re.compile(r"[A-Z]+ \S+ HTTP/\d(\.\d)?")
_TLS_RECORD = b"\x16\x03"  # a TLS handshake record: a TLS client on the plain-text port


class State(enum.Enum):
    AUTHENTICATING = "authenticating"  # HELLO sent, waiting for AUTH
    READY = "ready"
    WATCHING = "watching"  # READY, and LIVE lines are due every interval
    CLOSED = "closed"


class Event(enum.Enum):
    AUTH_OK = "auth_ok"
    AUTH_FAILED = "auth_failed"
    WATCH_ON = "watch_on"
    WATCH_OFF = "watch_off"
    CLOSE = "close"  # QUIT, a line too long, a timeout, the peer gone, not our protocol


# h11's _state.py is the model: every legal move is listed; anything else is a bug in the
# session, not something a peer can cause.
TRANSITIONS: Mapping[tuple[State, Event], State] = {
    (State.AUTHENTICATING, Event.AUTH_OK): State.READY,
    (State.AUTHENTICATING, Event.AUTH_FAILED): State.CLOSED,
    (State.AUTHENTICATING, Event.CLOSE): State.CLOSED,
    (State.READY, Event.WATCH_ON): State.WATCHING,
    (State.READY, Event.WATCH_OFF): State.READY,
    (State.READY, Event.CLOSE): State.CLOSED,
    (State.WATCHING, Event.WATCH_ON): State.WATCHING,
    (State.WATCHING, Event.WATCH_OFF): State.READY,
    (State.WATCHING, Event.CLOSE): State.CLOSED,
    (State.CLOSED, Event.CLOSE): State.CLOSED,
}


def encode(obj: Mapping[str, object]) -> bytes:
    """One reply line. ``allow_nan=False``: a reply is valid JSON whatever the values were
    (the values were made plain before; this is the last guard)."""
    return (
        json.dumps(obj, allow_nan=False, ensure_ascii=True, separators=(",", ":")).encode("ascii")
        + b"\n"
    )


def echo(text: str, limit: int = ECHO_LIMIT) -> str:
    """Peer text to quote in a message: cut short (JSON escaping does the rest)."""
    return text if len(text) <= limit else text[:limit] + "..."


class Session:
    """One client connection, from HELLO to close.

    ``peer`` names the client in log lines; ``address`` (its IP) keys the failure delays.
    ``plain_auth``: whether ``AUTH <secret>`` is accepted on this connection (TLS, a
    loopback peer, or SOCKET_SERVER_ALLOW_PLAIN_AUTH=yes) — the server decides.
    """

    def __init__(
        self,
        backend: Backend,
        secret: str,
        clock: Clock,
        *,
        peer: str = "client",
        address: str = "",
        plain_auth: bool = False,
        allow_dtc_clear: bool = True,
        limiter: AuthLimiter | None = None,
        auth_timeout: float = AUTH_TIMEOUT,
        idle_timeout: float = IDLE_TIMEOUT,
        read_timeout: float = READ_TIMEOUT,
        dtc_timeout: float = DTC_TIMEOUT,
        token_ttl: float = TOKEN_TTL,
        nonce: str | None = None,
    ) -> None:
        if not secret:
            # config.py refuses this already; an empty key would make every HMAC "right".
            raise ValueError("the control socket needs a secret")
        self._backend = backend
        self._key = secret.encode("utf-8")
        self._clock = clock
        self.peer = peer
        self._address = address or peer
        self._plain_auth = plain_auth
        self._allow_clear = allow_dtc_clear
        self._limiter = limiter
        self._auth_timeout = auth_timeout
        self._idle_timeout = idle_timeout
        self._read_timeout = read_timeout
        self._dtc_timeout = dtc_timeout
        self._token_ttl = token_ttl
        self.nonce = nonce or secrets.token_hex(16)
        self.state = State.AUTHENTICATING
        self.close_reason = ""
        self._in = bytearray()
        self._out = bytearray()
        self._eof = False
        self._seen_first_line = False
        now = clock.monotonic()
        self._auth_deadline = now + auth_timeout
        self._last_request = now
        self._held_auth: tuple[str, str] | None = None  # (method, proof) held back
        self._held_until = 0.0
        self._paused_until = 0.0  # after a busy reply: no line is taken before this
        self._token: tuple[str, float] | None = None  # (token, expiry, monotonic)
        self._watch_names: tuple[str, ...] | None = None  # None: every value
        self._watch_every = WATCH_DEFAULT_INTERVAL
        self._next_live = 0.0
        self._catalogue_seen: object = None
        self._catalogue_map: Mapping[str, ValueInfo] = {}
        self._handlers: dict[str, Callable[[list[str], str], None]] = {
            "AUTH": self._cmd_auth,
            "PING": self._cmd_ping,
            "HELP": self._cmd_help,
            "QUIT": self._cmd_quit,
            "SUPPORTED": self._cmd_supported,
            "GET": self._cmd_get,
            "GNSS": self._cmd_gnss,
            "STATUS": self._cmd_status,
            "DTC": self._cmd_dtc,
            "UPLOAD": self._cmd_upload,
            "TRIP": self._cmd_trip,
            "WATCH": self._cmd_watch,
        }
        methods = ["hmac-sha256", *(["plain"] if plain_auth else [])]
        self._send(
            {
                "class": "HELLO",
                "proto": PROTO,
                "version": __version__,
                "nonce": self.nonce,
                "auth": methods,
            }
        )

    # -- the I/O side's interface ------------------------------------------------------
    @property
    def closed(self) -> bool:
        return self.state is State.CLOSED

    @property
    def line_limit(self) -> int:
        if self.state is State.AUTHENTICATING:
            return LINE_LIMIT_BEFORE_AUTH
        return LINE_LIMIT_AFTER_AUTH

    @property
    def wants_data(self) -> bool:
        """False while the session cannot take more bytes yet (a line waits, an AUTH is
        held back, or it is closed): the server stops reading, TCP pushes back."""
        return (
            not self.closed
            and not self._eof
            and self._held_auth is None
            and not self._paused()
            and b"\n" not in self._in
            and len(self._in) <= self.line_limit + 1
        )

    def receive_data(self, data: bytes) -> None:
        """Bytes from the peer; ``b""`` means the peer closed its side."""
        if self.closed:
            return
        if data:
            self._in += data
        else:
            self._eof = True

    def step(self) -> bool:
        """Handle at most one complete line (or the end of input); False if nothing to do."""
        if self.closed or self._held_auth is not None or self._paused():
            return False
        if not self._seen_first_line and self._in[:2] == _TLS_RECORD:
            self._error("bad_request", "this port speaks plain text, not TLS")
            self._close("TLS client on the plain-text port")
            return True
        limit = self.line_limit
        nl = self._in.find(b"\n")
        if nl < 0:
            if len(self._in) > limit + 1:  # +1: the CR of a CRLF may be all that is missing
                self._too_long(limit)
                return True
            if self._eof and self.state is not State.WATCHING:
                # A watcher may half-close and keep reading, as `echo WATCH | nc` does.
                self._close("peer closed")
                return True
            return False
        line = bytes(self._in[:nl])
        del self._in[: nl + 1]
        if line.endswith(b"\r"):
            line = line[:-1]
        if len(line) > limit:
            self._too_long(limit)
            return True
        self._seen_first_line = True
        self._last_request = self._clock.monotonic()
        self._handle(line)
        return True

    def tick(self) -> None:
        """Act on time: timeouts, a held-back AUTH, a due WATCH line."""
        if self.closed:
            return
        now = self._clock.monotonic()
        if self._held_auth is not None:
            if now >= self._held_until:
                method, proof = self._held_auth
                self._held_auth = None
                self._attempt(method, proof)  # may be held again (the global ceiling)
            return
        if self.state is State.AUTHENTICATING:
            if now >= self._auth_deadline:
                log.info("control client %s did not authenticate in time", self.peer)
                self._close("auth timeout")
        elif self.state is State.READY:
            if now - self._last_request >= self._idle_timeout:
                log.info(
                    "control client %s idle for %.0f s: closing",
                    self.peer,
                    now - self._last_request,
                )
                self._close("idle")
        elif self.state is State.WATCHING and now >= self._next_live:
            self._send_values("LIVE", self._watch_names)
            self._next_live += self._watch_every
            if self._next_live <= now:  # fell behind (a slow backend): no burst to catch up
                self._next_live = now + self._watch_every

    def next_deadline(self) -> float | None:
        """Monotonic time :meth:`tick` wants to be called at (None: no timer)."""
        if self.closed:
            return None
        if self._held_auth is not None:
            return self._held_until
        if self._paused():
            pause = self._paused_until
            if self.state is State.WATCHING:
                return min(pause, self._next_live)
            return pause
        if self.state is State.AUTHENTICATING:
            return self._auth_deadline
        if self.state is State.READY:
            return self._last_request + self._idle_timeout
        return self._next_live

    def abort(self, reason: str) -> None:
        """Close without a reply: the connection is gone or the server stops (an AUTH held
        back for it is given up, so that its address may try again)."""
        self._close(reason)

    def _paused(self) -> bool:
        return self._paused_until > 0.0 and self._clock.monotonic() < self._paused_until

    def data_to_send(self) -> bytes:
        out = bytes(self._out)
        self._out.clear()
        return out

    # -- plumbing ----------------------------------------------------------------------
    def _fire(self, event: Event) -> None:
        try:
            self.state = TRANSITIONS[(self.state, event)]
        except KeyError:
            raise RuntimeError(f"no transition from {self.state} on {event}") from None

    def _close(self, reason: str) -> None:
        if not self.closed:
            self.close_reason = reason
            log.debug("control client %s: closing (%s)", self.peer, reason)
        self._fire(Event.CLOSE)
        self._in.clear()
        if self._held_auth is not None and self._limiter is not None:
            self._limiter.cancel(self._address, self)  # frees the address for its next try
        self._held_auth = None
        self._token = None

    def _send(self, obj: Mapping[str, object]) -> None:
        try:
            self._out += encode(obj)
        except (TypeError, ValueError):
            log.exception("control reply %s is not valid JSON", obj.get("class"))
            self._out += encode(
                {"class": "ERROR", "code": "server_error", "message": "reply not encodable"}
            )

    def _error(self, code: str, message: str, retry_after: float | None = None) -> None:
        assert code in ERROR_CODES, code
        reply: dict[str, object] = {"class": "ERROR", "code": code, "message": message}
        if retry_after is not None:
            reply["retry_after"] = retry_after  # busy: seconds before asking again
            self._paused_until = self._clock.monotonic() + min(retry_after, BUSY_PAUSE_MAX)
        self._send(reply)

    def _too_long(self, limit: int) -> None:
        self._error("line_too_long", f"lines are limited to {limit} bytes here")
        self._close("line too long")

    def _handle(self, line: bytes) -> None:
        text = line.decode("utf-8", "replace").strip()
        words = text.split()
        if not words:
            self._error("bad_request", "empty line: try HELP")
            return
        if _HTTP_REQUEST.fullmatch(text):
            self._error("bad_request", "this is not an HTTP server: see the ECCM README")
            self._close("HTTP request")
            return
        command = words[0].upper()
        if self.state is State.AUTHENTICATING and command not in _BEFORE_AUTH:
            self._error(
                "noauth", "authenticate first: AUTH HMAC <hex of HMAC-SHA256(secret, nonce)>"
            )
            return
        handler = self._handlers.get(command)
        if handler is None:
            self._error("unknown_command", f"unknown command {echo(words[0])!r}: try HELP")
            return
        try:
            handler(words, text)
        except Refused as exc:
            self._error(exc.code, exc.message, exc.retry_after)
        except Exception:
            log.exception("control command %s from %s failed", command, self.peer)
            self._error("server_error", "internal error; the daemon's log has the details")

    # -- AUTH, PING, HELP, QUIT ----------------------------------------------------------
    def _cmd_auth(self, words: list[str], text: str) -> None:
        if self.state is not State.AUTHENTICATING:
            self._error("bad_request", "already authenticated")
            return
        if len(words) < 2:
            self._error("bad_request", "AUTH HMAC <hex> or AUTH <secret>")
            return
        if words[1].upper() == "HMAC":
            if len(words) != 3:
                # `AUTH HMAC` and Enter before the paste: a slip, not a guess to count.
                self._error("bad_request", "AUTH HMAC <hex of HMAC-SHA256(secret, nonce)>")
                return
            method, proof = "hmac", words[2]
        else:
            if not self._plain_auth:
                # Not compared, so not a guess: no failure counted, nothing learnt.
                self._error(
                    "forbidden",
                    "AUTH <secret> is refused on a plain connection from the network: "
                    "use AUTH HMAC <hex of HMAC-SHA256(secret, nonce)>",
                )
                return
            method, proof = "plain", text.split(None, 1)[1]
        self._attempt(method, proof)

    def _attempt(self, method: str, proof: str) -> None:
        """Check the proof now, or hold it back, or refuse it, as the limiter says."""
        if self._limiter is None:
            self._settle(method, self._check(method, proof))
            return
        result = self._limiter.attempt(
            self._address, lambda: self._check(method, proof), holder=self
        )
        if result.verdict is Verdict.HELD:
            self._held_auth = (method, proof)
            self._held_until = result.until
        elif result.verdict is Verdict.REFUSED:
            # Not checked, so not a guess: the connection stays, its auth timeout runs.
            left = max(1, math.ceil(result.until - self._clock.monotonic()))
            self._error(
                "busy",
                f"another AUTH from your address is held back for {left} s after failed "
                "attempts: send AUTH again after it",
                retry_after=float(left),
            )
        else:
            self._settle(method, result.verdict is Verdict.ACCEPTED)

    def _check(self, method: str, proof: str) -> bool:
        """Whether the proof is right; pure and quick (it runs under the limiter's lock)."""
        given = proof.encode("utf-8")
        if method == "hmac":
            expected = hmac.new(self._key, self.nonce.encode("ascii"), hashlib.sha256)
            return hmac.compare_digest(expected.hexdigest().encode("ascii"), given.lower())
        # Digests of both, so that the comparison does not leak the secret's length.
        return hmac.compare_digest(
            hashlib.sha256(self._key).digest(), hashlib.sha256(given).digest()
        )

    def _settle(self, method: str, ok: bool) -> None:
        if ok:
            self._fire(Event.AUTH_OK)
            self._last_request = self._clock.monotonic()
            log.info("control client %s authenticated (%s)", self.peer, method)
            self._send({"class": "AUTH", "ok": True})
            return
        # The limiter logs failures as one line a minute; a line each would let a guesser
        # fill the log (and the SD card).
        log.log(
            logging.DEBUG if self._limiter is not None else logging.WARNING,
            "control client %s failed to authenticate (%s)",
            self.peer,
            method,
        )
        self._error("auth_failed", "wrong secret")
        self.close_reason = "auth failed"
        self._fire(Event.AUTH_FAILED)
        self._in.clear()

    def _cmd_ping(self, words: list[str], text: str) -> None:
        self._send({"class": "PONG"})

    def _cmd_help(self, words: list[str], text: str) -> None:
        self._send({"class": "HELP", "commands": list(HELP), "errors": list(ERROR_CODES)})

    def _cmd_quit(self, words: list[str], text: str) -> None:
        self._close("QUIT")

    # -- values --------------------------------------------------------------------------
    def _cmd_supported(self, words: list[str], text: str) -> None:
        if len(words) > 1:
            self._error("bad_request", "SUPPORTED takes no argument")
            return
        self._send(
            {
                "class": "SUPPORTED",
                "values": [
                    {
                        "name": v.name,
                        "unit": v.unit,
                        "description": v.description,
                        "logged": v.logged,
                    }
                    for v in self._backend.catalogue()
                ],
            }
        )

    def _cmd_get(self, words: list[str], text: str) -> None:
        names = tuple(dict.fromkeys(w.upper() for w in words[1:])) or None
        values = self._collect(names, read_missing=True)
        self._send({"class": "VALUES", "time": iso_utc(self._backend.now()), "values": values})

    def _collect(
        self, names: Sequence[str] | None, *, read_missing: bool
    ) -> dict[str, dict[str, object]]:
        """name → {value, unit, age_ms}; None names: every logged value."""
        current = self._backend.values()
        catalogue = self._catalogue()
        now = self._clock.monotonic()
        if names is None:
            names = [n for n, v in catalogue.items() if v.logged]
            names += [n for n in current if n not in catalogue]
        out: dict[str, dict[str, object]] = {}
        for name in names:
            reading = current.get(name)
            if reading is None:
                info = catalogue.get(name)
                if info is None:
                    raise self._unknown(name)
                if not info.logged and read_missing:
                    reading = self._backend.read(name, self._read_timeout)
                else:
                    out[name] = {"value": None, "unit": info.unit, "age_ms": None}
                    continue
            out[name] = _entry(reading, now)
        return out

    def _catalogue(self) -> Mapping[str, ValueInfo]:
        """The backend's catalogue by name; rebuilt only when the backend gives a new one
        (DaemonBackend hands out the same tuple while nothing changed: GET stays cheap)."""
        listing = self._backend.catalogue()
        if listing is not self._catalogue_seen:
            self._catalogue_seen = listing
            self._catalogue_map = {v.name: v for v in listing}
        return self._catalogue_map

    def _unknown(self, name: str) -> Refused:
        hint = "see SUPPORTED"
        if self._backend.obd_state() != "connected":
            hint = "the adapter is not connected, so what the car supports is not known yet"
        return Refused("unknown_value", f"unknown value {echo(name)!r}: {hint}")

    def _send_values(self, cls: str, names: Sequence[str] | None) -> None:
        try:
            values = self._collect(names, read_missing=False)
        except Refused as exc:
            self._error(exc.code, exc.message)
            return
        except Exception:
            log.exception("WATCH values for %s failed", self.peer)
            self._error("server_error", "internal error; the daemon's log has the details")
            return
        self._send({"class": cls, "time": iso_utc(self._backend.now()), "values": values})

    def _cmd_gnss(self, words: list[str], text: str) -> None:
        fix = self._backend.gnss()
        if fix is None or not fix.has_position:
            self._send({"class": "GNSS", "fix": False})
            return
        self._send(
            {
                "class": "GNSS",
                "fix": True,
                "time": None if fix.time_utc is None else iso_utc(fix.time_utc),
                "lat": plain(fix.latitude),
                "lon": plain(fix.longitude),
                "alt": plain(fix.altitude),
                "speed": plain(fix.speed),
                "track": plain(fix.track),
                "satellites": fix.satellites,
                "hdop": plain(fix.hdop),
                "quality": fix.quality,
                "age_ms": max(0, round((self._clock.monotonic() - fix.received) * 1000)),
            }
        )

    def _cmd_status(self, words: list[str], text: str) -> None:
        status = {k: _plain_tree(v) for k, v in self._backend.status().items()}
        self._send({"class": "STATUS", **status})

    def _cmd_upload(self, words: list[str], text: str) -> None:
        queued = self._backend.upload_now()
        log.info("control client %s asked for an upload: %d file(s) queued", self.peer, queued)
        self._send({"class": "UPLOAD", "queued": queued})

    def _cmd_trip(self, words: list[str], text: str) -> None:
        if len(words) > 1:
            self._error("bad_request", "TRIP takes no argument")
            return
        report = {k: _plain_tree(v) for k, v in self._backend.trip().items()}
        self._send({"class": "TRIP", **report})

    def _cmd_watch(self, words: list[str], text: str) -> None:
        args = [w.upper() for w in words[1:]]
        if args == ["OFF"]:
            self._fire(Event.WATCH_OFF)
            self._watch_names = None
            self._send({"class": "WATCH", "ok": True, "watching": False})
            return
        every = WATCH_DEFAULT_INTERVAL
        if "EVERY" in args:
            at = args.index("EVERY")
            if at != len(args) - 2:
                self._error("bad_request", "WATCH [NAME ...] [EVERY <seconds>]")
                return
            try:
                every = float(args[at + 1])
            except ValueError:
                every = math.nan
            if not (WATCH_MIN_INTERVAL <= every <= WATCH_MAX_INTERVAL):
                self._error(
                    "bad_request",
                    f"EVERY takes seconds from {WATCH_MIN_INTERVAL:g} to {WATCH_MAX_INTERVAL:g}",
                )
                return
            args = args[:at]
        names = tuple(dict.fromkeys(args)) or None
        if names is not None:
            catalogue = self._catalogue()
            for name in names:
                info = catalogue.get(name)
                if info is None:
                    raise self._unknown(name)
                if not info.logged:
                    # Streaming it would poll the car on every line and slow the logging.
                    self._error(
                        "bad_request",
                        f"{echo(name)} is not logged: WATCH streams logged values "
                        f"(GET {echo(name)} reads it once)",
                    )
                    return
        self._watch_names, self._watch_every = names, every
        self._next_live = self._clock.monotonic()  # the first LIVE line right away
        self._fire(Event.WATCH_ON)
        self._send(
            {
                "class": "WATCH",
                "ok": True,
                "watching": True,
                "values": list(names) if names else None,
                "every": every,
            }
        )

    # -- DTC -----------------------------------------------------------------------------
    def _cmd_dtc(self, words: list[str], text: str) -> None:
        args = [w.upper() for w in words[1:]]
        if not args:
            report = self._backend.read_dtcs(self._dtc_timeout)
            self._send({"class": "DTC", **{k: _plain_tree(v) for k, v in report.items()}})
        elif args == ["CLEAR"]:
            self._clear_request()
        elif len(args) == 3 and args[:2] == ["CLEAR", "CONFIRM"]:
            self._clear_confirm(words[3])
        else:
            self._error("bad_request", "DTC, DTC CLEAR or DTC CLEAR CONFIRM <token>")

    def _clear_allowed(self) -> None:
        """Raise Refused unless a clear may go to the car now."""
        if not self._allow_clear:
            raise Refused("forbidden", "DTC CLEAR is disabled (SOCKET_SERVER_ALLOW_DTC_CLEAR=no)")
        if self._backend.obd_state() != "connected":
            raise Refused("not_connected", "the OBD adapter is not connected")
        speed = self._speed()
        if speed is None:
            raise Refused("vehicle_moving", "the speed is unknown: cannot tell the car is stopped")
        if speed > 0:
            raise Refused("vehicle_moving", f"the car is moving ({speed:g} km/h): stop first")

    def _speed(self) -> float | None:
        reading = self._backend.values().get("SPEED")
        now = self._clock.monotonic()
        if reading is None or now - reading.at > SPEED_MAX_AGE:
            try:
                reading = self._backend.read("SPEED", self._read_timeout)
            except Refused as exc:
                if exc.code == "unknown_value":
                    return None
                raise
        value = reading.value
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return None
        return float(value) if math.isfinite(value) else None

    def _clear_request(self) -> None:
        try:
            self._clear_allowed()
        except Refused as exc:
            log.info("DTC clear requested by %s refused: %s", self.peer, exc.code)
            raise
        token = secrets.token_hex(4)
        self._token = (token, self._clock.monotonic() + self._token_ttl)
        log.info("DTC clear requested by %s: waiting for confirmation", self.peer)
        self._send(
            {
                "class": "CONFIRM",
                "token": token,
                "expires_in": round(self._token_ttl),
                "warning": _CLEAR_WARNING,
            }
        )

    def _clear_confirm(self, given: str) -> None:
        pending, self._token = self._token, None  # single use, whatever comes next
        now = self._clock.monotonic()
        if (
            pending is None
            or not hmac.compare_digest(pending[0].encode(), given.lower().encode("utf-8"))
            or now > pending[1]
        ):
            log.info("DTC clear confirmation from %s refused: invalid or expired token", self.peer)
            self._error(
                "confirm_invalid",
                "no such token in this session, or it expired (a token works once, "
                f"for {self._token_ttl:g} s): send DTC CLEAR again",
            )
            return
        try:
            self._clear_allowed()
            result = self._backend.clear_dtcs(self._dtc_timeout)
        except Refused as exc:
            log.warning(
                "DTC clear confirmed by %s not done: %s (%s)", self.peer, exc.code, exc.message
            )
            raise
        log.warning(
            "DTC clear confirmed by %s sent to the car: the ECU answered %r (%s)",
            self.peer,
            result.answer,
            "acknowledged" if result.ok else "not acknowledged",
        )
        self._send({"class": "DTC_CLEARED", "ok": result.ok, "ecu": result.answer})


def _entry(reading: Reading, now: float) -> dict[str, object]:
    return {
        "value": plain(reading.value),
        "unit": reading.unit,
        "age_ms": max(0, round((now - reading.at) * 1000)),
    }


def _plain_tree(value: object) -> Any:
    """Backend data made JSON-safe all the way down (NaN → null, odd objects → text)."""
    if isinstance(value, Mapping):
        return {str(k): _plain_tree(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain_tree(v) for v in value]
    return plain(value)


__all__ = [
    "ERROR_CODES",
    "HELP",
    "TRANSITIONS",
    "AuthLimiter",
    "Event",
    "Session",
    "State",
    "ValueInfo",
    "echo",
    "encode",
]
