"""The control socket's listener: TCP or TLS 1.2+, one protocol session per connection.

Threads, not selectors: one thread per connection, and connections are few
(SOCKET_SERVER_MAX_CLIENTS, 8 by default). A command may hold its thread for seconds (a DTC
read waits for the OBD link's queue, up to 15 s on a slow car); with a thread per client
that delays only the client who asked, where a selector loop would need a worker pool and
completion plumbing for exactly those calls, and TLS handshakes would have to be driven by
hand. Each thread multiplexes its one socket with select() for reads, writes and the
session's timers (WATCH lines, auth and idle timeouts). The protocol itself lives in
``protocol.py``; this module only moves bytes.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import select
import socket
import ssl
import threading
import time
from collections import Counter
from dataclasses import dataclass

from eccm.clock import Clock, SystemClock
from eccm.config import Config
from eccm.control.authlimit import FAILURES_PER_MINUTE, AuthLimiter
from eccm.control.authlimit import address_key as address_key
from eccm.control.protocol import (
    AUTH_TIMEOUT,
    IDLE_TIMEOUT,
    Session,
    State,
    encode,
)
from eccm.errors import ConfigError
from eccm.service import Backend, Credentials, Service

log = logging.getLogger(__name__)

RECV_CHUNK = 16 * 1024
SEND_CHUNK = 16 * 1024
# Stop taking requests from a client while this much of its replies waits: TCP then pushes
# back on a client that sends without reading, and a pipelined burst costs bounded memory.
HIGH_WATER = 16 * 1024
# A small kernel send buffer, so that "unread" is mostly bytes we hold and can count,
# rather than megabytes hidden in the kernel.
SNDBUF = 16 * 1024
# After the last reply: how long (and how much) we still read and discard, so that closing
# on a client that keeps sending (4 MiB without a newline) does not become a TCP reset that
# could destroy the error line it has not read yet. A client quiet for DRAIN_QUIET has
# nothing in flight any more.
DRAIN_SECONDS = 2.0
DRAIN_QUIET = 0.2
DRAIN_MAX = 16 * 1024 * 1024
# A closed session's last reply gets this long to leave before the socket is dropped.
LINGER_SECONDS = 5.0
# TLS handshakes run just to tell a surplus client "too_many_clients".
MAX_REJECTERS = 4
_TLS_HANDSHAKE = 0x16  # the content type of the first TLS record a client sends


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


def listen_backlog() -> int:
    """The longest listen queue the system allows (net.core.somaxconn).

    A short queue drops the SYNs of a burst of connects, which the client sends again only
    after a second (found: listen(16) and 200 connects: 11 of them waited 1.02 s). The
    kernel caps the queue at somaxconn whatever we ask; the queue costs memory only for
    connections actually waiting in it.
    """
    try:
        with open("/proc/sys/net/core/somaxconn", encoding="ascii") as f:
            value = int(f.read().strip())
    except (OSError, ValueError):
        return socket.SOMAXCONN
    return max(value, socket.SOMAXCONN)


class _Throttle:
    """At most one log line per kind and interval, so that a flood of connections cannot
    flood the log (and the SD card) too; the next line counts the ones held back."""

    def __init__(self, clock: Clock, interval: float = 60.0) -> None:
        self._clock = clock
        self._interval = interval
        self._lock = threading.Lock()
        self._kinds: dict[str, tuple[float, int]] = {}  # kind → (logged at, held back since)

    def log(self, level: int, kind: str, msg: str, *args: object) -> None:
        now = self._clock.monotonic()
        with self._lock:
            at, held = self._kinds.get(kind, (now - self._interval, 0))
            if now - at < self._interval:
                self._kinds[kind] = (at, held + 1)
                return
            self._kinds[kind] = (now, 0)
        if held:
            msg += " (and %d more like it in the last %.0f s)"
            args = (*args, held, now - at)
        log.log(level, msg, *args)


@dataclass(eq=False)
class _Conn:
    """One accepted connection, as the accept loop sees it (guarded by the server lock)."""

    sock: socket.socket
    key: str  # address_key of the peer
    opened: float  # monotonic
    thread: threading.Thread | None = None
    authenticated: bool = False
    evicted: bool = False  # dropped to make room for another address; set once


def _wake(sock: socket.socket, how: int) -> None:
    """Shut a socket another thread is blocked on, so that it wakes up.

    The plain socket's shutdown even for a TLS socket: ``SSLSocket.shutdown`` would also
    drop the TLS state under the feet of the thread that uses it.
    """
    with contextlib.suppress(OSError):
        socket.socket.shutdown(sock, how)


def tls_context(cert: str, key: str) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        ctx.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(
            f"SOCKET_SERVER_TLS_CERT={cert!r} / SOCKET_SERVER_TLS_KEY={key!r} cannot be "
            f"loaded: {exc}; expected a PEM certificate and its private key"
        ) from exc
    return ctx


class ControlServer:
    """Listens on SOCKET_SERVER_BIND:SOCKET_SERVER_PORT once :meth:`start` is called.

    ``service``: the daemon's service API (one of this server's own over a bare
    ``Backend``, with SOCKET_SERVER_ALLOW_DTC_CLEAR). SOCKET_SERVER_SECRET authenticates
    with every scope, SOCKET_SERVER_READ_SECRET (if set) with ``read`` only.
    ``port``/``bind`` override the config (tests use port 0: see :attr:`address`).
    ``limiter``: the failed-authentication limiter to share with another front end (one
    of this server's own, from ``limits``, if None).
    """

    def __init__(
        self,
        cfg: Config,
        service: Service | Backend,
        clock: Clock | None = None,
        *,
        bind: str | None = None,
        port: int | None = None,
        limits: Limits | None = None,
        limiter: AuthLimiter | None = None,
    ) -> None:
        if not cfg.socket_server_secret:
            raise ConfigError(
                "SOCKET_SERVER_SECRET is required for the control socket: make one with "
                "`eccm gen-secret`"
            )
        self._cfg = cfg
        self._clock: Clock = clock or SystemClock()
        if not isinstance(service, Service):
            service = Service(
                service, self._clock, allow_dtc_clear=cfg.socket_server_allow_dtc_clear
            )
        self._service = service
        try:
            self._credentials = Credentials(cfg.socket_server_secret, cfg.socket_server_read_secret)
        except ValueError as exc:  # config.py refuses these already
            raise ConfigError(f"control socket secrets: {exc}") from None
        self._bind = cfg.socket_server_bind if bind is None else bind
        self._port = cfg.socket_server_port if port is None else port
        self._limits = limits or Limits()
        # Shared with the web page's login when given, so that switching door gains nothing.
        self._limiter = limiter or AuthLimiter(
            self._clock,
            base=self._limits.failure_base,
            cap=self._limits.failure_cap,
            per_minute=self._limits.failures_per_minute,
        )
        self._throttle = _Throttle(self._clock)
        self._ssl: ssl.SSLContext | None = None
        if cfg.socket_server_tls_cert:
            self._ssl = tls_context(cfg.socket_server_tls_cert, cfg.socket_server_tls_key)
        self._listener: socket.socket | None = None
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._conns: dict[int, _Conn] = {}
        self._next_id = 0
        self._rejecters = threading.BoundedSemaphore(MAX_REJECTERS)
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
            self._cfg.socket_server_max_clients,
        )

    @property
    def address(self) -> tuple[str, int]:
        assert self._listener is not None, "start() first"
        name = self._listener.getsockname()
        return str(name[0]), int(name[1])

    @property
    def clients(self) -> int:
        with self._lock:
            return len(self._conns)

    def stop(self, timeout: float = 5.0) -> None:
        self._stopping.set()
        with contextlib.suppress(OSError):
            self._wake_w.send(b"x")
        if self._accept_thread is not None:
            self._accept_thread.join(timeout)
        if self._listener is not None:
            self._listener.close()
        with self._lock:
            conns = list(self._conns.values())
        for c in conns:
            _wake(c.sock, socket.SHUT_RDWR)
        deadline = time.monotonic() + timeout
        for t in [c.thread for c in conns if c.thread is not None]:
            # A thread inside a long backend call (a DTC read) may outlive this; it is a
            # daemon thread and its socket is already shut.
            t.join(max(0.0, deadline - time.monotonic()))
        self._wake_r.close()
        self._wake_w.close()
        log.info("control socket closed")

    # -- accepting ---------------------------------------------------------------------
    def _accept_loop(self) -> None:
        assert self._listener is not None
        while not self._stopping.is_set():
            try:
                # The timeout only gives the limiter its chance to log the last minute's
                # count of failed AUTHs when no more come.
                ready, _w, _x = select.select([self._listener, self._wake_r], [], [], 10.0)
                self._limiter.report()
                if self._listener not in ready:
                    continue
                conn, addr = self._listener.accept()
            except (BlockingIOError, InterruptedError):
                continue  # another wake-up, or the peer gave up before we accepted
            except OSError as exc:
                if self._stopping.is_set():
                    return
                # EMFILE and friends: back off a little instead of spinning.
                self._throttle.log(
                    logging.WARNING, "accept", "control socket: accept failed: %s", exc
                )
                self._stopping.wait(0.2)
                continue
            host = str(addr[0])
            peer = f"[{host}]:{addr[1]}" if ":" in host else f"{host}:{addr[1]}"
            record = _Conn(conn, address_key(host), self._clock.monotonic())
            with self._lock:
                admitted, victim = self._make_room(record.key)
                if admitted:
                    cid = self._next_id
                    self._next_id += 1
                    self._conns[cid] = record
                    record.thread = threading.Thread(
                        target=self._serve,
                        args=(cid, record, host, peer),
                        name=f"control-{peer}",
                        daemon=True,
                    )
            if victim is not None:
                self._throttle.log(
                    logging.WARNING,
                    "evict",
                    "control socket full: dropping a connection from %s that has not "
                    "authenticated, to make room for %s",
                    victim.key,
                    peer,
                )
                _wake(victim.sock, socket.SHUT_RD)
            if not admitted:
                self._throttle.log(
                    logging.WARNING, "full", "control client %s refused: too many clients", peer
                )
                self._reject(conn, peer)
            else:
                assert record.thread is not None
                record.thread.start()

    def _make_room(self, key: str) -> tuple[bool, _Conn | None]:
        """Whether a new connection from ``key`` may come in, and whom it displaces.

        Under the server lock. When every slot is taken, connections that have not
        authenticated yet are shared fairly between addresses: the newcomer displaces the
        oldest waiting connection of the address holding the most of them, if that address
        holds at least two more of them than the newcomer's does. So connections opened
        and never authenticated (at most 10 s each, but renewed for ever) from one
        address, or a few, cannot lock the owner out, and a crowd from one address cannot
        evict each other back and forth. Authenticated clients are never displaced.
        """
        if len(self._conns) < self._cfg.socket_server_max_clients:
            return True, None
        waiting = Counter(c.key for c in self._conns.values() if not c.authenticated)
        if not waiting:
            return False, None
        crowd, count = max(
            waiting.items(),
            key=lambda kv: (kv[1], -self._oldest_waiting(kv[0]).opened),
        )
        if count < waiting.get(key, 0) + 2:
            return False, None
        victim = self._oldest_waiting(crowd)
        victim.evicted = True
        for cid, c in list(self._conns.items()):
            if c is victim:
                del self._conns[cid]
        return True, victim

    def _oldest_waiting(self, key: str) -> _Conn:
        return min(
            (c for c in self._conns.values() if c.key == key and not c.authenticated),
            key=lambda c: c.opened,
        )

    def _reject(self, conn: socket.socket, peer: str) -> None:
        """Tell a surplus client ``too_many_clients``, in a short-lived thread of its own:
        a TLS client needs a handshake first, and a client that already sent its requests
        (``printf 'AUTH ...\\nSTATUS\\n' | nc``) must have them read and discarded, or
        closing would reset the connection and destroy the line before it is read."""
        line = encode(
            {
                "class": "ERROR",
                "code": "too_many_clients",
                "message": f"at most {self._cfg.socket_server_max_clients} clients at a time",
            }
        )
        if not self._rejecters.acquire(blocking=False):
            # A flood: no thread for it. A plain client still gets the line if the kernel
            # takes it at once; a TLS client not even the courtesy of a handshake.
            if self._ssl is None:
                with contextlib.suppress(OSError):
                    conn.setblocking(False)
                    conn.send(line)
            conn.close()
            return
        ctx = self._ssl

        def run() -> None:
            sock = conn
            try:
                conn.settimeout(5.0)
                if ctx is not None:
                    sock = ctx.wrap_socket(conn, server_side=True)
                sock.sendall(line)
                self._finish(sock, peer, "too many clients")
            except (OSError, ssl.SSLError):
                pass
            finally:
                with contextlib.suppress(OSError):
                    sock.close()
                self._rejecters.release()

        threading.Thread(target=run, name="control-reject", daemon=True).start()

    # -- one client --------------------------------------------------------------------
    def _serve(self, cid: int, rec: _Conn, host: str, peer: str) -> None:
        conn = rec.sock
        sock: socket.socket = conn
        session: Session | None = None
        try:
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SNDBUF)
            if self._ssl is not None:
                conn.settimeout(self._limits.auth_timeout)
                if not self._speaks_tls(conn, peer):
                    return
                sock = self._ssl.wrap_socket(conn, server_side=True, do_handshake_on_connect=False)
                with self._lock:
                    rec.sock = sock  # the wrapper owns the descriptor now
                if self._stopping.is_set() or rec.evicted:
                    return
                # One deadline from connect for the whole handshake, however it trickles in.
                sock.settimeout(max(0.01, self._limits.auth_timeout - self._since(rec)))
                sock.do_handshake()
            log.debug("control client %s connected", peer)
            # The handshake is part of the time to authenticate: 10 s from connect in all.
            spent = self._since(rec)
            session = Session(
                self._service,
                "",
                self._clock,
                credentials=self._credentials,
                peer=peer,
                address=rec.key,
                plain_auth=self._ssl is not None
                or is_loopback(host)
                or self._cfg.socket_server_allow_plain_auth,
                limiter=self._limiter,
                auth_timeout=max(0.0, self._limits.auth_timeout - spent),
                idle_timeout=self._limits.idle_timeout,
            )
            self._pump(sock, session, peer, rec)
        except (ssl.SSLError, OSError) as exc:
            if rec.evicted:
                log.debug("control client %s dropped during the TLS handshake", peer)
            elif isinstance(exc, ssl.SSLError):
                self._throttle.log(
                    logging.INFO,
                    "handshake",
                    "control client %s: TLS handshake failed: %s",
                    peer,
                    exc.reason or exc,
                )
            else:
                log.debug("control client %s: connection lost: %s", peer, exc)
        except Exception:
            log.exception("control client %s: unexpected error", peer)
        finally:
            if session is not None:
                session.abort("connection closed")  # gives up an AUTH it held back
            with contextlib.suppress(OSError):
                sock.close()
            with self._lock:
                if self._conns.get(cid) is rec:
                    del self._conns[cid]
            log.debug("control client %s gone", peer)

    def _since(self, rec: _Conn) -> float:
        return self._clock.monotonic() - rec.opened

    def _speaks_tls(self, conn: socket.socket, peer: str) -> bool:
        """Whether the first bytes are a TLS handshake; if not, say so in plain text.

        A person who types into ``nc`` on the TLS port would otherwise see nothing at all
        (OpenSSL answers plain text with a binary alert, then closes).
        """
        first = conn.recv(1, socket.MSG_PEEK)
        if not first:
            return False
        if first[0] == _TLS_HANDSHAKE:
            return True
        self._throttle.log(
            logging.INFO, "plain", "control client %s: plain text on the TLS port", peer
        )
        message = (
            "this port speaks TLS: use `openssl s_client -quiet -connect HOST:PORT` "
            "or `eccm query --tls`"
        )
        conn.sendall(encode({"class": "ERROR", "code": "bad_request", "message": message}))
        self._finish(conn, peer, "plain text on the TLS port")
        return False

    def _pump(self, sock: socket.socket, session: Session, peer: str, rec: _Conn) -> None:
        sock.setblocking(False)
        tls = isinstance(sock, ssl.SSLSocket)
        out = bytearray()
        retry_len = 0  # OpenSSL wants a write that could not finish retried with its length
        closed_at: float | None = None
        while not self._stopping.is_set():
            if rec.evicted:
                self._evicted(sock, peer)
                return
            session.tick()
            out += session.data_to_send()
            while len(out) < HIGH_WATER and session.step():
                out += session.data_to_send()
            if not rec.authenticated and session.state in (State.READY, State.WATCHING):
                with self._lock:
                    if not rec.evicted:
                        rec.authenticated = True
            if len(out) > self._limits.max_unread:
                log.warning(
                    "control client %s dropped: %d bytes of replies left unread", peer, len(out)
                )
                return
            if out:
                size = retry_len or min(len(out), SEND_CHUNK)
                try:
                    sent = sock.send(out[:size])
                    retry_len = 0
                except (BlockingIOError, ssl.SSLWantWriteError, ssl.SSLWantReadError):
                    sent, retry_len = 0, size
                except OSError as exc:
                    log.debug("control client %s: send failed: %s", peer, exc)
                    return
                del out[:sent]
            now = self._clock.monotonic()
            if session.closed:
                if not out:
                    self._finish(sock, peer, session.close_reason)
                    return
                if closed_at is None:
                    closed_at = now
                elif now - closed_at > LINGER_SECONDS:
                    return
            deadline = session.next_deadline()
            wait = 1.0 if deadline is None else min(1.0, max(0.0, deadline - now))
            want_read = session.wants_data
            buffered = tls and want_read and sock.pending() > 0  # type: ignore[attr-defined]
            if buffered:
                readable = True
            else:
                try:
                    r, _w, _x = select.select(
                        [sock] if want_read else [], [sock] if out else [], [], wait
                    )
                except (OSError, ValueError):
                    return  # the socket was shut or closed by stop()
                readable = bool(r)
            if readable:
                try:
                    data = sock.recv(RECV_CHUNK)
                except (BlockingIOError, ssl.SSLWantReadError, ssl.SSLWantWriteError):
                    continue
                except OSError as exc:
                    log.debug("control client %s: receive failed: %s", peer, exc)
                    return
                session.receive_data(data)

    def _evicted(self, sock: socket.socket, peer: str) -> None:
        """Tell a connection displaced by :meth:`_make_room` why, as far as it reads."""
        log.debug("control client %s dropped: not authenticated, and the socket is full", peer)
        line = encode(
            {
                "class": "ERROR",
                "code": "too_many_clients",
                "message": "dropped to make room for another client: authenticate sooner",
            }
        )
        with contextlib.suppress(OSError, ValueError):
            sock.send(line)  # non-blocking, best effort: the read side is already shut

    def _finish(self, sock: socket.socket, peer: str, reason: str) -> None:
        """Half-close after the last reply, then read and discard until the peer closes
        too (bounded), so that the peer sees our last line followed by a clean end."""
        log.debug("control client %s: closing (%s)", peer, reason)
        try:
            sock.shutdown(socket.SHUT_WR)
        except OSError:
            return
        end = time.monotonic() + DRAIN_SECONDS
        drained = 0
        while drained < DRAIN_MAX and not self._stopping.is_set():
            left = end - time.monotonic()
            if left <= 0:
                return
            try:
                r, _w, _x = select.select([sock], [], [], min(left, DRAIN_QUIET))
                if not r:
                    return
                data = sock.recv(RECV_CHUNK)
            except (BlockingIOError, ssl.SSLWantReadError, ssl.SSLWantWriteError):
                continue
            except (OSError, ValueError):
                return
            if not data:
                return
            drained += len(data)
