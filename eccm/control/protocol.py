"""The control socket protocol (SPEC §5) as a sans-I/O session; h11's Connection is the model.

Bytes from the peer go in with :meth:`Session.receive_data`; :meth:`Session.step` handles at
most one complete line (so that the caller can stop taking requests while replies pile up);
:meth:`Session.tick` handles time: the auth and idle timeouts, an AUTH held back by the
failure delay, WATCH lines. :meth:`Session.data_to_send` hands out the bytes to write. No
socket, no thread, time from an injected clock: the server only moves bytes, and tests drive
a session with a fake clock.

The session is a thin adapter, in layers: :mod:`~eccm.control.framing` cuts lines (with the
limits), :mod:`~eccm.control.requests` parses each into a typed request,
:mod:`~eccm.control.login` judges AUTH, :mod:`~eccm.control.commands` turns a query into a
call of :class:`eccm.service.Service` (the one API every front end calls) and its reply
(:mod:`eccm.replies`). What is left here is the wire's state: the auth states, limits and
timeouts, WATCH timing, and the order of replies.

**It never waits on the car inside step().** A call that may wait (an on-demand read, DTC
read and clear, an upload) is handed to ``run_call`` (the server: the connection's worker
thread); until it is done no further line is taken, so replies keep the order of the
requests, while WATCH lines and timers go on. ``run_call`` defaults to running in place,
for drivers without threads.
"""

from __future__ import annotations

import enum
import json
import logging
from collections.abc import Callable, Mapping

