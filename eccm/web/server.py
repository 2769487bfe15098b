"""The web page's server: one asyncio loop in a thread of its own, started by the daemon.

aiohttp serves HTTP(S), the WebSocket and the static files with one dependency. The loop
only moves bytes and calls the service; whatever may wait on the car runs on bounded
worker threads (:mod:`eccm.web.workers`), and a LIVE stream drops old updates for a slow
browser (:mod:`eccm.web.live`): a slow or vanished browser never slows logging. The HTTP
access log is off: a one-time login link would otherwise be written to it.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from eccm.clock import Clock, SystemClock
from eccm.control.authlimit import AuthLimiter
from eccm.control.throttle import LogThrottle
from eccm.errors import ConfigError
from eccm.listen import listen_backlog
from eccm.service import Credentials, Service
from eccm.tls import server_context
from eccm.web.api import STATIC, WebApi
from eccm.web.auth import WebAuth
from eccm.web.gate import Gate
from eccm.web.keep import SessionFile
from eccm.web.loginlink import LoginLinks, base_url
from eccm.web.settings import WebSettings

if TYPE_CHECKING:
    from eccm.config import Config

log = logging.getLogger(__name__)

START_TIMEOUT = 30.0
STOP_TIMEOUT = 5.0
REPORT_SECONDS = 10.0
# Seconds a connection may stay without a request, its first one included (aiohttp's own
# default is an hour); browsers open a new one when they need it.
KEEPALIVE = 75.0


class _ClientFaults:
    """aiohttp's server logger, minus the tracebacks any client can cause at will.

    aiohttp logs a request that is not valid HTTP (a byte 0xff in the path, both
    Content-Length and Transfer-Encoding...) as an ERROR with a traceback: found, one
    request of ``printf ... | nc``, no login needed, wrote 11 lines, so a client in a loop
    floods the journal; the line also quoted the request line, which may hold a one-time
    login link. Such a request is the client's fault and it gets its 400: one INFO line a
    minute with a count, naming the fault, not the request. Anything else goes to aiohttp's
    logger unchanged.
    """

    def __init__(self, clock: Clock) -> None:
        self._aiohttp = logging.getLogger("aiohttp.server")
        self._throttle = LogThrottle(clock, logger=log)

    def exception(self, msg: str, *args: object, **kw: Any) -> None:
        exc_info = kw.get("exc_info", True)
        exc = exc_info if isinstance(exc_info, BaseException) else sys.exc_info()[1]
        if isinstance(exc, HttpProcessingError) and 400 <= exc.code < 500:
            fault = (str(exc.message).strip().splitlines() or ["?"])[0].rstrip(":")
            self._throttle.log(
                logging.INFO,
                "malformed",
                "web client %s sent a request that is not valid HTTP (%s): answered %d",
                args[0] if args else "?",
                fault,
                exc.code,
            )
            return
        self._aiohttp.exception(msg, *args, **kw)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._aiohttp, name)


class WebServer:
    """Listens on WEB_SERVER_BIND:WEB_SERVER_PORT once :meth:`start` is called.

    ``service``: the daemon's service (shared with the control socket); ``limiter``: the
    daemon's failed-authentication limiter (shared likewise); ``links``: the one-time
    login links (made from the settings' secrets if None). ``port``/``bind`` override the
    settings (tests use port 0: see :attr:`address`).
    """

    @classmethod
    def from_config(
        cls, cfg: Config, service: Service, clock: Clock | None = None, **options: Any
    ) -> WebServer:
        """A server of ``cfg``'s web keys (nothing of the server sees the rest)."""
        return cls(WebSettings.from_config(cfg), service, clock, **options)

    def __init__(
        self,
        settings: WebSettings,
        service: Service,
        clock: Clock | None = None,
        *,
        credentials: Credentials | None = None,
        limiter: AuthLimiter | None = None,
        links: LoginLinks | None = None,
        bind: str | None = None,
        port: int | None = None,
        static: Path = STATIC,
    ) -> None:
        if not settings.secret:
            raise ConfigError(
                "SOCKET_SERVER_SECRET is required for the web page: make one with `eccm gen-secret`"
            )
        self._clock: Clock = clock or SystemClock()
        self._bind = settings.bind if bind is None else bind
        self._port = settings.port if port is None else port
        self._ssl = (
            server_context(settings.tls_cert, settings.tls_key, "WEB_SERVER")
            if settings.tls_cert
            else None
        )
        # The daemon hands in the one set of secrets every front end accepts.
        credentials = credentials or Credentials(settings.secret, settings.read_secret)
        self.links = links or LoginLinks.for_secrets(
            settings.secret, settings.read_secret, self._clock
        )
        self.limiter = limiter or AuthLimiter(self._clock)
        auth = WebAuth(
            credentials,
            self.links,
            self.limiter,
            self._clock,
            tls=self._ssl is not None,
            info={"car": settings.car, "map_tiles": settings.map_tiles or None},
            allow_plain=settings.allow_plain_auth,
            keep=(
                SessionFile(
                    settings.session_folder,
                    settings.secret,
                    settings.read_secret,
                    tls=self._ssl is not None,
                )
                if settings.session_folder is not None
                else None
            ),
        )
        self.api = WebApi(
            service, auth, tls=self._ssl is not None, tiles=settings.map_tiles, static=static
        )
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._thread: threading.Thread | None = None
        self._address: tuple[str, int] | None = None
        self._reporter: asyncio.Task[None] | None = None
        self._gate: Gate | None = None
        self._listener: socket.socket | None = None

    # -- life cycle ----------------------------------------------------------------------
    def start(self) -> None:
        ready = threading.Event()
        failure: list[BaseException] = []
        loop = asyncio.new_event_loop()
        self._loop = loop

        def run() -> None:
            asyncio.set_event_loop(loop)
            try:
                loop.run_until_complete(self._open())
            except BaseException as exc:
                failure.append(exc)
                ready.set()
                loop.close()
                return
            ready.set()
            try:
                loop.run_forever()
            finally:
                loop.run_until_complete(self._close())
                loop.close()

        self._thread = threading.Thread(target=run, name="web-server", daemon=True)
        self._thread.start()
        if not ready.wait(START_TIMEOUT):
            raise ConfigError("the web page did not start in time")
        if failure:
            exc = failure[0]
            if isinstance(exc, OSError):
                raise ConfigError(
                    f"the web page cannot listen on {self._bind}:{self._port} "
                    f"(WEB_SERVER_BIND / WEB_SERVER_PORT): {exc.strerror or exc}; is another "
                    "eccm running, or is the address not on this machine?"
                ) from exc
            raise exc
        log.info("web page on %s (%s)", self.url, "HTTPS" if self._ssl else "plain HTTP")

    async def _open(self) -> None:
        # Open WebSockets and slow downloads get this long to end at stop.
        runner = web.AppRunner(
            self.api.app(),
            handle_signals=False,
            access_log=None,
            shutdown_timeout=1.0,
            keepalive_timeout=KEEPALIVE,
            logger=_ClientFaults(self._clock),
        )
        await runner.setup()
        self._runner = runner
        handlers = runner.server
        assert handlers is not None  # set by setup()
        family = socket.AF_INET6 if ":" in self._bind else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6 and ipaddress.ip_address(self._bind).is_unspecified:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
            sock.bind((self._bind, self._port))
            sock.listen(listen_backlog())
        except OSError:
            sock.close()
            await runner.cleanup()
            raise
        sock.setblocking(False)
        self._listener = sock
        # The gate accepts: every connection passes it (and it does TLS) before aiohttp.
        self._gate = Gate(sock, handlers, self._ssl, self._clock)
        self._gate.start()
        name = sock.getsockname()
        self._address = (str(name[0]), int(name[1]))
        self._reporter = asyncio.get_running_loop().create_task(self._report())

    async def _report(self) -> None:
        """The count of the last minute's failed logins is logged even when no more come."""
        while True:
            await asyncio.sleep(REPORT_SECONDS)
            self.limiter.report()

    async def _close(self) -> None:
        if self._reporter is not None:
            self._reporter.cancel()
        if self._gate is not None:
            self._gate.stop()
        if self._runner is not None:
            await self._runner.cleanup()  # gives requests and WebSockets their time to end
        if self._gate is not None:
            self._gate.close()
        if self._listener is not None:
            self._listener.close()
        # What the runner's shutdown left (a WebSocket handler and its LIVE tasks cancelled
        # mid-wait) ends here, before the loop closes: else asyncio reports tasks destroyed
        # while pending.
        others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in others:
            task.cancel()
        if others:
            await asyncio.wait(others, timeout=STOP_TIMEOUT / 2)
        self.api.car.shutdown()
        self.api.quick.shutdown()

    @property
    def address(self) -> tuple[str, int]:
        assert self._address is not None, "start() first"
        return self._address

    @property
    def connections(self) -> int:
        """Connections the page holds now (TLS handshakes included)."""
        return 0 if self._gate is None else self._gate.held

    @property
    def url(self) -> str:
        """The page's base URL (``http(s)://host:port``)."""
        host, port = self.address
        return base_url(host, port, self._ssl is not None)

    def stop(self) -> None:
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        if not loop.is_closed():
            loop.call_soon_threadsafe(loop.stop)
        thread.join(STOP_TIMEOUT)
        log.info("web page closed")
