"""Admission of the web page's connections: at most :data:`MAX_CONNECTIONS` at a time, shared
fairly between addresses, TLS handshakes included.

aiohttp takes every connection the kernel hands it and keeps one that sends nothing for its
keep-alive time (an hour). Found: 1,050 idle connections from one client on the network ran
the daemon out of file descriptors (1024, a systemd service's limit): the recorder could
not close its file (280 rows dropped in 56 s), the trip summary, the disk budget and the
control socket's accept failed, and asyncio logged a traceback for every accept it retried
(216,000 of them, 2 million log lines, in a minute). So the gate accepts, and every
connection passes it before aiohttp (or TLS) sees it: when :data:`MAX_CONNECTIONS` are held,
a newcomer displaces the oldest connection of the address holding the most of them, if that
address holds at least two more than the newcomer's (the control socket's rule,
:func:`eccm.control.admission.choose_victim`): a crowd from one address, or a few, cannot
lock the owner's phone out, and cannot take the descriptors the logger needs. Otherwise
the newcomer is refused at once (plain HTTP: a 503 with the ``too_many_clients`` body).

The gate accepts at most :data:`ACCEPT_BATCH` connections per turn of the loop: asyncio's own
accept loop takes as many as the listen queue holds (somaxconn, 4096) before any of them
can be refused, and so ran out of descriptors in one burst even with a limit. The TLS
handshake runs after the gate (``loop.start_tls``), within :data:`HANDSHAKE_TIMEOUT`:
half-open handshakes are held connections like any other; a client whose first byte is no
TLS handshake gets a plain-HTTP 400 that says to use https://. Runs on the web server's
event loop only.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
from collections.abc import Callable, Coroutine
from dataclasses import dataclass

from eccm.clock import Clock
from eccm.control.admission import choose_victim
from eccm.control.authlimit import address_key
from eccm.control.protocol import encode
from eccm.control.throttle import LogThrottle

log = logging.getLogger(__name__)

# A browser opens at most 6 connections to a host, plus its WebSocket: room for several
# phones and scripts, and a small share of the 1024 descriptors a service gets by default.
MAX_CONNECTIONS = 64
HANDSHAKE_TIMEOUT = 10.0  # the control socket's time to authenticate, handshake included
ACCEPT_BATCH = 16  # connections accepted per turn of the event loop
ACCEPT_RETRY = 0.5  # seconds before accepting again after the system ran out of descriptors
EARLY_MAX = 64 * 1024  # bytes a client may send between its TLS handshake and the hand-over

_BUSY = encode(
    {
        "class": "ERROR",
        "code": "too_many_clients",
        "message": f"the web page serves at most {MAX_CONNECTIONS} connections at a time",
    }
)
_REFUSAL = (
    b"HTTP/1.1 503 Service Unavailable\r\n"
    b"Content-Type: application/json\r\n"
    b"Content-Length: " + str(len(_BUSY)).encode("ascii") + b"\r\n"
    b"Retry-After: 1\r\n"
    b"Connection: close\r\n\r\n" + _BUSY
)

_TLS_HANDSHAKE = b"\x16"  # the content type of the first TLS record a client sends
_HINT = b"This port speaks HTTPS: open the page with https:// instead of http://.\n"
_PLAIN_ON_TLS = (
    b"HTTP/1.1 400 Bad Request\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n"
    b"Content-Length: " + str(len(_HINT)).encode("ascii") + b"\r\n"
    b"Connection: close\r\n\r\n" + _HINT
)


@dataclass(eq=False)
class _Held:
    key: str  # address_key of the peer
    opened: float  # monotonic
    peer: str
    sock: socket.socket
    transport: asyncio.Transport | None = None  # the TCP one (aborting it ends TLS too)
    dropped: bool = False  # displaced before its transport was made
    authenticated: bool = False  # a web connection never is: cookies are per request
    first_byte: asyncio.Future[bool] | None = None  # TLS: waiting for the client's first byte

    def ended(self) -> bool:
        if self.transport is not None:
            return self.transport.is_closing()
        return self.dropped

    def drop(self) -> None:
        if self.transport is not None:
            self.transport.abort()
            return
        self.dropped = True  # its transport is aborted as it is made
        if self.first_byte is not None and not self.first_byte.done():
            self.first_byte.set_result(False)  # the wait ends now and closes the socket


class _Door(asyncio.Protocol):
    """The protocol of a connection until the gate hands it to aiohttp's handler."""

    def __init__(self, gate: Gate, held: _Held) -> None:
        self._gate = gate
        self._held = held
        self._early = bytearray()  # TLS: what arrived after the handshake, before the hand-over
        self._ended = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._held.transport = transport
        if self._held.dropped:
            transport.abort()
            return
        self._gate.opened(self, self._held)

    def data_received(self, data: bytes) -> None:
        if len(self._early) + len(data) > EARLY_MAX:
            self._ended = True
            return
        self._early += data

    def eof_received(self) -> bool:
        self._ended = True
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._ended = True

    def hand_over(self, transport: asyncio.Transport, handler: asyncio.Protocol) -> None:
        if self._ended or transport.is_closing():
            transport.abort()
            return
        transport.set_protocol(handler)
        handler.connection_made(transport)
        if self._early:
            early, self._early = bytes(self._early), bytearray()
            handler.data_received(early)


