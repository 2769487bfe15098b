"""The web page's HTTP side: the JSON API of SPEC §7, the static files, the headers.

Every route calls :class:`eccm.service.Service` (scopes, typed errors, the DTC-clear
policy live there) and answers with the control socket's bodies (:mod:`eccm.replies`).
Calls that may wait on the car (values read on demand, DTC read and clear, upload) run on
the ``car`` workers, the others (status, trip, files...) on the ``quick`` ones: both
bounded (:mod:`workers`), so the event loop, and the WebSocket streams it serves, never
wait on the car, and a crowd of requests is refused with ``busy`` instead of queued.

Routes (besides the login routes of :mod:`auth`):

    GET  /                        index.html of eccm/web/static/
    GET  /static/<file>           the page's scripts, styles, fonts, images
    GET  /api/status /api/values[?names=RPM,SPEED] /api/gnss /api/trip /api/dtc
         /api/supported /api/files
    GET  /api/files/<name>        one closed data file or trip summary
    POST /api/upload /api/dtc/clear /api/dtc/clear/confirm {"token": "..."}
    GET  /api/live                WebSocket: LIVE messages (:mod:`live`)

Every response carries a Content-Security-Policy that allows the page's own files only
(no inline script, no other origin; map tiles only from WEB_MAP_TILES' host).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from aiohttp import web

from eccm import replies
from eccm.sample import iso_utc
from eccm.service import BadRequest, Service, ServiceError
from eccm.web.auth import WebAuth, json_body
from eccm.web.errors import error_response, http_error, json_response
from eccm.web.live import MESSAGE_LIMIT, Changes, LiveClient
from eccm.web.workers import Workers

log = logging.getLogger(__name__)

STATIC = Path(__file__).resolve().parent / "static"
MAX_BODY = 16 * 1024
MAX_NAMES = 64
_HOST = re.compile(r"[A-Za-z0-9.:\[\]-]{1,255}")
_TYPES = {
    ".gz": "application/gzip",
    ".json": "application/json",
    ".csv": "text/csv",
    ".tsv": "text/tab-separated-values",
}
_MISSING_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>ECCM</title></head>
<body><h1>ECCM</h1><p>The dashboard's files are not installed (eccm/web/static/index.html);
the JSON API under /api/ works.</p></body></html>
"""


def tile_source(url: str) -> str:
    """The CSP source of a tile URL: its scheme and host, a ``{s}`` label as ``*``."""
    if not url:
        return ""
    parts = urlsplit(url)
    host = ".".join("*" if "{" in label else label for label in (parts.hostname or "").split("."))
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}"


