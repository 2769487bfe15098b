"""One accepted control socket connection: TLS sniffing and handshake, the session's byte
pump, a worker for the calls that may wait on the car, and a clean close.

Threads, not selectors: one thread per connection, and connections are few
(SOCKET_SERVER_MAX_CLIENTS, 8 by default); TLS handshakes need no driving by hand. The
thread multiplexes its one socket with select() for reads, writes and the session's timers
(WATCH lines, auth and idle timeouts). A call that may wait on the car (a DTC read takes up
to 15 s on a slow car) runs on the connection's :class:`CallWorker`, which wakes the pump
when it is done; meanwhile WATCH lines still go out. The protocol itself lives in
``protocol.py``; this module only moves bytes.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import select
import socket
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from eccm.clock import Clock
from eccm.control.admission import Admission, Slot
from eccm.control.authlimit import AuthLimiter
from eccm.control.commands import Call
from eccm.control.protocol import Session, State, encode
from eccm.control.throttle import LogThrottle
from eccm.service import Credentials, Scope, Service

log = logging.getLogger("eccm.control.server")  # the lines are the server's, as before

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
class Shared:
    """What every connection of one server shares."""

    service: Service
    credentials: Credentials
    limiter: AuthLimiter
    clock: Clock
    admission: Admission
    throttle: LogThrottle
    stopping: threading.Event
    tls: ssl.SSLContext | None  # None: plain TCP
    auth_timeout: float
    idle_timeout: float
    max_unread: int  # a watcher that leaves this much unread is dropped


class CallWorker:
    """Runs one connection's calls that may wait, in order, on a daemon thread started at
    the first one; ``wake`` tells the connection's pump that a call is done. A call still
    running when the connection ends finishes unheard (the OBD link bounds it)."""

    def __init__(self, name: str, wake: Callable[[], None]) -> None:
        self._name = name
        self._wake = wake
        self._calls: queue.SimpleQueue[Call | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None

    def submit(self, call: Call) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
            self._thread.start()
        self._calls.put(call)

    def stop(self) -> None:
        if self._thread is not None:
            self._calls.put(None)

    def _run(self) -> None:
        while (call := self._calls.get()) is not None:
            call.run()
            self._wake()


class Connection:
    """One client, from accept to close, on a thread of its own (:meth:`serve`)."""

    def __init__(
        self, shared: Shared, cid: int, slot: Slot, peer: str, *, plain_auth: bool
    ) -> None:
        self._s = shared
        self._cid = cid
        self._slot = slot
        self.peer = peer
        self._plain_auth = plain_auth  # before TLS: loopback or SOCKET_SERVER_ALLOW_PLAIN_AUTH

    def serve(self) -> None:
        s, slot, peer = self._s, self._slot, self.peer
        conn = slot.sock
        sock: socket.socket = conn
        session: Session | None = None
        worker: CallWorker | None = None
        wake: tuple[socket.socket, ...] = ()
        try:
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SNDBUF)
            if s.tls is not None:
                conn.settimeout(s.auth_timeout)
                if not self._speaks_tls(conn):
                    return
                sock = s.tls.wrap_socket(conn, server_side=True, do_handshake_on_connect=False)
                s.admission.wrapped(slot, sock)
                if s.stopping.is_set() or slot.evicted:
                    return
                # One deadline from connect for the whole handshake, however it trickles in.
                sock.settimeout(max(0.01, s.auth_timeout - self._since_open()))
                sock.do_handshake()
            log.debug("control client %s connected", peer)
            # The worker's way to wake this thread out of select() when a call is done.
            wake = socket.socketpair()
            worker = CallWorker(f"control-call-{peer}", lambda: _poke(wake[1]))
            session = Session(
                s.service,
                "",
                s.clock,
                credentials=s.credentials,
                peer=peer,
                address=slot.key,
                plain_auth=s.tls is not None or self._plain_auth,
                limiter=s.limiter,
                # The handshake is part of the time to authenticate: 10 s from connect in all.
                auth_timeout=max(0.0, s.auth_timeout - self._since_open()),
                idle_timeout=s.idle_timeout,
                run_call=worker.submit,
            )
            self._pump(sock, session, wake[0])
        except (ssl.SSLError, OSError) as exc:
            if slot.evicted:
                log.debug("control client %s dropped during the TLS handshake", peer)
            elif isinstance(exc, ssl.SSLError):
                s.throttle.log(
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
            if worker is not None:
                worker.stop()
            for each in (sock, *wake):
                with contextlib.suppress(OSError):
                    each.close()
            s.admission.remove(self._cid, slot)
            log.debug("control client %s gone", peer)

    def _since_open(self) -> float:
        return self._s.clock.monotonic() - self._slot.opened

    def _speaks_tls(self, conn: socket.socket) -> bool:
        """Whether the first bytes are a TLS handshake; if not, say so in plain text.

        A person who types into ``nc`` on the TLS port would otherwise see nothing at all
        (OpenSSL answers plain text with a binary alert, then closes).
        """
        first = conn.recv(1, socket.MSG_PEEK)
        if not first:
            return False
        if first[0] == _TLS_HANDSHAKE:
            return True
        self._s.throttle.log(
            logging.INFO, "plain", "control client %s: plain text on the TLS port", self.peer
        )
        message = (
            "this port speaks TLS: use `openssl s_client -quiet -connect HOST:PORT` "
            "or `eccm query --tls`"
        )
        conn.sendall(encode({"class": "ERROR", "code": "bad_request", "message": message}))
        finish(conn, self.peer, "plain text on the TLS port", self._s.stopping)
        return False

    def _pump(self, sock: socket.socket, session: Session, wake: socket.socket) -> None:
        s, slot, peer = self._s, self._slot, self.peer
        sock.setblocking(False)
        wake.setblocking(False)
        tls = isinstance(sock, ssl.SSLSocket)
        out = bytearray()
        retry_len = 0  # OpenSSL wants a write that could not finish retried with its length
        closed_at: float | None = None
        while not s.stopping.is_set():
            if slot.evicted:
                _tell_evicted(sock, peer)
                return
            session.tick()
            out += session.data_to_send()
            while len(out) < HIGH_WATER and session.step():
                out += session.data_to_send()
            if not slot.authenticated and session.state in (State.READY, State.WATCHING):
                read_only = Scope.CONTROL not in session.caller.scopes
                if not s.admission.authenticated(slot, read_only):
                    _tell_readers_full(sock, peer, s.admission.max_clients)
                    finish(sock, peer, "the read secret's share is full", s.stopping)
                    return
            if len(out) > s.max_unread:
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
            now = s.clock.monotonic()
            if session.closed:
                if not out:
                    finish(sock, peer, session.close_reason, s.stopping)
                    return
                if closed_at is None:
                    closed_at = now
                elif now - closed_at > LINGER_SECONDS:
                    return
            deadline = session.next_deadline()
            wait = 1.0 if deadline is None else min(1.0, max(0.0, deadline - now))
            want_read = session.wants_data
            if tls and want_read and sock.pending() > 0:  # type: ignore[attr-defined]
                readable = True  # decrypted bytes wait inside OpenSSL: select cannot see them
            else:
                try:
                    r, _w, _x = select.select(
                        [sock, wake] if want_read else [wake], [sock] if out else [], [], wait
                    )
                except (OSError, ValueError):
                    return  # the socket was shut or closed by stop()
                if wake in r:
                    _drain(wake)  # a call is done: the next step() takes its reply
                readable = sock in r
            if readable:
                try:
                    data = sock.recv(RECV_CHUNK)
                except (BlockingIOError, ssl.SSLWantReadError, ssl.SSLWantWriteError):
                    continue
                except OSError as exc:
                    log.debug("control client %s: receive failed: %s", peer, exc)
                    return
                session.receive_data(data)


def _poke(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):  # the connection ended meanwhile: nobody to wake
        sock.send(b"x")


def _drain(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        while sock.recv(64):
            pass


def _tell_evicted(sock: socket.socket, peer: str) -> None:
    """Tell a connection displaced by admission why, as far as it reads."""
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


def _tell_readers_full(sock: socket.socket, peer: str, max_clients: int) -> None:
    """Refuse a client of the read secret in place of its AUTH reply (see
    :meth:`Admission.authenticated`)."""
    log.info(
        "control client %s refused: clients of the read secret hold %d of the %d "
        "connections (SOCKET_SERVER_MAX_CLIENTS); the last is kept for the full secret",
        peer,
        max_clients - 1,
        max_clients,
    )
    line = encode(
        {
            "class": "ERROR",
            "code": "too_many_clients",
            "message": f"clients of the read secret hold {max_clients - 1} of the "
            f"{max_clients} connections; the last is kept for the full secret",
        }
    )
    with contextlib.suppress(OSError, ValueError):
        sock.settimeout(2.0)  # a fresh connection's buffer takes one line at once
        sock.sendall(line)


def finish(sock: socket.socket, peer: str, reason: str, stopping: threading.Event) -> None:
    """Half-close after the last reply, then read and discard until the peer closes too
    (bounded), so that the peer sees our last line followed by a clean end."""
    log.debug("control client %s: closing (%s)", peer, reason)
    try:
        sock.shutdown(socket.SHUT_WR)
    except OSError:
        return
    end = time.monotonic() + DRAIN_SECONDS
    drained = 0
    while drained < DRAIN_MAX and not stopping.is_set():
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


class Rejecter:
    """Tells a surplus client ``too_many_clients``, in a short-lived thread of its own: a
    TLS client needs a handshake first, and a client that already sent its requests
    (``printf 'AUTH ...\\nSTATUS\\n' | nc``) must have them read and discarded, or closing
    would reset the connection and destroy the line before it is read."""

    def __init__(
        self, max_clients: int, ctx: ssl.SSLContext | None, stopping: threading.Event
    ) -> None:
        self._line = encode(
            {
                "class": "ERROR",
                "code": "too_many_clients",
                "message": f"at most {max_clients} clients at a time",
            }
        )
        self._ssl = ctx
        self._stopping = stopping
        self._threads = threading.BoundedSemaphore(MAX_REJECTERS)

    def reject(self, conn: socket.socket, peer: str) -> None:
        if not self._threads.acquire(blocking=False):
            # A flood: no thread for it. A plain client still gets the line if the kernel
            # takes it at once; a TLS client not even the courtesy of a handshake.
            if self._ssl is None:
                with contextlib.suppress(OSError):
                    conn.setblocking(False)
                    conn.send(self._line)
            conn.close()
            return
        threading.Thread(
            target=self._run, args=(conn, peer), name="control-reject", daemon=True
        ).start()

    def _run(self, conn: socket.socket, peer: str) -> None:
        sock = conn
        try:
            conn.settimeout(5.0)
            if self._ssl is not None:
                sock = self._ssl.wrap_socket(conn, server_side=True)
            sock.sendall(self._line)
            finish(sock, peer, "too many clients", self._stopping)
        except (OSError, ssl.SSLError):
            pass
        finally:
            with contextlib.suppress(OSError):
                sock.close()
            self._threads.release()
