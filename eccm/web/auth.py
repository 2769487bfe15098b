"""Who may use the web page, and the routes that log in and out (SPEC §7).

- ``POST /api/login`` ``{"secret": "..."}``: a session cookie (HttpOnly, SameSite=Strict,
  Secure under TLS) and the AUTH body with the session's CSRF token.
- ``GET /login/<token>``: a one-time link of ``eccm login-link`` (:mod:`loginlink`) logs
  in and redirects to ``/``.
- ``GET /api/session``: the AUTH body again for a logged-in page (after a reload the page
  has its cookie but not its CSRF token), with the car and the map tile URL.
- ``POST /api/logout``.
- Scripts send ``Authorization: Bearer <secret>`` instead (no cookie, no CSRF token).
- A POST (or WebSocket) authenticated by the cookie needs a same-origin ``Origin`` and,
  for a POST, the ``X-CSRF-Token`` header: else 403.
- A secret crosses the network only encrypted, as on the socket: on plain HTTP a login
  or a bearer secret from another machine is refused (403) unless
  SOCKET_SERVER_ALLOW_PLAIN_AUTH=yes; HTTPS (WEB_SERVER_TLS_CERT) or a one-time link
  (which is no secret: it works once) are the ways in from a phone.

Failed logins (secret, bearer or link) go through the daemon's one
:class:`~eccm.control.authlimit.AuthLimiter`, shared with the control socket: the same
doubling delay per address, the same global ceiling, whichever door a guesser uses.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
from collections.abc import Callable
from typing import Any

from aiohttp import web

from eccm.clock import Clock
from eccm.control.authlimit import AuthLimiter, Verdict, address_key
from eccm.control.server import is_loopback
from eccm.service import BadRequest, Busy, Caller, Credentials, Forbidden, Scope, scope_names
from eccm.web.errors import http_error, json_response
from eccm.web.keep import SessionFile
from eccm.web.loginlink import LoginLinks
from eccm.web.sessions import LIFETIME, Sessions, WebSession

log = logging.getLogger(__name__)

COOKIE = "eccm_session"
CSRF_HEADER = "X-CSRF-Token"
MAX_SECRET = 1024
# Seconds a request body (at most 16 KiB) may take to arrive. aiohttp has no such limit: a
# login body sent a byte every few seconds held its connection for ever, no secret needed.
BODY_TIMEOUT = 10.0


def plain_secret_allowed(remote: str | None, tls: bool, allow_plain: bool) -> bool:
    """Whether a secret may be taken from this peer: over TLS, from this machine, or when
    SOCKET_SERVER_ALLOW_PLAIN_AUTH=yes (the socket's rule for ``AUTH <secret>``)."""
    return tls or allow_plain or is_loopback(remote or "")


def peer_address(request: web.Request) -> str:
    """The client's address as the limiter keys it (its /64 for IPv6)."""
    return address_key(request.remote or "unknown")


class WebAuth:
    def __init__(
        self,
        credentials: Credentials,
        links: LoginLinks,
        limiter: AuthLimiter,
        clock: Clock,
        *,
        tls: bool,
        info: dict[str, object],
        allow_plain: bool = False,
        keep: SessionFile | None = None,
    ) -> None:
        self._credentials = credentials
        self._links = links
        self._limiter = limiter
        self._clock = clock
        self._tls = tls
        self._allow_plain = allow_plain
        self._info = info  # car, map tiles: for /api/session
        self.sessions = Sessions(clock, keep=keep)

    def routes(self) -> list[web.RouteDef]:
        return [
            web.post("/api/login", self.login),
            web.post("/api/logout", self.logout),
            web.get("/api/session", self.session),
            # GET only: a HEAD (a chat app's or mail scanner's look at the link) took the
            # link and opened a session for whoever sent it, and the owner's tap got
            # "not valid". aiohttp answers a HEAD of every GET route unless told.
            web.get("/login/{token}", self.login_link, allow_head=False),
        ]

    # -- every request -------------------------------------------------------------------
    async def caller(self, request: web.Request, *, write: bool = False) -> Caller:
        """Who sends this request; raises 401 (noauth, auth_failed) or 403 (CSRF, Origin).

        ``write``: the request changes something (a POST), or opens a WebSocket: with the
        cookie it then needs a same-origin Origin (and, for a POST, the CSRF token).
        """
        header = request.headers.get("Authorization")
        if header is not None:
            scheme, _, secret = header.partition(" ")
            if scheme.lower() != "bearer" or not secret.strip():
                raise http_error("noauth", "send Authorization: Bearer <secret>, or log in")
            self._secret_may_cross(request)
            scopes = await self.check(request, lambda: self._credentials.by_plain(secret.strip()))
            if scopes is None:
                raise http_error("auth_failed", "wrong secret")
            return self.sessions.bearer(peer_address(request), scopes)
        session = self.sessions.get(request.cookies.get(COOKIE))
        if session is None:
            raise http_error("noauth", "log in first (POST /api/login), or send a bearer secret")
        if write:
            self._same_origin(request, required=True)
            if request.method != "GET":
                given = request.headers.get(CSRF_HEADER, "")
                if not hmac.compare_digest(given.encode("utf-8"), session.csrf.encode("ascii")):
                    raise Forbidden(f"missing or wrong {CSRF_HEADER} header (see /api/session)")
        return session.caller

    def still_in(self, request: web.Request) -> Callable[[], bool]:
        """For a response that outlives ``request`` (the live WebSocket), asked after
        :meth:`caller`: whether what let it in still does. A cookie session ends at logout
        (from any tab), when it expires, or when newer logins displace it; a bearer
        secret holds while the daemon runs."""
        if "Authorization" in request.headers:
            return lambda: True
        session = self.sessions.get(request.cookies.get(COOKIE))
        if session is None:
            return lambda: False
        return lambda: self.sessions.is_open(session)

    def _same_origin(self, request: web.Request, *, required: bool) -> None:
        origin = request.headers.get("Origin")
        if origin is None:
            if required:
                raise Forbidden("a request with the session cookie needs an Origin header")
            return
        own = f"{'https' if self._tls else 'http'}://{request.host}"
        if origin.lower() != own.lower():
            raise Forbidden("cross-site request refused (Origin is not this page)")

    async def check(
        self, request: web.Request, verify: Callable[[], frozenset[Scope] | None]
    ) -> frozenset[Scope] | None:
        """``verify`` run through the limiter: waits out the address's delay, raises busy
        while another attempt of the address is held back; the scopes, or None (wrong)."""
        address = peer_address(request)
        holder = object()
        granted: frozenset[Scope] | None = None

        def attempt() -> bool:
            nonlocal granted
            granted = verify()
            return granted is not None

        try:
            while True:
                result = self._limiter.attempt(address, attempt, holder)
                if result.verdict is Verdict.HELD:
                    await asyncio.sleep(max(0.0, result.until - self._clock.monotonic()))
                    continue
                if result.verdict is Verdict.REFUSED:
                    left = max(1.0, result.until - self._clock.monotonic())
                    raise Busy(
                        f"another login from your address is held back for {left:.0f} s "
                        "after failed attempts: try again after it",
                        float(round(left)),
                    )
                return granted if result.verdict is Verdict.ACCEPTED else None
        finally:
            self._limiter.cancel(address, holder)  # the client went away while held back

    # -- routes --------------------------------------------------------------------------
    async def login(self, request: web.Request) -> web.Response:
        self._same_origin(request, required=False)
        body = await json_body(request)
        secret = body.get("secret")
        if not isinstance(secret, str) or not secret or len(secret) > MAX_SECRET:
            raise BadRequest('send {"secret": "..."}')
        self._secret_may_cross(request)
        scopes = await self.check(request, lambda: self._credentials.by_plain(secret))
        if scopes is None:
            log.debug("web login from %s failed", peer_address(request))  # the limiter logs
            raise http_error("auth_failed", "wrong secret")
        session = self._open(request, scopes, "secret")
        response = json_response(self._auth_body(session))
        self._set_cookie(response, session)
        return response

    async def login_link(self, request: web.Request) -> web.StreamResponse:
        token = request.match_info["token"]
        dest = request.headers.get("Sec-Fetch-Dest")
        if dest is not None and dest != "document":
            # Not the browser opening the link but a page loading it (an <img>, a fetch):
            # refused before the limiter, or any site the owner visits could count failures
            # against the owner's address, holding back every login and AUTH from it.
            raise Forbidden("a login link is opened in the browser, not loaded by a page")
        if self.sessions.get(request.cookies.get(COOKIE)) is not None:
            # Logged in already: the link tapped again (from the chat it came in, or a
            # restored tab) opens the page instead of "not valid". A fresh link still
            # counts (a read-only session may be given a full one). No limiter: a session
            # is no guesser, and a link is not guessable.
            scopes = self._links.take(token)
            if scopes is None:
                return web.Response(status=303, headers={"Location": "/"})
        else:
            scopes = await self.check(request, lambda: self._links.take(token))
        if scopes is None:
            return web.Response(
                status=401,
                content_type="text/html",
                text=_INVALID_LINK,
            )
        session = self._open(request, scopes, "one-time link")
        response = web.Response(status=303, headers={"Location": "/"})
        self._set_cookie(response, session)
        return response

    async def session(self, request: web.Request) -> web.Response:
        caller = await self.caller(request)
        session = self.sessions.get(request.cookies.get(COOKIE))
        body: dict[str, Any] = {
            "class": "AUTH",
            "ok": True,
            "scopes": scope_names(caller.scopes),
            "csrf": None if session is None or "Authorization" in request.headers else session.csrf,
            **self._info,
        }
        return json_response(body)

    async def logout(self, request: web.Request) -> web.Response:
        await self.caller(request, write=True)
        sid = request.cookies.get(COOKIE)
        if sid and "Authorization" not in request.headers:
            self.sessions.close(sid)
        response = json_response({"class": "LOGOUT", "ok": True})
        response.del_cookie(COOKIE, path="/")
        return response

    # -- helpers -------------------------------------------------------------------------
    def _secret_may_cross(self, request: web.Request) -> None:
        # Refused before it is compared: not a guess, not counted by the limiter.
        if not plain_secret_allowed(request.remote, self._tls, self._allow_plain):
            raise Forbidden(
                "a secret is refused over plain HTTP from the network: use HTTPS "
                "(WEB_SERVER_TLS_CERT), a one-time link (eccm login-link), or set "
                "SOCKET_SERVER_ALLOW_PLAIN_AUTH=yes"
            )

    def _open(self, request: web.Request, scopes: frozenset[Scope], how: str) -> WebSession:
        session = self.sessions.open(scopes, peer_address(request))
        log.info(
            "%s logged in (%s) with scopes %s",
            session.caller.name,
            how,
            ",".join(scope_names(scopes)),
        )
        return session

    def _auth_body(self, session: WebSession) -> dict[str, object]:
        return {
            "class": "AUTH",
            "ok": True,
            "scopes": scope_names(session.caller.scopes),
            "csrf": session.csrf,
        }

    def _set_cookie(self, response: web.StreamResponse, session: WebSession) -> None:
        response.set_cookie(
            COOKIE,
            session.sid,
            path="/",
            max_age=int(LIFETIME),
            httponly=True,
            samesite="Strict",
            secure=self._tls,
        )


async def json_body(request: web.Request) -> dict[str, Any]:
    """The request's JSON object (bad_request for anything else)."""
    try:
        async with asyncio.timeout(BODY_TIMEOUT):
            body = await request.json()
    except TimeoutError:
        raise BadRequest(f"the request's body did not arrive within {BODY_TIMEOUT:g} s") from None
    except (ValueError, RecursionError):  # 16 KiB of "[" nests deeper than Python recurses
        body = None
    if not isinstance(body, dict):
        raise BadRequest("send a JSON object")
    return body


_INVALID_LINK = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>ECCM: login link not valid</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="icon" href="/static/icon.svg" type="image/svg+xml">
<link rel="stylesheet" href="/static/style.css"></head>
<body><main><h1>This login link is not valid</h1>
<p>A login link works once, for a few minutes, and not after the daemon restarted.
Make a new one on the car's computer with <code>eccm login-link</code>, or
<a href="/">log in with the secret</a>.</p></main></body></html>
"""
