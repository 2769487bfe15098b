"""The web page under a hostile or careless client on the car's network: the real daemon on
the ELM327 emulator, a second web server on its parts bound to every address, real sockets."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import http.client
import json
import logging
import select
import socket
import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from eccm.backend import DaemonBackend
from eccm.service import Service
from eccm.store.budget import DiskSettings
from eccm.web.gate import MAX_CONNECTIONS
from eccm.web.server import WebServer
from eccm.web.sessions import LIMIT as SESSIONS
from tests.waiting import wait_until
from tests.web_helpers import READ_SECRET, WAIT, Http, WebCar, web_daemon

SURPLUS = 20


@pytest.fixture(scope="module")
def car(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebCar]:
    with web_daemon(tmp_path_factory.mktemp("records")) as running:
        yield running


@contextlib.contextmanager
def page(car: WebCar, **keys: str) -> Iterator[WebServer]:
    """A web server on the daemon's own parts, on every address (as for a phone)."""
    d = car.daemon
    cfg = type(car.cfg)(**{**car.cfg.__dict__, **keys})
    backend = DaemonBackend(
        disk=DiskSettings.from_config(cfg), hub=d.hub, link=d.link, recorder=d.recorder
    )
    server = WebServer.from_config(cfg, Service(backend, d.clock), bind="0.0.0.0", port=0)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def other_address() -> str | None:
    """An address of this machine that is not loopback: another host, as the page sees it."""
    for target in ("192.0.2.1", "10.255.255.1", "198.51.100.1"):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            try:
                s.connect((target, 9))  # UDP: only picks a route, sends nothing
            except OSError:
                continue
            host = str(s.getsockname()[0])
            if not host.startswith("127."):
                return host
    return None


class Crowd:
    """Connections that send nothing and never read, from one address."""

    def __init__(self, port: int, count: int) -> None:
        self.socks = [socket.create_connection(("127.0.0.1", port), timeout=WAIT)]
        self.socks += [
            socket.create_connection(("127.0.0.1", port), timeout=WAIT) for _ in range(count - 1)
        ]
        self._ended: set[socket.socket] = set()
        self.replies = b""

    def ended(self) -> int:
        """How many the server closed (a refusal is read first)."""
        live = [s for s in self.socks if s not in self._ended]
        readable, _w, _x = select.select(live, [], [], 0)
        for s in readable:
            try:
                data = s.recv(4096)
            except OSError as exc:
                assert exc.errno in (errno.ECONNRESET, errno.EPIPE), exc
                data = b""
            if data:
                self.replies += data
            else:
                self._ended.add(s)
        return len(self._ended)

    def close(self) -> None:
        for s in self.socks:
            s.close()


def test_a_crowd_of_idle_connections_gets_a_bounded_share(car: WebCar) -> None:
    """Found: aiohttp kept every connection that sent nothing for an hour; 1,050 of them
    from one client ran the daemon out of descriptors (the recorder dropped rows, the
    control socket could not accept). Now the page holds at most MAX_CONNECTIONS; the
    rest are told why (plain HTTP) and closed."""
    with page(car) as server:
        crowd = Crowd(server.address[1], MAX_CONNECTIONS + SURPLUS)
        try:
            wait_until(lambda: crowd.ended() >= SURPLUS, timeout=WAIT, what="surplus closed")
            assert b"HTTP/1.1 503" in crowd.replies and b"too_many_clients" in crowd.replies
            assert crowd.ended() == SURPLUS  # the first ones are kept: no self-eviction
            assert server.connections == MAX_CONNECTIONS
        finally:
            crowd.close()
        # Closed connections give their places back.
        wait_until(lambda: server.connections == 0, timeout=WAIT, what="the places given back")
        conn = http.client.HTTPConnection("127.0.0.1", server.address[1], timeout=WAIT)
        conn.request("GET", "/")
        assert conn.getresponse().status == 200
        conn.close()


def test_the_owner_from_another_address_displaces_the_crowd(car: WebCar) -> None:
    owner = other_address()
    if owner is None:
        pytest.skip("no address on this machine besides loopback")
    with page(car) as server:
        crowd = Crowd(server.address[1], MAX_CONNECTIONS)
        try:
            conn = http.client.HTTPConnection(owner, server.address[1], timeout=WAIT)
            conn.request("GET", "/api/session")
            reply = conn.getresponse()
            assert reply.status == 401 and b"noauth" in reply.read()  # served: not refused
            conn.close()
            wait_until(lambda: crowd.ended() >= 1, timeout=WAIT, what="the oldest dropped")
            assert crowd.socks[0] in crowd._ended
        finally:
            crowd.close()


def test_half_open_tls_handshakes_get_a_bounded_share(
    car: WebCar, tls_cert: tuple[Path, Path]
) -> None:
    """TCP connections that never send a ClientHello are held connections too: beyond the
    limit they are closed at once, not after asyncio's 60 s handshake timeout."""
    cert, key = tls_cert
    with page(car, web_server_tls_cert=str(cert), web_server_tls_key=str(key)) as server:
        crowd = Crowd(server.address[1], MAX_CONNECTIONS + SURPLUS)
        try:
            wait_until(lambda: crowd.ended() >= SURPLUS, timeout=WAIT / 2, what="surplus closed")
            assert server.connections == MAX_CONNECTIONS
        finally:
            crowd.close()
        # The page still speaks HTTPS once they are gone.
        wait_until(lambda: server.connections == 0, timeout=WAIT, what="the places given back")
        ctx = ssl.create_default_context(cafile=str(cert))
        conn = http.client.HTTPSConnection(
            "127.0.0.1", server.address[1], timeout=WAIT, context=ctx
        )
        conn.request("GET", "/")
        assert conn.getresponse().status == 200
        conn.close()


