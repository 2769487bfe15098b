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

import logging
import secrets
from collections import Counter, OrderedDict
from dataclasses import dataclass

from eccm.clock import Clock
from eccm.service import Caller, Scope
from eccm.web.keep import Kept, SessionFile, cookie_key

log = logging.getLogger(__name__)

IDLE = 12 * 3600.0
LIFETIME = 7 * 86400.0
LIMIT = 64
BEARER_CALLERS = 64
# A used session's "seen" reaches the file this often at most: a page polls every second,
# and an SD card should not be written that often for a 12-hour idle limit.
SEEN_EVERY = 600.0


@dataclass(eq=False)
class WebSession:
    sid: str  # the cookie's value ("" for a session read back from the file: never sent)
    csrf: str
    caller: Caller
    created: float  # monotonic
    seen: float  # monotonic, the last request
    key: str = ""  # cookie_key(sid): what the session is held (and kept) under
    saved_seen: float = 0.0  # monotonic "seen" the file has


class Sessions:
    def __init__(
        self,
        clock: Clock,
        *,
        idle: float = IDLE,
        lifetime: float = LIFETIME,
        limit: int = LIMIT,
        keep: SessionFile | None = None,
    ) -> None:
        self._clock = clock
        self._idle = idle
        self._lifetime = lifetime
        self._limit = limit
        self._keep = keep
        # cookie_key -> session, oldest login first
        self._by_id: OrderedDict[str, WebSession] = OrderedDict()
        self._bearers: OrderedDict[tuple[str, frozenset[Scope]], Caller] = OrderedDict()
        if keep is not None:
            self._restore(keep.load())

    def __len__(self) -> int:
        return len(self._by_id)

    def open(self, scopes: frozenset[Scope], address: str) -> WebSession:
        self._expire()
        while len(self._by_id) >= self._limit:
            self._close_key(self._victim(scopes, address), save=False)
        sid = secrets.token_urlsafe(32)
        key = cookie_key(sid)
        now = self._clock.monotonic()
        caller = Caller(f"web {address} session {key[:8]}", scopes, front="web", address=address)
        session = WebSession(sid, secrets.token_urlsafe(32), caller, now, now, key, now)
        self._by_id[key] = session
        self._save()
        return session

    def get(self, sid: str | None) -> WebSession | None:
        """The live session of this cookie (its idle time starts again), or None."""
        if not sid:
            return None
        key = cookie_key(sid)
        session = self._by_id.get(key)
        if session is None:
            return None
        now = self._clock.monotonic()
        if self._expired(session, now):
            self._close_key(key)
            return None
        session.seen = now
        if now - session.saved_seen >= SEEN_EVERY:
            self._save()
        return session

    def close(self, sid: str) -> None:
        self._close_key(cookie_key(sid))

    def is_open(self, session: WebSession) -> bool:
        """Whether ``session`` is still logged in (not logged out, displaced by newer
        logins, or expired). Its idle time does not start again: for a response that
        outlives the request that opened it (the live WebSocket)."""
        if self._by_id.get(session.key) is not session:
            return False
        return not self._expired(session, self._clock.monotonic())

    def _close_key(self, key: str, *, save: bool = True) -> None:
        session = self._by_id.pop(key, None)
        if session is not None:
            session.caller.forget()  # a pending DTC-clear token dies with the session
            if save:
                self._save()

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

    # -- keeping -------------------------------------------------------------------------
    def _restore(self, kept: list[Kept]) -> None:
        """The sessions of the last run, their wall-clock times made monotonic again."""
        wall, now = self._clock.time(), self._clock.monotonic()
        for k in sorted(kept, key=lambda k: k.created)[-self._limit :]:
            # A wall clock that went back since (no RTC) counts as no time passed.
            created = now - max(0.0, wall - k.created)
            seen = now - max(0.0, wall - k.seen)
            caller = Caller(
                f"web {k.address} session {k.key[:8]}", k.scopes, front="web", address=k.address
            )
            session = WebSession("", k.csrf, caller, created, seen, k.key, seen)
            if not self._expired(session, now):
                self._by_id[k.key] = session
        if self._by_id:
            log.info("web page: %d session(s) of the last run kept", len(self._by_id))

    def _save(self) -> None:
        if self._keep is None:
            return
        wall, now = self._clock.time(), self._clock.monotonic()
        for session in self._by_id.values():
            session.saved_seen = session.seen
        self._keep.save(
            Kept(
                s.key,
                s.csrf,
                s.caller.scopes,
                s.caller.address or "",
                wall - (now - s.created),
                wall - (now - s.seen),
            )
            for s in self._by_id.values()
        )

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
        for key in [k for k, v in self._by_id.items() if self._expired(v, now)]:
            self._close_key(key, save=False)  # open() writes the file next
