"""Control socket request lines as typed requests: one dataclass per command (SPEC §5).

:func:`parse` is pure: a line of bytes (its LF or CRLF already cut off) in, a request out,
with the arguments checked as far as the line alone can tell (WATCH's interval, the shape
of DTC and AUTH, no word after a command that takes none, WATCH OFF included). A line that is not a request becomes :class:`Invalid`, carrying the error
to answer. What depends on the session (authenticated yet, plain AUTH allowed, scopes) or on
the car (a name GET cannot read) is judged by the session and the service, not here.

``word`` is the command word, for the session's "before AUTH only AUTH, PING, HELP and QUIT"
gate; ``Invalid.word`` is None for lines that are no command at all (an empty line, an HTTP
request), which are answered whatever the state.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import ClassVar

from eccm.service import echo

WATCH_MIN_INTERVAL = 0.1
WATCH_MAX_INTERVAL = 3600.0
WATCH_DEFAULT_INTERVAL = 1.0

BEFORE_AUTH = frozenset({"AUTH", "PING", "HELP", "QUIT"})
_HTTP_REQUEST = re.compile(r"[A-Z]+ \S+ HTTP/\d(\.\d)?")


@dataclass(frozen=True, slots=True)
class AuthHmac:
    word: ClassVar[str] = "AUTH"
    proof: str  # hex of HMAC-SHA256(key=secret, msg=nonce), as the peer typed it


@dataclass(frozen=True, slots=True)
class AuthPlain:
    word: ClassVar[str] = "AUTH"
    secret: str = field(repr=False)  # never in a log line, not even by accident


@dataclass(frozen=True, slots=True)
class Ping:
    word: ClassVar[str] = "PING"


@dataclass(frozen=True, slots=True)
class Help:
    word: ClassVar[str] = "HELP"


@dataclass(frozen=True, slots=True)
class Quit:
    word: ClassVar[str] = "QUIT"


@dataclass(frozen=True, slots=True)
class Supported:
    word: ClassVar[str] = "SUPPORTED"


@dataclass(frozen=True, slots=True)
class Get:
    word: ClassVar[str] = "GET"
    names: tuple[str, ...] | None  # upper case, each once, in the order asked; None: all


@dataclass(frozen=True, slots=True)
class Gnss:
    word: ClassVar[str] = "GNSS"


@dataclass(frozen=True, slots=True)
class Status:
    word: ClassVar[str] = "STATUS"


@dataclass(frozen=True, slots=True)
class Trip:
    word: ClassVar[str] = "TRIP"


@dataclass(frozen=True, slots=True)
class Upload:
    word: ClassVar[str] = "UPLOAD"


@dataclass(frozen=True, slots=True)
class DtcRead:
    word: ClassVar[str] = "DTC"


@dataclass(frozen=True, slots=True)
class DtcClear:
    word: ClassVar[str] = "DTC"


@dataclass(frozen=True, slots=True)
class DtcConfirm:
    word: ClassVar[str] = "DTC"
    token: str  # as typed: the service compares it case-insensitively


@dataclass(frozen=True, slots=True)
class Watch:
    word: ClassVar[str] = "WATCH"
    names: tuple[str, ...] | None  # None: every logged value
    every: float  # seconds, WATCH_MIN_INTERVAL to WATCH_MAX_INTERVAL


@dataclass(frozen=True, slots=True)
class WatchOff:
    word: ClassVar[str] = "WATCH"


@dataclass(frozen=True, slots=True)
class Invalid:
    """A line that is not a valid request: answer ``code``/``message``, and close the
    connection (saying ``close`` as the reason) when ``close`` is set."""

    word: str | None
    code: str
    message: str
    close: str | None = None


Request = (
    AuthHmac
    | AuthPlain
    | Ping
    | Help
    | Quit
    | Supported
    | Get
    | Gnss
    | Status
    | Trip
    | Upload
    | DtcRead
    | DtcClear
    | DtcConfirm
    | Watch
    | WatchOff
    | Invalid
)


def parse(line: bytes) -> Request:
    """The request of one line (without its LF or CRLF). Command words are
    case-insensitive; odd bytes are replaced, never an exception."""
    text = line.decode("utf-8", "replace").strip()
    words = text.split()
    if not words:
        return Invalid(None, "bad_request", "empty line: try HELP")
    if _HTTP_REQUEST.fullmatch(text):
        return Invalid(
            None,
            "bad_request",
            "this is not an HTTP server: see the ECCM README",
            close="HTTP request",
        )
    word = words[0].upper()
    parser = _PARSERS.get(word)
    if parser is None:
        return Invalid(word, "unknown_command", f"unknown command {echo(words[0])!r}: try HELP")
    return parser(words, text)


def _auth(words: Sequence[str], text: str) -> Request:
    if len(words) < 2:
        return Invalid("AUTH", "bad_request", "AUTH HMAC <hex> or AUTH <secret>")
    if words[1].upper() == "HMAC":
        if len(words) != 3:
            # `AUTH HMAC` and Enter before the paste: a slip, not a guess to count.
            return Invalid("AUTH", "bad_request", "AUTH HMAC <hex of HMAC-SHA256(secret, nonce)>")
        return AuthHmac(words[2])
    return AuthPlain(text.split(None, 1)[1])  # a secret may hold spaces


def _no_argument(request: Request) -> Callable[[Sequence[str], str], Request]:
    """A command that takes no argument: one more word is ``bad_request``, never ignored
    (``UPLOAD now`` must not start an upload as if the word were not there)."""
    word = request.word

    def parse_it(words: Sequence[str], _text: str) -> Request:
        if len(words) > 1:
            return Invalid(word, "bad_request", f"{word} takes no argument")
        return request

    return parse_it


def _names(words: Sequence[str]) -> tuple[str, ...] | None:
    return tuple(dict.fromkeys(w.upper() for w in words)) or None


def _get(words: Sequence[str], _text: str) -> Request:
    return Get(_names(words[1:]))


def _dtc(words: Sequence[str], _text: str) -> Request:
    args = [w.upper() for w in words[1:]]
    if not args:
        return DtcRead()
    if args == ["CLEAR"]:
        return DtcClear()
    if len(args) == 3 and args[:2] == ["CLEAR", "CONFIRM"]:
        return DtcConfirm(words[3])
    return Invalid("DTC", "bad_request", "DTC, DTC CLEAR or DTC CLEAR CONFIRM <token>")


def _watch(words: Sequence[str], _text: str) -> Request:
    args = [w.upper() for w in words[1:]]
    if args[:1] == ["OFF"]:
        if len(args) > 1:  # not a value named OFF: the word after it is the slip
            return Invalid("WATCH", "bad_request", "WATCH OFF takes no argument")
        return WatchOff()
    if "OFF" in args:  # WATCH RPM OFF: one value cannot be stopped, the watch can
        return Invalid(
            "WATCH",
            "bad_request",
            "WATCH OFF alone stops the watch; to watch fewer values, send WATCH with the "
            "names to keep",
        )
    every = WATCH_DEFAULT_INTERVAL
    if "EVERY" in args:
        at = args.index("EVERY")
        if at != len(args) - 2:
            return Invalid("WATCH", "bad_request", "WATCH [NAME ...] [EVERY <seconds>]")
        try:
            # "1_0" is 10 to float(), and so are non-ASCII digits: neither is a number here.
            text = args[at + 1]
            every = float(text) if text.isascii() and "_" not in text else math.nan
        except ValueError:
            every = math.nan
        if not (WATCH_MIN_INTERVAL <= every <= WATCH_MAX_INTERVAL):  # NaN fails too
            return Invalid(
                "WATCH",
                "bad_request",
                f"EVERY {echo(words[at + 2])!r} is not valid: expected seconds from "
                f"{WATCH_MIN_INTERVAL:g} to {WATCH_MAX_INTERVAL:g}",
            )
        args = args[:at]
    return Watch(_names(args), every)


_PARSERS: dict[str, Callable[[Sequence[str], str], Request]] = {
    "AUTH": _auth,
    "PING": _no_argument(Ping()),
    "HELP": _no_argument(Help()),
    "QUIT": _no_argument(Quit()),
    "SUPPORTED": _no_argument(Supported()),
    "GET": _get,
    "GNSS": _no_argument(Gnss()),
    "STATUS": _no_argument(Status()),
    "DTC": _dtc,
    "UPLOAD": _no_argument(Upload()),
    "TRIP": _no_argument(Trip()),
    "WATCH": _watch,
}
COMMANDS = frozenset(_PARSERS)
