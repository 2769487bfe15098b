"""Who is logged in to the web page: cookie sessions and the callers of bearer requests.

A session is what a login (a secret, or a one-time link) opens: a random id (the cookie),
a CSRF token the page sends back with every POST, and the service :class:`Caller` with
the scopes the secret grants (it carries the session's pending DTC-clear token, so a
token works only in the session that asked for it). Sessions end after ``idle`` seconds
unused, ``lifetime`` seconds after the login, or at logout; at most ``limit`` live at a
time (a new login ends the oldest of its own address and scopes, else the oldest of the
address holding the most). A script's ``Authorization: Bearer`` requests get one
caller per address and scope set, so its DTC-clear token lasts from one request to the
next.

Pure: time from an injected clock; used on the web server's event loop only.
"""

from __future__ import annotations

import hashlib
import secrets
from collections import Counter, OrderedDict
from dataclasses import dataclass

from eccm.clock import Clock
from eccm.service import Caller, Scope

IDLE = 12 * 3600.0
LIFETIME = 7 * 86400.0
LIMIT = 64
BEARER_CALLERS = 64


@dataclass(eq=False)
class WebSession:
    sid: str  # the cookie's value
    csrf: str
    caller: Caller
    created: float  # monotonic
    seen: float  # monotonic, the last request


def label(sid: str) -> str:
    """A name for the session in log lines that says nothing about its cookie."""
    return hashlib.sha256(sid.encode("ascii", "replace")).hexdigest()[:8]


class Sessions:
    def __init__(
        self,
        clock: Clock,
        *,
        idle: float = IDLE,
        lifetime: float = LIFETIME,
        limit: int = LIMIT,
    ) -> None:
        self._clock = clock
        self._idle = idle
        self._lifetime = lifetime
        self._limit = limit
        self._by_id: OrderedDict[str, WebSession] = OrderedDict()  # oldest login first
        self._bearers: OrderedDict[tuple[str, frozenset[Scope]], Caller] = OrderedDict()

    def __len__(self) -> int:
        return len(self._by_id)

    def open(self, scopes: frozenset[Scope], address: str) -> WebSession:
        self._expire()
        while len(self._by_id) >= self._limit:
            self.close(self._victim(scopes, address))
        sid = secrets.token_urlsafe(32)
        now = self._clock.monotonic()
        caller = Caller(f"web {address} session {label(sid)}", scopes, front="web", address=address)
        session = WebSession(sid, secrets.token_urlsafe(32), caller, now, now)
        self._by_id[sid] = session
        return session

    def get(self, sid: str | None) -> WebSession | None:
        """The live session of this cookie (its idle time starts again), or None."""
        if not sid:
            return None
        session = self._by_id.get(sid)
        if session is None:
            return None
        now = self._clock.monotonic()
        if self._expired(session, now):
            self.close(sid)
            return None
        session.seen = now
        return session

    def close(self, sid: str) -> None:
        session = self._by_id.pop(sid, None)
        if session is not None:
            session.caller.forget()  # a pending DTC-clear token dies with the session

    def bearer(self, address: str, scopes: frozenset[Scope]) -> Caller:
        """The caller of a script's bearer requests from ``address`` with these scopes."""
        key = (address, scopes)
        caller = self._bearers.pop(key, None)
        if caller is None:
            caller = Caller(f"web {address} (bearer)", scopes, front="web", address=address)
        self._bearers[key] = caller  # most recent last
        while len(self._bearers) > BEARER_CALLERS:
            self._bearers.popitem(last=False)[1].forget()
        return caller

    def _victim(self, scopes: frozenset[Scope], address: str) -> str:
        """The session a new login from ``address`` with ``scopes`` ends when all are taken.

        Not simply the oldest: 64 logins with the read secret (a passenger's script) would
        log the owner out. The oldest session of the same address and scopes goes first, so
        a flood of logins only ends its own sessions; else the oldest of the address that
        holds the most.
        """
        same = [
            sid
            for sid, v in self._by_id.items()
            if v.caller.address == address and v.caller.scopes == scopes
        ]
        if same:
            return same[0]
        per_address = Counter(v.caller.address for v in self._by_id.values())
        crowd = per_address.most_common(1)[0][0]
        return next(sid for sid, v in self._by_id.items() if v.caller.address == crowd)

    def _expired(self, session: WebSession, now: float) -> bool:
        return now - session.seen > self._idle or now - session.created > self._lifetime

    def _expire(self) -> None:
        now = self._clock.monotonic()
        for sid in [s for s, v in self._by_id.items() if self._expired(v, now)]:
            self.close(sid)
