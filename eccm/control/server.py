"""The control socket's listener: TCP or TLS 1.2+, one protocol session per connection.

This module owns the life cycle and the accept loop; admission (who may come in, whom a
newcomer displaces) is ``admission.py``, everything done on one accepted socket (TLS
sniffing and handshake, the byte pump, the worker for calls that wait on the car, the clean
close) is ``connection.py``, the protocol itself ``protocol.py``.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import select
import socket
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from eccm.clock import Clock, SystemClock
from eccm.control.admission import Admission, Slot
from eccm.control.authlimit import FAILURES_PER_MINUTE, AuthLimiter
from eccm.control.authlimit import address_key as address_key
from eccm.control.connection import Connection, Rejecter, Shared
from eccm.control.protocol import AUTH_TIMEOUT, IDLE_TIMEOUT
from eccm.control.settings import ControlSettings
from eccm.control.throttle import LogThrottle
from eccm.errors import ConfigError
from eccm.listen import listen_backlog
from eccm.service import Backend, Credentials, Service
from eccm.tls import server_context

if TYPE_CHECKING:
    from eccm.config import Config

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Limits:
    auth_timeout: float = AUTH_TIMEOUT
    idle_timeout: float = IDLE_TIMEOUT
    max_unread: int = 64 * 1024  # a watcher that leaves this much unread is dropped
    failure_base: float = 1.0  # first failure delay; doubles per failure from an address
    failure_cap: float = 60.0
    failures_per_minute: int = FAILURES_PER_MINUTE  # across every address


def is_loopback(host: str) -> bool:
    try:
        ip = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped.is_loopback
    return ip.is_loopback


def _wake(sock: socket.socket, how: int) -> None:
    """Shut a socket another thread is blocked on, so that it wakes up.

    The plain socket's shutdown even for a TLS socket: ``SSLSocket.shutdown`` would also
    drop the TLS state under the feet of the thread that uses it.
    """
    with contextlib.suppress(OSError):
        socket.socket.shutdown(sock, how)


class ControlServer:
    """Listens on SOCKET_SERVER_BIND:SOCKET_SERVER_PORT once :meth:`start` is called.

    ``service``: the daemon's service API, shared with the other front ends (one of this
    server's own over a bare ``Backend``, with SOCKET_SERVER_ALLOW_DTC_CLEAR).
    ``credentials``: the secrets and their scopes, shared likewise (None: from the config:
    SOCKET_SERVER_SECRET with every scope, SOCKET_SERVER_READ_SECRET with ``read`` only).
    ``port``/``bind`` override the settings (tests use port 0: see :attr:`address`).
    ``limiter``: the failed-authentication limiter to share with another front end (one
    of this server's own, from ``limits``, if None).
    """

    @classmethod
    def from_config(
        cls, cfg: Config, service: Service | Backend, clock: Clock | None = None, **options: Any
    ) -> ControlServer:
        """A server of ``cfg``'s socket keys (nothing of the server sees the rest)."""
        return cls(ControlSettings.from_config(cfg), service, clock, **options)

    def __init__(
        self,
        settings: ControlSettings,
        service: Service | Backend,
        clock: Clock | None = None,
        *,
        credentials: Credentials | None = None,
        bind: str | None = None,
        port: int | None = None,
        limits: Limits | None = None,
        limiter: AuthLimiter | None = None,
    ) -> None:
        if not settings.secret:
            raise ConfigError(
                "SOCKET_SERVER_SECRET is required for the control socket: make one with "
                "`eccm gen-secret`"
            )
        self._settings = settings
        self._clock: Clock = clock or SystemClock()
        if not isinstance(service, Service):
            service = Service(service, self._clock, allow_dtc_clear=settings.allow_dtc_clear)
        if credentials is None:
            try:
                credentials = Credentials(settings.secret, settings.read_secret)
            except ValueError as exc:  # config.py refuses these already
                raise ConfigError(f"control socket secrets: {exc}") from None
        self._bind = settings.bind if bind is None else bind
        self._port = settings.port if port is None else port
        limits = limits or Limits()
        ctx = None
        if settings.tls_cert:
            ctx = server_context(settings.tls_cert, settings.tls_key, "SOCKET_SERVER")
        self._ssl = ctx
        self._admission = Admission(settings.max_clients)
        self._stopping = threading.Event()
        self._shared = Shared(
            service=service,
            credentials=credentials,
            # Shared with the web page's login when given, so that switching door gains nothing.
            limiter=limiter
            or AuthLimiter(
                self._clock,
                base=limits.failure_base,
                cap=limits.failure_cap,
                per_minute=limits.failures_per_minute,
            ),
            clock=self._clock,
            admission=self._admission,
            throttle=LogThrottle(self._clock),
            stopping=self._stopping,
            tls=ctx,
            auth_timeout=limits.auth_timeout,
            idle_timeout=limits.idle_timeout,
            max_unread=limits.max_unread,
        )
        self._rejecter = Rejecter(settings.max_clients, ctx, self._stopping)
        self._listener: socket.socket | None = None
        self._accept_thread: threading.Thread | None = None
        # Closing a socket does not reliably wake a thread blocked on it: stop() writes here.
        self._wake_r, self._wake_w = socket.socketpair()

    # -- life cycle --------------------------------------------------------------------
    def start(self) -> None:
        family = socket.AF_INET6 if ":" in self._bind else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((self._bind, self._port))
            sock.listen(listen_backlog())
        except OSError as exc:
            sock.close()
            raise ConfigError(
                f"the control socket cannot listen on {self._bind}:{self._port} "
                f"(SOCKET_SERVER_BIND / SOCKET_SERVER_PORT): {exc.strerror or exc}; "
                "is another eccm running, or is the address not on this machine?"
            ) from exc
        sock.setblocking(False)
        self._listener = sock
        self._accept_thread = threading.Thread(
            target=self._accept_loop, name="control-accept", daemon=True
        )
        self._accept_thread.start()
        host, port = self.address
        log.info(
            "control socket listening on %s:%d (%s, at most %d clients)",
            host,
            port,
            "TLS" if self._ssl else "plain TCP",
            self._settings.max_clients,
        )

    @property
    def address(self) -> tuple[str, int]:
        assert self._listener is not None, "start() first"
        name = self._listener.getsockname()
        return str(name[0]), int(name[1])

    @property
    def service(self) -> Service:
        return self._shared.service

    @property
    def clients(self) -> int:
        return len(self._admission)

    def stop(self, timeout: float = 5.0) -> None:
        self._stopping.set()
        with contextlib.suppress(OSError):
            self._wake_w.send(b"x")
        if self._accept_thread is not None:
            self._accept_thread.join(timeout)
        if self._listener is not None:
            self._listener.close()
        slots = self._admission.slots()
        for slot in slots:
            _wake(slot.sock, socket.SHUT_RDWR)
        deadline = time.monotonic() + timeout
        for t in [slot.thread for slot in slots if slot.thread is not None]:
            # A call waiting on the car runs on the connection's worker, which may outlive
            # this (a daemon thread); the connection itself ends now, its socket shut.
            t.join(max(0.0, deadline - time.monotonic()))
        self._wake_r.close()
        self._wake_w.close()
        log.info("control socket closed")

    # -- accepting ---------------------------------------------------------------------
    def _accept_loop(self) -> None:
        assert self._listener is not None
        throttle = self._shared.throttle
        while not self._stopping.is_set():
            try:
                # The timeout only gives the limiter its chance to log the last minute's
                # count of failed AUTHs when no more come.
                ready, _w, _x = select.select([self._listener, self._wake_r], [], [], 10.0)
                self._shared.limiter.report()
                if self._listener not in ready:
                    continue
                conn, addr = self._listener.accept()
            except (BlockingIOError, InterruptedError):
                continue  # another wake-up, or the peer gave up before we accepted
            except OSError as exc:
                if self._stopping.is_set():
                    return
                # EMFILE and friends: back off a little instead of spinning.
                throttle.log(logging.WARNING, "accept", "control socket: accept failed: %s", exc)
                self._stopping.wait(0.2)
                continue
            self._admit(conn, str(addr[0]), int(addr[1]))

    def _admit(self, conn: socket.socket, host: str, port: int) -> None:
        peer = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        slot = Slot(conn, address_key(host), self._clock.monotonic())
        cid, victim = self._admission.admit(slot)
        throttle = self._shared.throttle
        if victim is not None:
            throttle.log(
                logging.WARNING,
                "evict",
                "control socket full: dropping a connection from %s that has not "
                "authenticated, to make room for %s",
                victim.key,
                peer,
            )
            _wake(victim.sock, socket.SHUT_RD)
        if cid is None:
            throttle.log(
                logging.WARNING, "full", "control client %s refused: too many clients", peer
            )
            self._rejecter.reject(conn, peer)
            return
        connection = Connection(
            self._shared,
            cid,
            slot,
            peer,
            plain_auth=is_loopback(host) or self._settings.allow_plain_auth,
        )
        slot.thread = threading.Thread(target=connection.serve, name=f"control-{peer}", daemon=True)
        slot.thread.start()
