"""What each query asks of the service, and the reply it makes: a :class:`Call`.

A call runs where the I/O side decides (:class:`eccm.control.protocol.Session` hands it to
the ``run_call`` it was given): at once for a quick one, on a worker for one that may wait
(``waits``): a value read from the car on demand, DTC read and clear, an upload (which waits
for the recorder to close its file). The session itself never waits: it takes the reply
once the call is done, before any later line, so replies go out in request order.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from eccm import replies
from eccm.control.requests import (
    DtcClear,
    DtcConfirm,
    DtcRead,
    Get,
    Gnss,
    Status,
    Supported,
    Trip,
    Upload,
)
from eccm.service import Caller, ServerError, Service, ServiceError

log = logging.getLogger(__name__)

Reply = dict[str, object]

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

# The requests answered by one call of the service (the others are the session's own).
Query = Supported | Get | Gnss | Status | Trip | Upload | DtcRead | DtcClear | DtcConfirm

INTERNAL_ERROR = "internal error; the daemon's log has the details"


class Call:
    """One query's service call and its reply. :meth:`run` on any thread, once; the
    session reads :attr:`reply` or :attr:`error` after :attr:`done` (an Event makes the
    hand-over between threads safe)."""

    def __init__(self, word: str, peer: str, fn: Callable[[], Reply], *, waits: bool) -> None:
        self.word = word
        self.peer = peer
        self.waits = waits  # may wait on the car or a timeout: not on the session's step
        self._fn = fn
        self._done = threading.Event()
        self.reply: Reply | None = None
        self.error: ServiceError | None = None

    @property
    def done(self) -> bool:
        return self._done.is_set()

    def run(self) -> None:
        try:
            self.reply = self._fn()
        except ServiceError as exc:
            self.error = exc
        except Exception:
            log.exception("control command %s from %s failed", self.word, self.peer)
            self.error = ServerError(INTERNAL_ERROR)
        finally:
            if self.reply is None and self.error is None:  # a BaseException went through
                self.error = ServerError(INTERNAL_ERROR)
            self._done.set()


def run_inline(call: Call) -> None:
    """Run a call in place: for a driver without threads (tests); the server gives each
    connection a worker instead."""
    call.run()


def plan(query: Query, service: Service, caller: Caller, peer: str) -> Call:
    """The call that answers ``query`` for ``caller`` (``peer`` names it in log lines)."""

    def call(fn: Callable[[], Reply], waits: bool = False) -> Call:
        return Call(query.word, peer, fn, waits=waits)

    match query:
        case Supported():
            return call(lambda: replies.supported(service.supported(caller)))
        case Get(names):
            # Only a value that is not logged is read from the car; the rest is at hand.
            waits = service.reads_car(caller, names)
            return call(
                lambda: replies.values("VALUES", service.values(caller, names, read_missing=waits)),
                waits,
            )
        case Gnss():
            return call(lambda: replies.gnss(service.position(caller)))
        case Status():
            return call(lambda: replies.status(service.status(caller)))
        case Trip():
            return call(lambda: replies.trip(service.trip(caller)))
        case Upload():

            def upload() -> Reply:
                queued = service.upload(caller)
                log.info("control client %s asked for an upload: %d file(s) queued", peer, queued)
                return replies.upload(queued)

            return call(upload, waits=True)  # waits for the recorder to close its file
        case DtcRead():
            return call(lambda: replies.dtc(service.dtc_report(caller)), waits=True)
        case DtcClear():  # reads SPEED from the car when the logged one is stale
            return call(lambda: replies.confirm(service.request_clear(caller)), waits=True)
        case DtcConfirm(token):
            return call(lambda: replies.cleared(service.confirm_clear(caller, token)), waits=True)
