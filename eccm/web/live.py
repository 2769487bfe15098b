"""``GET /api/live``: LIVE messages over a WebSocket, as the control socket's WATCH sends.

On connect every logged value streams, every ``DEFAULT_EVERY`` seconds; the client may
send ``{"watch": ["RPM", "SPEED"], "every": 0.2}`` (an empty list: every value), answered
by the socket's WATCH reply. A message goes out as soon as the daemon has a new row (the
hub says so through :meth:`Service.subscribe`), at most once per ``every``, and at least
once per two ``every`` while no row comes (so the page sees values age).

Backpressure: the newest LIVE message waits in a slot of one; a new one replaces it, so
a slow browser gets fewer, current messages, never a growing queue. Replies to the
client's messages wait in a short queue; a client that floods it, or does not take one
message in ``STALL`` seconds, is dropped. LIVE lines never poll the car (values that are
not logged cannot be watched, as on the socket).

The stream lasts as long as the login that opened it: once its session ended (a logout,
from this tab or another, or the session expired or was displaced) the next message is
the ERROR ``noauth`` the page answers with its login form, and the stream closes.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
from collections import deque
from collections.abc import Callable, Sequence

from aiohttp import WSMsgType, web

from eccm import replies
from eccm.control.protocol import WATCH_MAX_INTERVAL, WATCH_MIN_INTERVAL, encode
from eccm.service import Caller, Service, ServiceError, echo

log = logging.getLogger(__name__)

DEFAULT_EVERY = 0.2  # 5 updates a second: the page's gauges
STALL = 30.0  # seconds one message may take to leave before the client is dropped
MAX_REPLIES = 8  # replies to the client's own messages not sent yet
MAX_NAMES = 64
MESSAGE_LIMIT = 4096
ENDED = "the session ended (logged out, or expired): log in again"


class Changes:
    """Fans the daemon's "new row" out to the open WebSockets (on the server's loop)."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._events: set[asyncio.Event] = set()

    def notify(self) -> None:
        """Any thread (the hub's): quick, and nothing at all while nobody watches."""
        if self._events and not self._loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop stopped meanwhile
                self._loop.call_soon_threadsafe(self._wake)

    def _wake(self) -> None:
        for event in self._events:
            event.set()

    def add(self, event: asyncio.Event) -> None:
        self._events.add(event)

    def discard(self, event: asyncio.Event) -> None:
        self._events.discard(event)