from eccm import __version__, replies
from eccm.clock import Clock
from eccm.control.authlimit import AuthLimiter
from eccm.control.commands import ERROR_CODES, HELP, INTERNAL_ERROR, Call, plan, run_inline
from eccm.control.framing import Framing, LineReader
from eccm.control.login import Failed, Granted, Held, Login, Outcome, Refused
from eccm.control.requests import (
    BEFORE_AUTH,
    WATCH_DEFAULT_INTERVAL,
    WATCH_MAX_INTERVAL,
    WATCH_MIN_INTERVAL,
    AuthHmac,
    AuthPlain,
    Help,
    Invalid,
    Ping,
    Quit,
    Request,
    Watch,
    WatchOff,
    parse,
)
from eccm.service import (
    Backend,
    Caller,
    Credentials,
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
# After a `busy` reply the session takes its next line only after the reply's retry_after, at
# most this long: a client that asks again at once would otherwise cost a reply per request,
# thousands a second of CPU taken from logging. TCP pushes back on its sends meanwhile.
BUSY_PAUSE_MAX = 1.0


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


class _Watch:
    """A WATCH: which values, how often, when the next LIVE line is due."""

    def __init__(self, names: tuple[str, ...] | None, every: float, now: float) -> None:
        self.names = names  # None: every logged value
        self.every = every
        self.next_live = now  # the first LIVE line right away

    def reply(self) -> dict[str, object]:
        every, names = self.every, self.names
        values = list(names) if names else None
        return {"class": "WATCH", "ok": True, "watching": True, "values": values, "every": every}

    def live(self, service: Service, caller: Caller) -> dict[str, object]:
        """The LIVE line due now (never a read from the car), or the error instead."""
        try:
            return replies.values("LIVE", service.values(caller, self.names, read_missing=False))
        except ServiceError as exc:
            return replies.error(exc.code, exc.message)
        except Exception:
            log.exception("WATCH values for %s failed", caller.name)
            return replies.error("server_error", INTERNAL_ERROR)

    def sent(self, now: float) -> None:
        self.next_live += self.every
        if self.next_live <= now:  # fell behind (a slow backend): no burst to catch up
            self.next_live = now + self.every


class Session:
    """One client connection, from HELLO to close.

    ``service``: the daemon's :class:`Service`, shared by every session (a bare
    :class:`Backend` gets a service of its own, with the defaults). ``secret`` grants every scope; ``read_secret`` (if any) ``read``
    only, or ``credentials`` replaces both. ``peer`` names the client in log lines;
    ``address`` (its IP) keys the failure delays. ``plain_auth``: whether ``AUTH <secret>``
    is accepted on this connection (TLS, a loopback peer, or
    SOCKET_SERVER_ALLOW_PLAIN_AUTH=yes) — the server decides. ``run_call``: where a call
    that may wait runs (it must call :meth:`Call.run` once, on any thread).
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
        limiter: AuthLimiter | None = None,
        auth_timeout: float = AUTH_TIMEOUT,
        idle_timeout: float = IDLE_TIMEOUT,
        nonce: str | None = None,
        run_call: Callable[[Call], None] = run_inline,
    ) -> None:
        self._service = service if isinstance(service, Service) else Service(service, clock)
        self._clock = clock
        self.peer = peer
        self._login = Login(
            credentials or Credentials(secret, read_secret),
            clock,
            peer=peer,
            address=address or peer,
            limiter=limiter,
            plain_auth=plain_auth,
            nonce=nonce,
        )
        self._idle_timeout = idle_timeout
        self._run_call = run_call
        self._caller: Caller | None = None  # set once authenticated: scopes, name in logs
        self.state = State.AUTHENTICATING
        self.close_reason = ""
        self._reader = LineReader()
        self._out = bytearray()
        now = clock.monotonic()
        self._auth_deadline = now + auth_timeout
        self._last_request = now
        self._paused_until = 0.0  # after a busy reply: no line is taken before this
        self._watch: _Watch | None = None
        self._call: Call | None = None  # a call running elsewhere; its reply comes next
        hello = {"class": "HELLO", "proto": PROTO, "version": __version__, "nonce": self.nonce}
        self._send({**hello, "auth": self._login.methods})

    # -- the I/O side's interface ------------------------------------------------------
    @property
    def nonce(self) -> str:
        return self._login.nonce

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
        """False while the session cannot take more bytes yet (a line waits, a call runs,
        an AUTH is held back, or it is closed): the server stops reading, TCP pushes back."""
        return (
            not self.closed
            and self._call is None
            and self._login.held_until is None
            and not self._paused()
            and self._reader.wants(self.line_limit)
        )

    def receive_data(self, data: bytes) -> None:
        """Bytes from the peer; ``b""`` means the peer closed its side."""
        if not self.closed:
            self._reader.feed(data)

    def step(self) -> bool:
        """Handle at most one complete line, the end of input, or the reply of a call that
        is done; False if there is nothing to do now."""
        if self.closed or self._login.held_until is not None or self._paused():
            return False
        if self._call is not None:
            if not self._call.done:
                return False
            self._collect(self._call)
            return True
        got = self._reader.next_line(self.line_limit)
        if got is Framing.TLS:
            self._error("bad_request", "this port speaks plain text, not TLS")
            self._close("TLS client on the plain-text port")
        elif got is Framing.TOO_LONG:
            self._error("line_too_long", f"lines are limited to {self.line_limit} bytes here")
            self._close("line too long")
        elif got is None:
            if not self._reader.eof or self.state is State.WATCHING:
                # A watcher may half-close and keep reading, as `echo WATCH | nc` does.
                return False
            self._close("peer closed")
        else:
            self._last_request = self._clock.monotonic()
            self._handle(parse(got))
        return True

    def tick(self) -> None:
        """Act on time: timeouts, a held-back AUTH, a due WATCH line."""
        if self.closed:
            return
        now = self._clock.monotonic()
        if self._login.held_until is not None:
            outcome = self._login.release()
            if outcome is not None:
                self._settle(outcome)
            return
        if self.state is State.AUTHENTICATING:
            if now >= self._auth_deadline:
                log.info("control client %s did not authenticate in time", self.peer)
                self._close("auth timeout")
        elif self.state is State.READY:
            idle = now - self._last_request
            if self._call is None and idle >= self._idle_timeout:
                log.info("control client %s idle for %.0f s: closing", self.peer, idle)
                self._close("idle")
        elif self._watch is not None and now >= self._watch.next_live:
            self._send(self._watch.live(self._service, self.caller))
            self._watch.sent(now)

    def next_deadline(self) -> float | None:
        """Monotonic time :meth:`tick` wants to be called at (None: no timer)."""
        if self.closed:
            return None
        held = self._login.held_until
        if held is not None:
            return held
        live = self._watch.next_live if self._watch is not None else None
        if self._paused():
            return self._paused_until if live is None else min(self._paused_until, live)
        if self.state is State.AUTHENTICATING:
            return self._auth_deadline
        if self.state is State.READY:
            return None if self._call is not None else self._last_request + self._idle_timeout
        return live

    def abort(self, reason: str) -> None:
        """Close without a reply: the connection is gone or the server stops (an AUTH held
        back for it is given up, so that its address may try again; the reply of a call
        still running is dropped)."""
        self._close(reason)

    def data_to_send(self) -> bytes:
        out = bytes(self._out)
        self._out.clear()
        return out

    @property
    def caller(self) -> Caller:
        """Who this session is to the service (commands past AUTH only run once set)."""
        assert self._caller is not None, "a command past AUTH before authentication"
        return self._caller

    # -- plumbing ----------------------------------------------------------------------
    def _paused(self) -> bool:
        return self._paused_until > 0.0 and self._clock.monotonic() < self._paused_until

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
        self._reader.clear()
        self._login.cancel()
        self._call = None
        if self._caller is not None:
            self._caller.forget()  # a pending DTC-clear token dies with the session

    def _send(self, obj: Mapping[str, object]) -> None:
        try:
            self._out += encode(obj)
        except (TypeError, ValueError):
            log.exception("control reply %s is not valid JSON", obj.get("class"))
            self._out += encode(replies.error("server_error", "reply not encodable"))

    def _error(self, code: str, message: str, retry_after: float | None = None) -> None:
        assert code in ERROR_CODES, code
        if retry_after is not None:
            self._paused_until = self._clock.monotonic() + min(retry_after, BUSY_PAUSE_MAX)
        self._send(replies.error(code, message, retry_after))

    # -- requests ----------------------------------------------------------------------
    def _handle(self, request: Request) -> None:
        if isinstance(request, Invalid) and request.word is None:
            self._invalid(request)  # not a command at all: the same answer in any state
        elif self.state is State.AUTHENTICATING and request.word not in BEFORE_AUTH:
            self._error(
                "noauth", "authenticate first: AUTH HMAC <hex of HMAC-SHA256(secret, nonce)>"
            )
        elif request.word == "AUTH" and self.state is not State.AUTHENTICATING:
            self._error("bad_request", "already authenticated")
        else:
            try:
                self._dispatch(request)
            except ServiceError as exc:
                self._error(exc.code, exc.message, exc.retry_after)
            except Exception:
                log.exception("control command %s from %s failed", request.word, self.peer)
                self._error("server_error", INTERNAL_ERROR)

    def _invalid(self, request: Invalid) -> None:
        self._error(request.code, request.message)
        if request.close is not None:
            self._close(request.close)

    def _dispatch(self, request: Request) -> None:
        match request:
            case Invalid():
                self._invalid(request)
            case AuthHmac(proof):
                self._settle(self._login.attempt("hmac", proof))
            case AuthPlain(secret):
                self._settle(self._login.attempt("plain", secret))
            case Ping():
                self._send({"class": "PONG"})
            case Help():
                self._send({"class": "HELP", "commands": list(HELP), "errors": list(ERROR_CODES)})
            case Quit():
                self._close("QUIT")
            case Watch(names, every):
                self._service.check_watch(self.caller, names or ())
                self._watch = _Watch(names, every, self._clock.monotonic())
                self._fire(Event.WATCH_ON)
                self._send(self._watch.reply())
            case WatchOff():
                self._fire(Event.WATCH_OFF)
                self._watch = None
                self._send({"class": "WATCH", "ok": True, "watching": False})
            case _:
                call = plan(request, self._service, self.caller, self.peer)
                if call.waits:
                    self._call = call
                    self._run_call(call)
                else:
                    call.run()
                if call.done:  # run in place: the reply goes out now
                    self._collect(call)

    def _collect(self, call: Call) -> None:
        self._call = None
        if call.error is not None:
            self._error(call.error.code, call.error.message, call.error.retry_after)
        elif call.reply is not None:
            self._send(call.reply)

    # -- AUTH --------------------------------------------------------------------------
    def _settle(self, outcome: Outcome) -> None:
        match outcome:
            case Granted(_method, scopes):
                self._caller = Caller(self.peer, scopes, front="socket", address=self.peer)
                self._fire(Event.AUTH_OK)
                self._last_request = self._clock.monotonic()
                self._send({"class": "AUTH", "ok": True, "scopes": scope_names(scopes)})
            case Failed():
                self._error("auth_failed", "wrong secret")
                self.close_reason = "auth failed"
                self._fire(Event.AUTH_FAILED)
                self._reader.clear()
            case Held():
                pass  # answered when the limiter lets it be checked (tick)
            case Refused(code, message, retry_after):
                self._error(code, message, retry_after)


__all__ = [
    "ERROR_CODES",
    "HELP",
    "TRANSITIONS",
    "WATCH_DEFAULT_INTERVAL",
    "WATCH_MAX_INTERVAL",
    "WATCH_MIN_INTERVAL",
    "AuthLimiter",
    "Call",
    "Event",
    "Session",
    "State",
    "ValueInfo",
    "echo",
    "encode",
]
