"""Helpers of the web page tests (not a test module): the real daemon with its web page on
the ELM327 emulator, and a plain HTTP client on a real socket that keeps its cookie."""

from __future__ import annotations

import contextlib
import http.client
import json
import socket
import ssl
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from http.cookies import SimpleCookie
from pathlib import Path
from typing import Any

from eccm.config import Config, parse
from eccm.hub import Hub
from tests.speed import set_speed
from tests.waiting import wait_until

WAIT = 60.0  # generous: the suite shares two cores with other work
SECRET = "correct horse battery staple, a secret of 40+ chars"
READ_SECRET = "a read-only secret that is long enough, too"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def value(hub: Hub, name: str) -> Any:
    reading = hub.latest_values().get(name)
    return None if reading is None else reading.value


@dataclass
class Reply:
    status: int
    headers: http.client.HTTPMessage
    body: bytes

    @property
    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Http:
    """One browser's worth of HTTP: its cookie, its CSRF token, its Origin."""

    host: str
    port: int
    tls: ssl.SSLContext | None = None
    cookies: dict[str, str] = field(default_factory=dict)
    csrf: str | None = None

    @property
    def origin(self) -> str:
        return f"{'https' if self.tls else 'http'}://{self.host}:{self.port}"

    def request(
        self,
        method: str,
        path: str,
        body: Mapping[str, object] | bytes | None = None,
        headers: Mapping[str, str] | None = None,
        *,
        browser: bool = True,
    ) -> Reply:
        """``browser``: send what a browser would with it (the cookie, and for a POST the
        Origin and the CSRF token), unless ``headers`` says otherwise."""
        sent: dict[str, str] = {}
        if browser and self.cookies:
            sent["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        if browser and method == "POST":
            sent["Origin"] = self.origin
            if self.csrf:
                sent["X-CSRF-Token"] = self.csrf
        data: bytes | None = None
        if body is not None:
            data = body if isinstance(body, bytes) else json.dumps(body).encode()
            sent["Content-Type"] = "application/json"
        sent.update(headers or {})
        sent = {k: v for k, v in sent.items() if v != ""}  # "" removes a header
        conn: http.client.HTTPConnection
        if self.tls is not None:
            conn = http.client.HTTPSConnection(self.host, self.port, timeout=WAIT, context=self.tls)
        else:
            conn = http.client.HTTPConnection(self.host, self.port, timeout=WAIT)
        try:
            conn.request(method, path, body=data, headers=sent)
            response = conn.getresponse()
            reply = Reply(response.status, response.headers, response.read())
        finally:
            conn.close()
        for header in reply.headers.get_all("Set-Cookie") or []:
            jar = SimpleCookie()
            jar.load(header)
            for name, morsel in jar.items():
                if morsel["max-age"] == "0" or morsel.value == "":
                    self.cookies.pop(name, None)
                else:
                    self.cookies[name] = morsel.value
        return reply

    def get(self, path: str, **kw: Any) -> Reply:
        return self.request("GET", path, **kw)

    def post(self, path: str, body: Mapping[str, object] | None = None, **kw: Any) -> Reply:
        return self.request("POST", path, body, **kw)

    def login(self, secret: str = SECRET) -> Reply:
        reply = self.post("/api/login", {"secret": secret})
        if reply.status == 200:
            self.csrf = reply.json["csrf"]
        return reply


@dataclass
class WebCar:
    emu: Any
    daemon: Any
    cfg: Config

    @property
    def port(self) -> int:
        return int(self.daemon.web.address[1])

    def http(self, tls: ssl.SSLContext | None = None) -> Http:
        return Http("127.0.0.1", self.port, tls)

    def speed(self, kmh: int) -> None:
        """The emulated car's speed from now on, once the daemon has seen it for good."""
        set_speed(self.emu, self.daemon.hub, kmh)


def web_config(pty: str, records: Path, **keys: str) -> Config:
    return parse(
        {
            "CAR_IDENTIFIER": "web-car",
            "OBD_INTERFACE": pty,
            "OBD_FAST_COMMANDS": "RPM,SPEED",
            "OBD_SLOW_COMMANDS": "COOLANT_TEMP",
            "SAMPLE_INTERVAL": "0.05",
            "FILE_ROTATION_SECONDS": "2",
            "RECORD_DIRECTORY_LOCATION": str(records),
            "ENABLE_WEB_SERVER": "yes",
            "WEB_SERVER_PORT": str(free_port()),
            "SOCKET_SERVER_SECRET": SECRET,
            "SOCKET_SERVER_READ_SECRET": READ_SECRET,
            **keys,
        }
    )


@contextlib.contextmanager
def web_daemon(records: Path, **keys: str) -> Iterator[WebCar]:
    """``eccm run`` as a library on an emulated car, its web page on a free port."""
    from eccm.app import Daemon
    from eccm.sim.car import emulated_car

    with emulated_car("car") as emu:
        cfg = web_config(emu.get_pty(), records, **keys)
        daemon = Daemon(cfg)
        daemon.start()
        try:
            assert daemon.link is not None and daemon.web is not None
            wait_until(lambda: daemon.link.state == "connected", timeout=WAIT, what="the link")
            wait_until(
                lambda: value(daemon.hub, "RPM") is not None, timeout=WAIT, what="a first row"
            )
            yield WebCar(emu, daemon, cfg)
        finally:
            emu.answer.pop("SPEED", None)
            daemon.stop()