def csp(tiles: str, host: str, tls: bool) -> str:
    ws = ""
    if _HOST.fullmatch(host):  # the Host header only shapes what the browser that sent it gets
        ws = f" {'wss' if tls else 'ws'}://{host}"
    return (
        "default-src 'none'; script-src 'self'; style-src 'self'; font-src 'self'; "
        f"img-src 'self' data:{' ' + tiles if tiles else ''}; connect-src 'self'{ws}; "
        "manifest-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    )


class WebApi:
    def __init__(
        self,
        service: Service,
        auth: WebAuth,
        *,
        tls: bool,
        tiles: str = "",
        static: Path = STATIC,
        car_workers: Workers | None = None,
        quick_workers: Workers | None = None,
    ) -> None:
        self._service = service
        self._auth = auth
        self._tls = tls
        self._tiles = tile_source(tiles)
        self._static = static
        self.car = car_workers or Workers("car", threads=2, waiting=8)
        self.quick = quick_workers or Workers("quick", threads=2, waiting=16)
        self.changes: Changes | None = None  # set on the loop, in on_startup

    def app(self) -> web.Application:
        app = web.Application(client_max_size=MAX_BODY, middlewares=[self._errors])
        app.on_response_prepare.append(self._headers)
        app.on_startup.append(self._startup)
        app.add_routes(self._auth.routes())
        app.add_routes(
            [
                web.get("/", self.index),
                web.get("/api/status", self._read(self._status)),
                web.get("/api/values", self.values),
                web.get("/api/gnss", self._read(self._gnss)),
                web.get("/api/trip", self._read(self._trip)),
                web.get("/api/track", self._read(self._track)),
                web.get("/api/supported", self._read(self._supported)),
                web.get("/api/files", self._read(self._files)),
                web.get("/api/files/{name}", self.download),
                web.get("/api/dtc", self.dtc),
                web.get("/api/live", self.live),
                web.post("/api/upload", self.upload),
                web.post("/api/dtc/clear", self.dtc_clear),
                web.post("/api/dtc/clear/confirm", self.dtc_confirm),
            ]
        )
        if self._static.is_dir():
            app.router.add_static("/static/", self._static, follow_symlinks=False)
        return app

    async def _startup(self, app: web.Application) -> None:
        import asyncio

        self.changes = Changes(asyncio.get_running_loop())
        self._service.subscribe(self.changes.notify)

    # -- every response ------------------------------------------------------------------
    @web.middleware
    async def _errors(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        try:
            return await handler(request)
        except ServiceError as exc:
            return error_response(exc)
        except web.HTTPException as exc:
            if not request.path.startswith("/api/") or exc.status < 400:
                raise
            code = {404: "unknown_command", 405: "bad_request", 413: "bad_request"}.get(
                exc.status, "bad_request"
            )
            response = error_response(http_error(code, f"{exc.reason}: see the README's API"))
            response.set_status(exc.status)
            return response
        except Exception:
            log.exception("web request %s %s failed", request.method, request.path)
            return error_response(
                http_error("server_error", "internal error; the daemon's log has the details")
            )

    async def _headers(self, request: web.Request, response: web.StreamResponse) -> None:
        h = response.headers
        h["Content-Security-Policy"] = csp(self._tiles, request.host, self._tls)
        h["X-Content-Type-Options"] = "nosniff"
        h["Referrer-Policy"] = "no-referrer"
        h["X-Frame-Options"] = "DENY"
        h["Cross-Origin-Opener-Policy"] = "same-origin"
        h["Cross-Origin-Resource-Policy"] = "same-origin"
        if request.path.startswith(("/api/", "/login/")):
            h["Cache-Control"] = "no-store"
        else:
            h.setdefault("Cache-Control", "no-cache")

    # -- the page ------------------------------------------------------------------------
    async def index(self, request: web.Request) -> web.StreamResponse:
        page = self._static / "index.html"
        if page.is_file():
            return web.FileResponse(page)
        return web.Response(text=_MISSING_PAGE, content_type="text/html")

    # -- reads ---------------------------------------------------------------------------
    def _read(
        self, call: Callable[[Any], dict[str, object]]
    ) -> Callable[[web.Request], Awaitable[web.Response]]:
        """A GET answered by ``call(caller)`` on the quick workers."""

        async def handler(request: web.Request) -> web.Response:
            caller = await self._auth.caller(request)
            return json_response(await self.quick.run(lambda: call(caller)))

        return handler

    def _status(self, caller: Any) -> dict[str, object]:
        return replies.status(self._service.status(caller))

    def _gnss(self, caller: Any) -> dict[str, object]:
        return replies.gnss(self._service.position(caller))

    def _trip(self, caller: Any) -> dict[str, object]:
        return replies.trip(self._service.trip(caller))

    def _track(self, caller: Any) -> dict[str, object]:
        return replies.track(*self._service.track(caller))

    def _supported(self, caller: Any) -> dict[str, object]:
        return replies.supported(self._service.supported(caller))

    def _files(self, caller: Any) -> dict[str, object]:
        return {
            "class": "FILES",
            "files": [
                {
                    "name": f.name,
                    "kind": f.kind,
                    "trip": f.trip,
                    "size": f.size,
                    "modified": iso_utc(f.modified),
                    "uploaded": f.uploaded,
                }
                for f in self._service.files(caller)
            ],
        }

    async def values(self, request: web.Request) -> web.Response:
        caller = await self._auth.caller(request)
        raw = request.query.get("names", "")
        names = tuple(dict.fromkeys(n.strip().upper() for n in raw.split(",") if n.strip()))
        if len(names) > MAX_NAMES:
            raise BadRequest(f"at most {MAX_NAMES} names at a time")
        answer = await self.car.run(lambda: self._service.values(caller, names or None))
        return json_response(replies.values("VALUES", answer))

    async def dtc(self, request: web.Request) -> web.Response:
        caller = await self._auth.caller(request)
        report = await self.car.run(lambda: self._service.dtc_report(caller))
        return json_response(replies.dtc(report))

    async def download(self, request: web.Request) -> web.StreamResponse:
        caller = await self._auth.caller(request)
        name = request.match_info["name"]
        found = await self.quick.run(lambda: self._service.file(caller, name))
        kind = next((t for ext, t in _TYPES.items() if found.name.endswith(ext)), "text/plain")
        return web.FileResponse(
            found.path,
            headers={
                "Content-Type": kind,
                "Content-Disposition": f'attachment; filename="{found.name}"',
            },
        )

    # -- writes --------------------------------------------------------------------------
    async def upload(self, request: web.Request) -> web.Response:
        caller = await self._auth.caller(request, write=True)
        queued = await self.car.run(lambda: self._service.upload(caller))
        log.info("%s asked for an upload: %d file(s) queued", caller.name, queued)
        return json_response(replies.upload(queued))

    async def dtc_clear(self, request: web.Request) -> web.Response:
        caller = await self._auth.caller(request, write=True)
        confirm = await self.car.run(lambda: self._service.request_clear(caller))
        return json_response(replies.confirm(confirm))

    async def dtc_confirm(self, request: web.Request) -> web.Response:
        caller = await self._auth.caller(request, write=True)
        token = (await json_body(request)).get("token")
        if not isinstance(token, str) or not token or len(token) > 64:
            raise BadRequest('send {"token": "<the token of POST /api/dtc/clear>"}')
        result = await self.car.run(lambda: self._service.confirm_clear(caller, token))
        return json_response(replies.cleared(result))

    # -- the stream ----------------------------------------------------------------------
    async def live(self, request: web.Request) -> web.StreamResponse:
        caller = await self._auth.caller(request, write="Origin" in request.headers)
        still_in = self._auth.still_in(request)
        assert self.changes is not None
        ws = web.WebSocketResponse(
            heartbeat=20.0, max_msg_size=MESSAGE_LIMIT, compress=False, writer_limit=16 * 1024
        )
        await ws.prepare(request)
        await LiveClient(ws, self._service, caller, self.changes, still_in).run()
        return ws