class LiveClient:
    """One WebSocket from accept to close."""

    def __init__(
        self,
        ws: web.WebSocketResponse,
        service: Service,
        caller: Caller,
        changes: Changes,
        still_in: Callable[[], bool] = lambda: True,
    ) -> None:
        self._ws = ws
        self._service = service
        self._caller = caller
        self._changes = changes
        self._still_in = still_in  # whether the login that opened the stream holds
        self._ending = False  # the session ended: close once the replies are out
        self._names: tuple[str, ...] | None = None  # None: every value
        self._every = DEFAULT_EVERY
        self._changed = asyncio.Event()
        self._watch_changed = asyncio.Event()
        self._latest: str | None = None  # the newest LIVE message not sent yet
        self._replies: deque[str] = deque()
        self._ready = asyncio.Event()  # something to send
        self.dropped = 0  # LIVE messages replaced before they could leave

    async def run(self) -> None:
        self._changes.add(self._changed)
        tasks = [
            asyncio.create_task(self._produce()),
            asyncio.create_task(self._send()),
        ]
        try:
            await self._read()
        finally:
            self._changes.discard(self._changed)
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            if self.dropped:
                log.debug("web live %s: %d updates dropped", self._caller.name, self.dropped)

    # -- the client's messages -------------------------------------------------------------
    async def _read(self) -> None:
        async for msg in self._ws:
            if msg.type is not WSMsgType.TEXT:
                self._reply(replies.error("bad_request", "send JSON text messages"))
                continue
            try:
                self._watch(msg.data)
            except ServiceError as exc:
                self._reply(replies.error(exc.code, exc.message))
            if len(self._replies) > MAX_REPLIES:
                log.info("web live %s dropped: its replies are not read", self._caller.name)
                await self._ws.close()
                return

    def _watch(self, text: str) -> None:
        try:
            request = json.loads(text)
        except (ValueError, RecursionError):  # "[[[[..." nests deeper than Python recurses
            request = None
        if not isinstance(request, dict) or "watch" not in request:
            self._reply(replies.error("bad_request", 'send {"watch": [NAME, ...], "every": s}'))
            return
        names = request["watch"]
        every = request.get("every", self._every)
        if (
            not isinstance(names, list)
            or len(names) > MAX_NAMES
            or not all(isinstance(n, str) and 0 < len(n) <= 64 for n in names)
        ):
            self._reply(replies.error("bad_request", f"watch takes up to {MAX_NAMES} names"))
            return
        if (
            isinstance(every, bool)
            or not isinstance(every, (int, float))
            or not math.isfinite(every)
            or not WATCH_MIN_INTERVAL <= every <= WATCH_MAX_INTERVAL
        ):
            self._reply(
                replies.error(
                    "bad_request",
                    f"every {echo(str(every))!r} is not valid: expected seconds from "
                    f"{WATCH_MIN_INTERVAL:g} to {WATCH_MAX_INTERVAL:g}",
                )
            )
            return
        wanted = tuple(dict.fromkeys(n.upper() for n in names))
        self._service.check_watch(self._caller, wanted)
        self._names, self._every = wanted or None, float(every)
        self._reply(
            {
                "class": "WATCH",
                "ok": True,
                "watching": True,
                "values": list(wanted) if wanted else None,
                "every": self._every,
            }
        )
        self._watch_changed.set()  # the next LIVE message now, with the new names

    def _reply(self, body: dict[str, object]) -> None:
        self._replies.append(encode(body).decode("ascii").rstrip("\n"))
        self._ready.set()

    # -- LIVE messages -------------------------------------------------------------------
    async def _produce(self) -> None:
        loop = asyncio.get_running_loop()
        due = 0.0
        while True:
            now = loop.time()
            if now < due and not self._watch_changed.is_set():
                await _wait(self._watch_changed, due - now)
            # A new row, or `every` without one (values age on the page), or a new WATCH.
            if not self._watch_changed.is_set():
                await _wait(self._changed, self._every)
            self._changed.clear()
            self._watch_changed.clear()
            if not self._still_in():
                log.info("web live %s closed: its session ended", self._caller.name)
                self._reply(replies.error("noauth", ENDED))
                self._ending = True
                return
            self._offer(self._names)
            due = loop.time() + self._every

    def _offer(self, names: Sequence[str] | None) -> None:
        try:
            answer = self._service.values(self._caller, names, read_missing=False)
            body = replies.values("LIVE", answer)
        except ServiceError as exc:
            body = replies.error(exc.code, exc.message)
        if self._latest is not None:
            self.dropped += 1  # the browser has not taken the last one: it is replaced
        self._latest = encode(body).decode("ascii").rstrip("\n")
        self._ready.set()

    async def _send(self) -> None:
        while True:
            await self._ready.wait()
            self._ready.clear()
            while self._replies or self._latest is not None:
                text: str | None
                if self._replies:
                    text = self._replies.popleft()
                else:
                    text, self._latest = self._latest, None
                if text is None:
                    continue
                try:
                    await asyncio.wait_for(self._ws.send_str(text), STALL)
                except (TimeoutError, ConnectionError, RuntimeError):
                    log.info("web live %s dropped: it stopped reading", self._caller.name)
                    await self._ws.close()
                    return
            if self._ending:
                await self._ws.close()
                return


async def _wait(event: asyncio.Event, timeout: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(event.wait(), timeout)
