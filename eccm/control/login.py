"""AUTH on one connection: the nonce, the proof checked against the secrets, the failure
limiter's verdict, an attempt held back until the limiter lets it be checked, and the log
lines of it all.

Pure apart from the shared :class:`AuthLimiter` (thread-safe); time from an injected clock.
The session turns each :data:`Outcome` into a reply and a state.
"""

from __future__ import annotations

import logging
import math
import secrets
from dataclasses import dataclass

from eccm.clock import Clock
from eccm.control.authlimit import AuthLimiter, Verdict
from eccm.service import Credentials, Scope, scope_names

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Granted:
    method: str  # "hmac" or "plain"
    scopes: frozenset[Scope]


@dataclass(frozen=True, slots=True)
class Failed:
    method: str


@dataclass(frozen=True, slots=True)
class Held:
    """Not checked yet: the limiter holds it back until ``until`` (monotonic)."""

    until: float


@dataclass(frozen=True, slots=True)
class Refused:
    """Not checked, so not a guess: nothing counted, nothing learnt; the connection stays
    and its auth timeout runs."""

    code: str
    message: str
    retry_after: float | None = None


Outcome = Granted | Failed | Held | Refused


class Login:
    """The AUTH side of one connection. ``peer`` names it in log lines; ``address`` keys
    the failure delays; ``limiter`` None checks every attempt at once (tests);
    ``plain_auth``: whether ``AUTH <secret>`` is accepted here (the server decides)."""

    def __init__(
        self,
        credentials: Credentials,
        clock: Clock,
        *,
        peer: str,
        address: str,
        limiter: AuthLimiter | None,
        plain_auth: bool,
        nonce: str | None = None,
    ) -> None:
        self._credentials = credentials
        self._clock = clock
        self._peer = peer
        self._address = address
        self._limiter = limiter
        self.methods = ["hmac-sha256", *(["plain"] if plain_auth else [])]  # for HELLO
        self.nonce = nonce or secrets.token_hex(16)
        self._held: tuple[str, str] | None = None  # (method, proof) held back
        self._held_until = 0.0
        self._granted: frozenset[Scope] | None = None  # what the last checked proof grants

    @property
    def held_until(self) -> float | None:
        """When a held-back attempt may be checked (None: none is held)."""
        return self._held_until if self._held is not None else None

    def attempt(self, method: str, proof: str) -> Outcome:
        """Check the proof now, or hold it back, or refuse it, as the limiter says."""
        if method == "plain" and "plain" not in self.methods:
            return Refused(
                "forbidden",
                "AUTH <secret> is refused on a plain connection from the network: "
                "use AUTH HMAC <hex of HMAC-SHA256(secret, nonce)>",
            )
        if self._limiter is None:
            return self._settle(method, self._check(method, proof))
        result = self._limiter.attempt(
            self._address, lambda: self._check(method, proof), holder=self
        )
        if result.verdict is Verdict.HELD:
            self._held = (method, proof)
            self._held_until = result.until
            return Held(result.until)
        if result.verdict is Verdict.REFUSED:
            left = max(1, math.ceil(result.until - self._clock.monotonic()))
            return Refused(
                "busy",
                f"another AUTH from your address is held back for {left} s after failed "
                "attempts: send AUTH again after it",
                float(left),
            )
        return self._settle(method, result.verdict is Verdict.ACCEPTED)

    def release(self) -> Outcome | None:
        """The held-back attempt, tried again once its time has come (it may be held
        again: the global ceiling); None while it waits or when none is held."""
        if self._held is None or self._clock.monotonic() < self._held_until:
            return None
        method, proof = self._held
        self._held = None
        return self.attempt(method, proof)

    def cancel(self) -> None:
        """The connection ends: a held-back attempt is given up, which frees its address
        for the next try."""
        if self._held is not None and self._limiter is not None:
            self._limiter.cancel(self._address, self)
        self._held = None

    def _check(self, method: str, proof: str) -> bool:
        """Whether the proof is right (either secret), keeping the scopes it grants; pure
        and quick (it runs under the limiter's lock)."""
        if method == "hmac":
            self._granted = self._credentials.by_hmac(self.nonce, proof)
        else:
            self._granted = self._credentials.by_plain(proof)
        return self._granted is not None

    def _settle(self, method: str, ok: bool) -> Outcome:
        if ok and self._granted is not None:
            log.info(
                "control client %s authenticated (%s) with scopes %s",
                self._peer,
                method,
                ",".join(scope_names(self._granted)),
            )
            return Granted(method, self._granted)
        # The limiter logs failures as one line a minute; a line each would let a guesser
        # fill the log (and the SD card).
        log.log(
            logging.DEBUG if self._limiter is not None else logging.WARNING,
            "control client %s failed to authenticate (%s)",
            self._peer,
            method,
        )
        return Failed(method)
