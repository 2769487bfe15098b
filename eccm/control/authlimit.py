"""Failed authentications, limited: one limiter shared by every front end (the control
socket; the web page's login is to use the same instance, so that a guesser gains nothing
by switching door).

Pure: no socket, no thread, time from an injected clock; thread-safe. The rules:

- **Per address**: after the n-th failure in a row from an address, its next attempt is
  checked no sooner than ``min(cap, base * 2**(n-1))`` seconds after that failure, right or
  wrong: delaying only wrong answers would let a client that gives up early guess at full
  speed. A success resets the address.
- **One pending attempt per address**: while one attempt from an address is held back,
  another from it is refused at once (not checked, not counted). Otherwise every
  connection an address may open would be released together when the delay ends.
- **Who is one address**: loopback (127.0.0.0/8, ::1, ::ffff:127.x.y.z) is one address,
  since any local process may take any of them; an IPv6 host is its /64.
- **A global ceiling**: at most ``per_minute`` failures in any 60 s across every address;
  beyond it every attempt, from any address, right or wrong, waits until the window has
  room, so rotating addresses (a LAN's /16, IPv6 /64s) buys no more guesses.
- **The log**: the first failure of a quiet spell is logged at once, the rest are counted
  and logged as one line a minute (the count, the addresses, bounded).

An attempt is checked inside the limiter (:meth:`AuthLimiter.attempt` calls ``verify``
under its lock), so that "may this be checked now" and "it failed" are one step: two
threads cannot both find an address clean and both check a guess.
"""

from __future__ import annotations

import enum
import ipaddress
import logging
import threading
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass

from eccm.backoff import Backoff
from eccm.clock import Clock

log = logging.getLogger(__name__)

# 30 failures a minute across every address. The owner mistyping never comes near it,
# and one address alone is slowed far below it by its own delays (7 failures take 63 s,
# then one a minute). Under an attack from many addresses, a held-back owner waits about
# 60/30 = 2 s per guess held ahead of theirs; at most SOCKET_SERVER_MAX_CLIENTS
# connections (8) hold one each, so ~16 s at worst. Lower would lock the owner out longer;
# higher would give the rotation more guesses for nothing. 43,200 guesses a day against a
# random secret of 32+ characters (required off loopback) is no threat.
FAILURES_PER_MINUTE = 30
WINDOW = 60.0
REPORT_EVERY = 60.0
# A held-back attempt whose holder has not come back this long after its time is taken
# as abandoned (a connection dropped without telling us): the address is freed.
STALE_AFTER = 30.0
LOG_ADDRESSES = 5  # addresses named in one log line; the rest are counted
LOOPBACK = "loopback"


def address_key(host: str) -> str:
    """Who a peer is, for fairness and failure delays: its IPv4 address, or the /64 of
    its IPv6 address (one host on a LAN may take any address of its /64 at will)."""
    try:
        ip = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return host
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        if not ip.is_loopback:
            return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)


def limiter_key(address: str) -> str:
    """:func:`address_key`, with every loopback address folded into one."""
    key = address_key(address)
    try:
        net = ipaddress.ip_network(key, strict=False)
    except ValueError:
        return key  # not an address (a test's name for a peer): taken as it is
    return LOOPBACK if net.is_loopback else key


class Verdict(enum.Enum):
    ACCEPTED = "accepted"  # checked, and right
    REJECTED = "rejected"  # checked, and wrong
    HELD = "held"  # not checked yet: try again at ``until``
    REFUSED = "refused"  # not checked: another attempt from the address is held until ``until``


@dataclass(frozen=True)
class Attempt:
    verdict: Verdict
    until: float = 0.0  # monotonic; HELD and REFUSED only