def test_plain_http_on_the_https_page_is_told_to_use_https(
    car: WebCar, tls_cert: tuple[Path, Path]
) -> None:
    """Found: http:// on the HTTPS port got an empty reply (the browser says "connection
    closed", curl "empty reply"); the control socket tells `nc` users what to do."""
    cert, key = tls_cert
    with page(car, web_server_tls_cert=str(cert), web_server_tls_key=str(key)) as server:
        conn = http.client.HTTPConnection("127.0.0.1", server.address[1], timeout=WAIT)
        conn.request("GET", "/api/status")
        reply = conn.getresponse()
        assert reply.status == 400 and b"https://" in reply.read()
        conn.close()
        ctx = ssl.create_default_context(cafile=str(cert))
        tls = http.client.HTTPSConnection("127.0.0.1", server.address[1], timeout=WAIT, context=ctx)
        tls.request("GET", "/")
        assert tls.getresponse().status == 200
        tls.close()


# -- odd bodies --------------------------------------------------------------------------
def test_deeply_nested_json_is_a_bad_request_not_a_traceback(
    car: WebCar, caplog: pytest.LogCaptureFixture
) -> None:
    """Found: 8,000 "[" as a login body (no secret needed) made json.loads raise
    RecursionError: a 500 and a 25-line traceback in the log for every such request."""
    http = car.http()
    with caplog.at_level(logging.WARNING, logger="eccm"):
        reply = http.post("/api/login", b"[" * 8000)
        assert reply.status == 400 and reply.json["code"] == "bad_request"
        http.login()
        got = asyncio.run(_live_send(car, http, "[" * 4000))
    assert got["class"] == "ERROR" and got["code"] == "bad_request"
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


def test_a_secret_no_utf_8_can_encode_is_a_wrong_secret_not_a_traceback(
    car: WebCar, caplog: pytest.LogCaptureFixture
) -> None:
    """Found: {"secret": "\\ud800"} (valid JSON, a lone surrogate; no secret needed) made
    the comparison raise UnicodeEncodeError: a 500 and a traceback per request."""
    with caplog.at_level(logging.WARNING, logger="eccm"):
        reply = car.http().post("/api/login", b'{"secret": "\\ud800"}')
        assert reply.status == 401 and reply.json["code"] == "auth_failed"
        # A header's byte 0xff reaches the daemon as the surrogate \udcff.
        reply = car.http().get("/api/status", headers={"Authorization": "Bearer \xff"})
        assert reply.status == 401 and reply.json["code"] == "auth_failed"
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


def test_requests_that_are_not_http_are_one_quiet_line_not_tracebacks(
    car: WebCar, caplog: pytest.LogCaptureFixture
) -> None:
    """Found: a byte 0xff in the path, or Content-Length with Transfer-Encoding, made
    aiohttp log an ERROR with a traceback (and the request line) per request."""
    bad = [
        b"GET /login/\xff-a-link-token HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET /api/values?names=\xff HTTP/1.1\r\nHost: x\r\n\r\n",
        b"POST /api/login HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    ]
    with caplog.at_level(logging.DEBUG):
        for request in bad:
            with socket.create_connection(("127.0.0.1", car.port), timeout=WAIT) as s:
                s.sendall(request)
                reply = http.client.HTTPResponse(s)
                reply.begin()
                assert reply.status == 400
    web = [r for r in caplog.records if r.name.startswith(("aiohttp", "eccm.web"))]
    assert not [r for r in web if r.levelno >= logging.WARNING or r.exc_info]
    told = [r.getMessage() for r in caplog.records if "not valid HTTP" in r.getMessage()]
    assert len(told) == 1 and "Invalid char in url path" in told[0]  # once a minute
    assert "token" not in caplog.text


async def _live_send(car: WebCar, http: Http, text: str) -> dict[str, Any]:
    """The first reply to ``text`` on the page's WebSocket that is not a LIVE message."""
    headers = {
        "Cookie": "; ".join(f"{k}={v}" for k, v in http.cookies.items()),
        "Origin": http.origin,
    }
    url = f"http://127.0.0.1:{car.port}/api/live"
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=WAIT)) as session,
        session.ws_connect(url, headers=headers) as ws,
    ):
        await ws.send_str(text)
        while True:
            msg = await ws.receive(timeout=WAIT)
            assert msg.type is aiohttp.WSMsgType.TEXT, msg
            body: dict[str, Any] = json.loads(msg.data)
            if body["class"] != "LIVE":
                return body


def test_a_login_body_that_never_arrives_is_given_up(car: WebCar) -> None:
    """Found: a login whose body stopped after its first byte held its connection for ever
    (aiohttp has no time limit on a body), no secret needed."""
    with socket.create_connection(("127.0.0.1", car.port), timeout=WAIT) as s:
        s.sendall(
            b"POST /api/login HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{"
        )
        reply = http.client.HTTPResponse(s)
        reply.begin()
        assert reply.status == 400
        assert json.loads(reply.read())["code"] == "bad_request"


# -- sessions ----------------------------------------------------------------------------
def test_logins_with_the_read_secret_do_not_log_the_owner_out(car: WebCar) -> None:
    """Found: the page keeps 64 sessions and a new login ended the oldest: a passenger's
    script logging in 64 times with the read secret logged the owner out."""
    owner = car.http()
    assert owner.login().status == 200
    for _ in range(SESSIONS + 6):
        assert car.http().login(READ_SECRET).status == 200
    reply = owner.get("/api/session")
    assert reply.status == 200 and reply.json["scopes"] == ["read", "control", "diagnose"]
