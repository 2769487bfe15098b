"""The control socket protocol (SPEC §5) as a sans-I/O session; h11's Connection is the model.

Bytes from the peer go in with :meth:`Session.receive_data`; :meth:`Session.step` handles at
most one complete line (so that the caller can stop taking requests while replies pile up);
:meth:`Session.tick` handles time: the auth and idle timeouts, an AUTH held back by the
failure delay, WATCH lines. :meth:`Session.data_to_send` hands out the bytes to write. No
socket, no thread, time from an injected clock: the server only moves bytes, and tests drive
a session with a fake clock.

The session is a thin adapter: it turns lines into calls of :class:`eccm.service.Service`
(the one API every front end calls) and typed replies and errors into JSON lines. Rules a
user relies on (scopes, the DTC-clear policy) live in the service; the session keeps what
belongs to the wire: framing, limits, the auth states, WATCH timing.

Framing is hand-written rather than taken from a library: it is a few lines, and the limits
(256 bytes before AUTH, 1024 after, judged on the bytes as they arrive so that 4 MiB without
a newline is never buffered) are the point of it.
"""

from __future__ import annotations

import enum
import json
import logging
import math
import re
import secrets
from collections.abc import Callable, Mapping, Sequence

from eccm import __version__, replies
from eccm.clock import Clock
from eccm.control.authlimit import AuthLimiter, Verdict
from eccm.service import (
    DTC_TIMEOUT,
    READ_TIMEOUT,
    TOKEN_TTL,
    Backend,
    Caller,
    Credentials,
    Scope,
    Service,
    ServiceError,
    ValueInfo,
    echo,
    scope_names,
)

log = logging.getLogger(__name__)

PROTO = 1
LINE_LIMIT_BEFORE_AUTH = 256
LINE_LIMIT_AFTER_AUTH = 1024
AUTH_TIMEOUT = 10.0
IDLE_TIMEOUT = 300.0
WATCH_MIN_INTERVAL = 0.1
WATCH_MAX_INTERVAL = 3600.0
WATCH_DEFAULT_INTERVAL = 1.0
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


class Session:
    """One client connection, from HELLO to close.

    ``service``: the daemon's :class:`Service`, shared by every session (a bare
    :class:`Backend` gets a service of its own, made with ``allow_dtc_clear`` and the
    timeouts given here). ``secret`` grants every scope; ``read_secret`` (if any) ``read``
    only, or ``credentials`` replaces both. ``peer`` names the client in log lines;
    ``address`` (its IP) keys the failure delays. ``plain_auth``: whether ``AUTH <secret>``
    is accepted on this connection (TLS, a loopback peer, or
    SOCKET_SERVER_ALLOW_PLAIN_AUTH=yes) — the server decides.
    """

    def __init__(
        self,
        service: Service | Backend,
        secret: str,
        clock: Clock,
        *,
        read_secret: str = "",
        credentials: Credentials | None = None,
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
        self._credentials = credentials or Credentials(secret, read_secret)
        if not isinstance(service, Service):
            service = Service(
                service,
                clock,
                allow_dtc_clear=allow_dtc_clear,
                read_timeout=read_timeout,
                dtc_timeout=dtc_timeout,
                token_ttl=token_ttl,
            )
        self._service = service
        self._clock = clock
        self.peer = peer
        self._address = address or peer
        self._plain_auth = plain_auth
        self._limiter = limiter
        self._auth_timeout = auth_timeout
        self._idle_timeout = idle_timeout
        # Set once authenticated: who calls the service, with which scopes.
        self._caller: Caller | None = None
        self._granted: frozenset[Scope] | None = None  # what the last checked proof grants
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
        self._watch_names: tuple[str, ...] | None = None  # None: every value
        self._watch_every = WATCH_DEFAULT_INTERVAL
        self._next_live = 0.0
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
        if self._caller is not None:
            self._caller.forget()  # a pending DTC-clear token dies with the session

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
        if retry_after is not None:
            self._paused_until = self._clock.monotonic() + min(retry_after, BUSY_PAUSE_MAX)
        self._send(replies.error(code, message, retry_after))

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
        except ServiceError as exc:
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
        """Whether the proof is right (either secret), keeping the scopes it grants; pure
        and quick (it runs under the limiter's lock)."""
        if method == "hmac":
            self._granted = self._credentials.by_hmac(self.nonce, proof)
        else:
            self._granted = self._credentials.by_plain(proof)
        return self._granted is not None

    def _settle(self, method: str, ok: bool) -> None:
        if ok and self._granted is not None:
            self._caller = Caller(self.peer, self._granted)
            self._fire(Event.AUTH_OK)
            self._last_request = self._clock.monotonic()
            scopes = scope_names(self._caller.scopes)
            log.info(
                "control client %s authenticated (%s) with scopes %s",
                self.peer,
                method,
                ",".join(scopes),
            )
            self._send({"class": "AUTH", "ok": True, "scopes": scopes})
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

    # -- commands: words in, service calls, JSON out ---------------------------------------
    @property
    def caller(self) -> Caller:
        """Who this session is to the service (commands past AUTH only run once set)."""
        assert self._caller is not None, "a command past AUTH before authentication"
        return self._caller

    def _cmd_supported(self, words: list[str], text: str) -> None:
        if len(words) > 1:
            self._error("bad_request", "SUPPORTED takes no argument")
            return
        self._send(replies.supported(self._service.supported(self.caller)))

    def _cmd_get(self, words: list[str], text: str) -> None:
        names = tuple(dict.fromkeys(w.upper() for w in words[1:])) or None
        self._send(replies.values("VALUES", self._service.values(self.caller, names)))

    def _send_values(self, cls: str, names: Sequence[str] | None) -> None:
        try:
            values = self._service.values(self.caller, names, read_missing=False)
        except ServiceError as exc:
            self._error(exc.code, exc.message)
            return
        except Exception:
            log.exception("WATCH values for %s failed", self.peer)
            self._error("server_error", "internal error; the daemon's log has the details")
            return
        self._send(replies.values(cls, values))

    def _cmd_gnss(self, words: list[str], text: str) -> None:
        self._send(replies.gnss(self._service.position(self.caller)))

    def _cmd_status(self, words: list[str], text: str) -> None:
        self._send(replies.status(self._service.status(self.caller)))

    def _cmd_upload(self, words: list[str], text: str) -> None:
        queued = self._service.upload(self.caller)
        log.info("control client %s asked for an upload: %d file(s) queued", self.peer, queued)
        self._send(replies.upload(queued))

    def _cmd_trip(self, words: list[str], text: str) -> None:
        if len(words) > 1:
            self._error("bad_request", "TRIP takes no argument")
            return
        self._send(replies.trip(self._service.trip(self.caller)))

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
        self._service.check_watch(self.caller, names or ())
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
            self._send(replies.dtc(self._service.dtc_report(self.caller)))
        elif args == ["CLEAR"]:
            self._send(replies.confirm(self._service.request_clear(self.caller)))
        elif len(args) == 3 and args[:2] == ["CLEAR", "CONFIRM"]:
            result = self._service.confirm_clear(self.caller, words[3])
            self._send(replies.cleared(result))
        else:
            self._error("bad_request", "DTC, DTC CLEAR or DTC CLEAR CONFIRM <token>")


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