class AuthLimiter:
    """The limits above; one instance shared by every session of every front end."""

    def __init__(
        self,
        clock: Clock,
        base: float = 1.0,
        cap: float = 60.0,
        *,
        per_minute: int = FAILURES_PER_MINUTE,
        forget_after: float = 3600.0,
        max_addresses: int = 4096,
        report_every: float = REPORT_EVERY,
    ) -> None:
        if per_minute < 1:
            raise ValueError("per_minute must be at least 1")
        self._clock = clock
        self._template = Backoff(base=base, factor=2.0, cap=cap)
        self._per_minute = per_minute
        self._forget_after = forget_after
        self._max = max_addresses
        self._report_every = report_every
        self._lock = threading.Lock()
        self._entries: dict[str, tuple[Backoff, float]] = {}  # key → (backoff, failed at)
        self._pending: dict[str, tuple[object, float]] = {}  # key → (holder, until)
        self._window: deque[float] = deque()  # times of the failures of the last WINDOW s
        self._failures: Counter[str] = Counter()  # not logged yet, by key
        self._refused = 0  # not logged yet
        self._since = 0.0  # the first failure not logged yet
        self._logged_at: float | None = None

    # -- the one call a front end makes ---------------------------------------------------
    def attempt(self, address: str, verify: Callable[[], bool], holder: object) -> Attempt:
        """Check an authentication from ``address`` now, or say when it may be.

        ``verify`` compares the proof (quick, pure: it runs under the limiter's lock).
        ``holder`` stands for the attempt (the session): HELD makes it the address's
        pending attempt, and the same holder calls again at ``until``. A holder that gives
        up calls :meth:`cancel`.
        """
        key = limiter_key(address)
        now = self._clock.monotonic()
        with self._lock:
            pending = self._pending.get(key)
            if pending is not None and pending[0] is not holder:
                if now <= pending[1] + STALE_AFTER:
                    self._refused += 1
                    return Attempt(Verdict.REFUSED, pending[1])
                del self._pending[key]  # its holder never came back
            until = max(self._address_release(key, now), self._global_release(now))
            if until > now:
                self._pending[key] = (holder, until)
                return Attempt(Verdict.HELD, until)
            self._pending.pop(key, None)
            ok = verify()
            if ok:
                self._entries.pop(key, None)
                return Attempt(Verdict.ACCEPTED)
            self._record_failure(key, now)
            line = self._line_due(now)
        if line is not None:
            log.warning("%s", line)
        return Attempt(Verdict.REJECTED)

    def cancel(self, address: str, holder: object) -> None:
        """The held-back attempt of ``holder`` is given up (its connection closed)."""
        key = limiter_key(address)
        with self._lock:
            pending = self._pending.get(key)
            if pending is not None and pending[0] is holder:
                del self._pending[key]

    def report(self) -> None:
        """Log the failures counted but not logged yet, if a line is due (call it now and
        then: the count of the last minute of an attack is otherwise logged only with
        the next failure)."""
        with self._lock:
            line = self._line_due(self._clock.monotonic())
        if line is not None:
            log.warning("%s", line)

    # -- for callers that check by themselves, and tests ---------------------------------
    def wait(self, address: str) -> float:
        """Seconds before an attempt from ``address`` may be checked (0: now)."""
        key = limiter_key(address)
        now = self._clock.monotonic()
        with self._lock:
            until = max(self._address_release(key, now), self._global_release(now))
        return max(0.0, until - now)

    def failed(self, address: str) -> None:
        key = limiter_key(address)
        now = self._clock.monotonic()
        with self._lock:
            self._record_failure(key, now)
            line = self._line_due(now)
        if line is not None:
            log.warning("%s", line)

    def succeeded(self, address: str) -> None:
        with self._lock:
            self._entries.pop(limiter_key(address), None)

    # -- under the lock ------------------------------------------------------------------
    def _address_release(self, key: str, now: float) -> float:
        entry = self._entries.get(key)
        if entry is None:
            return now
        backoff, at = entry
        if now - at > self._forget_after:
            del self._entries[key]
            return now
        return at + backoff.delay()

    def _global_release(self, now: float) -> float:
        while self._window and self._window[0] <= now - WINDOW:
            self._window.popleft()
        if len(self._window) < self._per_minute:
            return now
        return self._window[0] + WINDOW

    def _record_failure(self, key: str, now: float) -> None:
        backoff = self._entries.pop(key, (self._template, now))[0].failed()
        if len(self._entries) >= self._max:
            # Bounded memory against a sweep of addresses: forget the oldest failure.
            oldest = min(self._entries, key=lambda a: self._entries[a][1])
            del self._entries[oldest]
        self._entries[key] = (backoff, now)
        self._window.append(now)
        while len(self._window) > self._per_minute:
            self._window.popleft()
        if not self._failures:
            self._since = now
        self._failures[key] += 1

    def _line_due(self, now: float) -> str | None:
        if not self._failures:
            return None
        if self._logged_at is not None and now - self._logged_at < self._report_every:
            return None
        total = sum(self._failures.values())
        named = self._failures.most_common(LOG_ADDRESSES)
        who = ", ".join(f"{key} ({n})" for key, n in named)
        if len(self._failures) > len(named):
            who += f" and {len(self._failures) - len(named)} more address(es)"
        span = now - self._since
        line = f"authentication failed {total} time(s)"
        if span >= 1.0:
            line += f" in the last {span:.0f} s"
        line += f", from {who}"
        if self._refused:
            line += f"; {self._refused} more refused unchecked (another was held back)"
        if total == 1:
            line += "; further failures are logged once a minute"
        self._failures.clear()
        self._refused = 0
        self._logged_at = now
        return line


__all__ = [
    "FAILURES_PER_MINUTE",
    "LOOPBACK",
    "Attempt",
    "AuthLimiter",
    "Verdict",
    "address_key",
    "limiter_key",
]