class Gate:
    """Accepts on ``listener`` (listening, non-blocking) once :meth:`start` is called.

    ``make_handler``: aiohttp's protocol factory (``AppRunner.server``); ``tls``: the
    server's context (None: plain HTTP).
    """

    def __init__(
        self,
        listener: socket.socket,
        make_handler: Callable[[], asyncio.Protocol],
        tls: ssl.SSLContext | None,
        clock: Clock,
        *,
        limit: int = MAX_CONNECTIONS,
        handshake_timeout: float = HANDSHAKE_TIMEOUT,
    ) -> None:
        self._listener = listener
        self._make = make_handler
        self._tls = tls
        self._clock = clock
        self._limit = limit
        self._handshake_timeout = handshake_timeout
        self._held: list[_Held] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._throttle = LogThrottle(clock, logger=log)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._retry: asyncio.TimerHandle | None = None

    @property
    def held(self) -> int:
        """Connections held now (any thread: it only reads)."""
        return sum(1 for h in list(self._held) if not h.ended())

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(self._listener.fileno(), self._accept)

    def stop(self) -> None:
        """Accepts no more connections, and ends the TLS handshakes under way."""
        if self._loop is not None:
            self._loop.remove_reader(self._listener.fileno())
        if self._retry is not None:
            self._retry.cancel()
        for task in self._tasks:
            task.cancel()

    def close(self) -> None:
        """Ends every connection still held (after aiohttp's shutdown ended those it served:
        this one does not wait for a request to finish). The listener is the caller's."""
        self.stop()
        for held in self._held:
            held.drop()
        self._held.clear()

    # -- accepting -----------------------------------------------------------------------
    def _accept(self) -> None:
        assert self._loop is not None
        for _ in range(ACCEPT_BATCH):  # then the loop turns: refused ones are closed by then
            try:
                conn, addr = self._listener.accept()
            except (BlockingIOError, InterruptedError, ConnectionAbortedError):
                return
            except OSError as exc:
                # Out of descriptors (or memory): wait a little instead of spinning, and say
                # so once a minute, not once per attempt.
                self._throttle.log(logging.WARNING, "accept", "web page: accept failed: %s", exc)
                self._loop.remove_reader(self._listener.fileno())
                self._retry = self._loop.call_later(ACCEPT_RETRY, self.start)
                return
            self._admit(conn, str(addr[0]), int(addr[1]))

    def _admit(self, conn: socket.socket, host: str, port: int) -> None:
        assert self._loop is not None
        peer = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        self._prune()
        newcomer = _Held(address_key(host), self._clock.monotonic(), peer, conn)
        admitted, victim = choose_victim(self._held, newcomer.key, self._limit)
        if victim is not None:
            self._throttle.log(
                logging.WARNING,
                "evict",
                "web page full (%d connections): dropping the oldest of %s to make room for %s",
                self._limit,
                victim.key,
                peer,
            )
            self._held.remove(victim)
            victim.drop()
        if not admitted:
            self._throttle.log(
                logging.WARNING,
                "full",
                "web client %s refused: %d connections are open, most of them from its address",
                peer,
                self._limit,
            )
            with contextlib.suppress(OSError):
                conn.setblocking(False)
                if self._tls is None:  # a TLS client gets no handshake: that is what it costs
                    conn.send(_REFUSAL)
            conn.close()
            return
        self._held.append(newcomer)
        conn.setblocking(False)
        self._spawn(self._open(newcomer))

    def _spawn(self, work: Coroutine[None, None, None]) -> None:
        assert self._loop is not None
        task = self._loop.create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _open(self, held: _Held) -> None:
        assert self._loop is not None
        if self._tls is not None and not await self._speaks_tls(held):
            return
        try:
            await self._loop.connect_accepted_socket(lambda: _Door(self, held), held.sock)
        except OSError as exc:
            log.debug("web client %s: %s", held.peer, exc)
            held.dropped = True
            held.sock.close()

    async def _speaks_tls(self, held: _Held) -> bool:
        """Whether the client's first byte starts a TLS handshake. A browser sent to
        http:// on the HTTPS port is told so in plain HTTP, instead of an empty reply."""
        assert self._loop is not None
        sock, fd = held.sock, held.sock.fileno()
        first_byte: asyncio.Future[bool] = self._loop.create_future()
        held.first_byte = first_byte

        def readable() -> None:
            if not first_byte.done():
                first_byte.set_result(True)

        self._loop.add_reader(fd, readable)
        speaks = False
        try:
            with contextlib.suppress(TimeoutError):
                if await asyncio.wait_for(first_byte, self._handshake_timeout):
                    first = sock.recv(1, socket.MSG_PEEK)
                    speaks = first[:1] == _TLS_HANDSHAKE
                    if first and not speaks:
                        self._plain_on_tls(held)
        except OSError as exc:  # a reset before the first byte
            log.debug("web client %s: %s", held.peer, exc)
        finally:
            self._loop.remove_reader(fd)
            if not speaks:
                held.dropped = True
                sock.close()
        return speaks

    def _plain_on_tls(self, held: _Held) -> None:
        self._throttle.log(
            logging.INFO, "plain", "web client %s: plain HTTP on the HTTPS port", held.peer
        )
        with contextlib.suppress(OSError):
            # What the client sent is read first: closing on unread data would be a reset,
            # which can destroy the reply before the browser reads it.
            held.sock.recv(EARLY_MAX)
            held.sock.send(_PLAIN_ON_TLS)
            held.sock.shutdown(socket.SHUT_WR)

    def opened(self, door: _Door, held: _Held) -> None:
        """``held``'s transport is made (:meth:`_Door.connection_made`)."""
        assert held.transport is not None
        if self._tls is None:
            door.hand_over(held.transport, self._make())
            return
        held.transport.pause_reading()  # the ClientHello is for the TLS layer, not the door
        self._spawn(self._handshake(door, held))

    async def _handshake(self, door: _Door, held: _Held) -> None:
        assert self._tls is not None and self._loop is not None and held.transport is not None
        try:
            tls = await self._loop.start_tls(
                held.transport,
                door,
                self._tls,
                server_side=True,
                # One deadline from the connect, however the handshake trickles in.
                ssl_handshake_timeout=max(
                    0.01, self._handshake_timeout - (self._clock.monotonic() - held.opened)
                ),
            )
        except (OSError, EOFError) as exc:  # ssl.SSLError, the timeout, a reset
            reason = getattr(exc, "reason", None) or exc or type(exc).__name__
            self._throttle.log(
                logging.INFO,
                "handshake",
                "web client %s: TLS handshake failed: %s",
                held.peer,
                reason,
            )
            held.transport.abort()
            return
        if tls is None:  # the connection ended meanwhile
            held.transport.abort()
            return
        door.hand_over(tls, self._make())

    def _prune(self) -> None:
        """Forget connections that ended (their descriptors are closed, or about to be)."""
        self._held = [h for h in self._held if not h.ended()]
