"""One-time login links: ``eccm login-link`` makes them, the running daemon takes them.

Nobody types a 43-character secret on a phone. The command and the daemon share nothing
but the configuration, so a link is a token the daemon can check on its own:

    token = base64url(payload || mac)
    payload = version (1 byte) || issued at (ms since the epoch, 8 bytes) || nonce (12 bytes)
    mac = HMAC-SHA256(key, payload)[:16]
    key = HMAC-SHA256(secret, "eccm web login link v1")

- **Who may make one**: whoever holds a secret (the config file is readable by the owner
  only). The key is derived from the secret for this use alone, so a link's MAC is never
  an answer to anything else (the socket's AUTH HMAC, for one). A link made with
  SOCKET_SERVER_SECRET grants every scope, one made with SOCKET_SERVER_READ_SECRET
  ``read`` only: the daemon tries both keys, each in constant time.
- **A few minutes**: valid ``TTL`` seconds after it was made (the command and the daemon
  run on the same machine, on the same system clock); one dated more than ``SKEW`` in the
  future is refused.
- **Single use**: the daemon remembers the nonces it took until they expire. A daemon
  that restarts forgets them, so it also refuses links made before it started: a used
  link cannot come back after a restart (a link made just before one must be made again).
- **Nothing in the log**: the token is a credential for its few minutes; it is never
  logged, and the HTTP access log is off.

Pure: no I/O, time from an injected clock, thread-safe.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
import socket
import struct
import threading
from collections.abc import Iterable

from eccm.clock import Clock
from eccm.service import ALL_SCOPES, READ_ONLY, Scope

TTL = 300.0  # seconds a link is valid
SKEW = 5.0  # a link dated this far in the future is still taken (same machine, same clock)
VERSION = 1
PATH = "/login/"
_CONTEXT = b"eccm web login link v1"
_HEADER = struct.Struct(">BQ")
_NONCE = 12
_MAC = 16
_SIZE = _HEADER.size + _NONCE + _MAC
MAX_TOKEN = 128  # characters: anything longer is not a token, whatever it says
MAX_REMEMBERED = 4096  # nonces taken and not expired yet (each needed the secret)


def _key(secret: str) -> bytes:
    return hmac.new(secret.encode("utf-8"), _CONTEXT, hashlib.sha256).digest()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def mint(secret: str, now: float) -> str:
    """A new login token signed with ``secret``, issued at wall time ``now``."""
    payload = _HEADER.pack(VERSION, round(now * 1000)) + secrets.token_bytes(_NONCE)
    mac = hmac.new(_key(secret), payload, hashlib.sha256).digest()[:_MAC]
    return _b64(payload + mac)


def link(base: str, token: str) -> str:
    """The URL a browser opens: ``base`` (``http://host:port``) and the token."""
    return base.rstrip("/") + PATH + token


def base_url(host: str, port: int, tls: bool) -> str:
    """``http(s)://host:port`` for a listening address (a wildcard: this machine's name)."""
    if host in ("0.0.0.0", "::", ""):
        host = socket.gethostname()
    elif ":" in host:
        host = f"[{host}]"
    return f"{'https' if tls else 'http'}://{host}:{port}"


class LoginLinks:
    """Takes tokens for the running daemon: each at most once, within its validity.

    ``secrets_and_scopes``: the secrets a token may be signed with and what each grants;
    ``started``: wall time the daemon started (tokens issued before it are refused).
    """

    def __init__(
        self,
        secrets_and_scopes: Iterable[tuple[str, frozenset[Scope]]],
        clock: Clock,
        *,
        started: float | None = None,
        ttl: float = TTL,
    ) -> None:
        self._keys = tuple((_key(s), scopes) for s, scopes in secrets_and_scopes if s)
        if not self._keys:
            raise ValueError("login links need a secret")
        self._clock = clock
        self._started = clock.time() if started is None else started
        self._ttl = ttl
        self._used: dict[bytes, float] = {}  # nonce → wall time it expires
        self._lock = threading.Lock()

    @classmethod
    def for_secrets(cls, secret: str, read_secret: str, clock: Clock) -> LoginLinks:
        return cls(((secret, ALL_SCOPES), (read_secret, READ_ONLY)), clock)

    def take(self, token: str) -> frozenset[Scope] | None:
        """The scopes the token grants, once; None if it is not a valid, unused, fresh one."""
        payload, mac = self._decode(token)
        if payload is None:
            return None
        found: frozenset[Scope] | None = None
        for key, scopes in self._keys:  # no early exit: every key costs the same
            right = hmac.new(key, payload, hashlib.sha256).digest()[:_MAC]
            if hmac.compare_digest(right, mac) and found is None:
                found = scopes
        if found is None:
            return None
        version, issued_ms = _HEADER.unpack_from(payload)
        issued = issued_ms / 1000.0
        now = self._clock.time()
        if version != VERSION or issued < self._started or issued > now + SKEW:
            return None
        expires = issued + self._ttl
        if now > expires:
            return None
        nonce = payload[_HEADER.size :]
        with self._lock:
            for n in [n for n, t in self._used.items() if t < now]:
                del self._used[n]
            if nonce in self._used or len(self._used) >= MAX_REMEMBERED:
                return None
            self._used[nonce] = expires
        return found

    @staticmethod
    def _decode(token: str) -> tuple[bytes | None, bytes]:
        if not token or len(token) > MAX_TOKEN:
            return None, b""
        try:
            raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        except (binascii.Error, ValueError):
            return None, b""
        if len(raw) != _SIZE:
            return None, b""
        return raw[:-_MAC], raw[-_MAC:]
