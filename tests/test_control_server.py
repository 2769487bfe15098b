"""The control server on real TCP and TLS sockets, with an in-memory backend."""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import shutil
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from eccm.clock import SystemClock
from eccm.config import Config, parse
from eccm.control.client import gen_secret, hmac_proof, run_query
from eccm.control.server import ControlServer, Limits, is_loopback
from eccm.errors import ConfigError
from eccm.service import ValueInfo
from tests.control_fakes import SECRET, Client, FakeBackend
from tests.waiting import wait_until

Reply = dict[str, Any]
OPENSSL = shutil.which("openssl")


def make_config(**extra: str) -> Config:
    values = {
        "CAR_IDENTIFIER": "test-car",
        "ENABLE_SOCKET_SERVER": "yes",
        "SOCKET_SERVER_SECRET": SECRET,
    }
    values.update(extra)
    return parse(values)


@pytest.fixture
def world() -> Iterator[World]:
    w = World()
    yield w
    w.stop()


class World:
    def __init__(self) -> None:
        self.clock = SystemClock()
        self.backend = FakeBackend(self.clock)
        self.servers: list[ControlServer] = []
        self.clients: list[Client] = []

    def serve(self, cfg: Config | None = None, **limits: Any) -> tuple[str, int]:
        server = ControlServer.from_config(
            cfg or make_config(),
            self.backend,
            self.clock,
            port=0,
            limits=Limits(**limits),
        )
        server.start()
        self.servers.append(server)
        return server.address

    @property
    def server(self) -> ControlServer:
        return self.servers[-1]

    def connect(self, address: tuple[str, int], **kw: Any) -> Client:
        c = Client(address, **kw)
        self.clients.append(c)
        return c

    def stop(self) -> None:
        for c in self.clients:
            c.close()
        for s in self.servers:
            s.stop()

    def still_serves(self, address: tuple[str, int], **kw: Any) -> None:
        c = self.connect(address, **kw).auth()
        reply = c.ask("GET RPM")
        assert reply["class"] == "VALUES" and reply["values"]["RPM"]["value"] == 850.0
        c.send("QUIT")
        assert c.rest() == []


# -- the ordinary path ---------------------------------------------------------------------
def test_session_over_tcp(world: World) -> None:
    addr = world.serve()
    c = world.connect(addr).auth()
    assert c.ask("PING") == {"class": "PONG"}
    assert c.ask("GET RPM")["values"]["RPM"]["unit"] == "revolutions_per_minute"
    assert c.ask("STATUS")["class"] == "STATUS"
    c.send("QUIT")
    assert c.rest() == []
    wait_until(lambda: world.server.clients == 0, what="the server to forget the client")


def test_an_argument_a_command_does_not_take_is_refused_over_tcp(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`UPLOAD x` once started an upload and `PING x` answered PONG: now each is refused,
    before AUTH too, and the session goes on."""
    uploads: list[int] = []
    upload_now = world.backend.upload_now

    def counted() -> int:
        uploads.append(1)
        return upload_now()

    monkeypatch.setattr(world.backend, "upload_now", counted)
    c = world.connect(world.serve())
    nonce = c.hello()["nonce"]
    for line in ("PING x", "HELP me", "QUIT now"):  # the commands allowed before AUTH
        word = line.split()[0]
        assert c.ask(line) == {
            "class": "ERROR",
            "code": "bad_request",
            "message": f"{word} takes no argument",
        }
    assert c.ask(f"AUTH HMAC {hmac_proof(SECRET, nonce)}")["ok"] is True
    for line in ("STATUS extra", "GNSS x", "UPLOAD x", "SUPPORTED x", "TRIP x", "QUIT x"):
        reply = c.ask(line)
        assert reply["code"] == "bad_request", (line, reply)
        assert reply["message"] == f"{line.split()[0]} takes no argument"
    assert uploads == []
    assert c.ask("WATCH OFF x") == {
        "class": "ERROR",
        "code": "bad_request",
        "message": "WATCH OFF takes no argument",
    }
    assert c.ask("WATCH OFF") == {"class": "WATCH", "ok": True, "watching": False}
    assert c.ask("UPLOAD") == {"class": "UPLOAD", "queued": 3}
    assert uploads == [1]
    c.send("QUIT")
    assert c.rest() == []


def test_nc_style_pipeline_with_half_close(world: World) -> None:
    """`printf 'AUTH secret\\nGET RPM\\n' | nc -N host port`: plain AUTH from loopback."""
    addr = world.serve()
    c = world.connect(addr)
    c.sock.sendall(f"AUTH {SECRET}\r\nGET RPM SPEED\r\nDTC\r\n".encode())
    c.sock.shutdown(socket.SHUT_WR)
    replies = c.rest()
    assert [r["class"] for r in replies] == ["HELLO", "AUTH", "VALUES", "DTC"]


def test_pipelined_burst_is_answered_in_full(world: World) -> None:
    addr = world.serve()
    c = world.connect(addr).auth()
    c.sock.sendall(b"GET\n" * 2000)
    for _ in range(2000):
        assert c.reply()["class"] == "VALUES"
    assert c.ask("PING") == {"class": "PONG"}


def test_a_slow_dtc_read_holds_neither_the_watch_nor_the_order_of_replies(world: World) -> None:
    """The DTC read runs on the connection's worker: LIVE lines go on while the car is
    asked, and a PING sent after the DTC is answered after it."""
    gate = world.backend.dtc_gate = threading.Event()
    try:
        c = world.connect(world.serve()).auth()
        assert c.ask("WATCH RPM EVERY 0.1")["class"] == "WATCH"
        c.send("DTC")
        c.send("PING")
        wait_until(world.backend.dtc_waiting.is_set, what="the DTC read to start")
        assert [c.reply()["class"] for _ in range(3)] == ["LIVE"] * 3
        gate.set()
        seen: list[str] = []
        while "PONG" not in seen:
            seen.append(c.reply()["class"])
        assert [x for x in seen if x != "LIVE"] == ["DTC", "PONG"]
    finally:
        gate.set()


def test_stop_does_not_wait_for_a_call_on_the_car(world: World) -> None:
    gate = world.backend.dtc_gate = threading.Event()
    try:
        c = world.connect(world.serve()).auth()
        c.send("DTC")
        wait_until(world.backend.dtc_waiting.is_set, what="the DTC read to start")
        world.server.stop()
        assert world.server.clients == 0  # the connection ended, the read still waits
        assert not gate.is_set()
    finally:
        gate.set()


def test_loopback_detection() -> None:
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("::ffff:127.0.0.5")
    assert not is_loopback("192.0.2.1") and not is_loopback("::ffff:192.0.2.1")
    assert not is_loopback("not an address")


# -- abuse ---------------------------------------------------------------------------------
def test_line_over_the_limit_before_auth(world: World) -> None:
    addr = world.serve()
    c = world.connect(addr)
    c.hello()
    c.send("P" * 300)
    replies = c.rest()
    assert [r.get("code") for r in replies] == ["line_too_long"]
    world.still_serves(addr)


def test_line_over_the_limit_after_auth(world: World) -> None:
    addr = world.serve()
    c = world.connect(addr).auth()
    assert c.ask("GET " + "A" * 1000)["code"] == "unknown_value"
    c.send("GET " + "A" * 1100)
    assert [r.get("code") for r in c.rest()] == ["line_too_long"]
    world.still_serves(addr)


def test_four_mebibytes_without_newline(world: World) -> None:
    addr = world.serve()
    c = world.connect(addr).auth()
    blob = b"x" * (4 << 20)

    def flood() -> None:
        try:
            c.sock.sendall(blob)
            c.sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass  # the server may close before it all went: that is its right

    sender = threading.Thread(target=flood)
    sender.start()
    replies = c.rest()
    sender.join(30)
    assert [r.get("code") for r in replies] == ["line_too_long"]
    world.still_serves(addr)


def test_binary_junk(world: World) -> None:
    addr = world.serve()
    rng = __import__("random").Random(1234)
    junk = bytes(rng.randrange(256) for _ in range(200_000))
    c = world.connect(addr)
    c.hello()
    with contextlib.suppress(OSError):
        c.sock.sendall(junk)
    replies = c.rest()
    assert replies, "junk must be answered before the close"
    assert all(r["class"] == "ERROR" for r in replies)
    assert replies[-1]["code"] in ("line_too_long", "bad_request")
    world.still_serves(addr)


def _client_hello() -> bytes:
    """The first flight of a real TLS client, as it would arrive on the plain port."""
    ctx = ssl.create_default_context()
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ctx.wrap_bio(incoming, outgoing, server_hostname="localhost")
    with pytest.raises(ssl.SSLWantReadError):
        obj.do_handshake()
    return outgoing.read()


def test_tls_client_hello_on_the_plain_port(world: World) -> None:
    addr = world.serve()
    c = world.connect(addr)
    c.hello()
    c.sock.sendall(_client_hello())
    replies = c.rest()
    assert len(replies) == 1 and replies[0]["code"] == "bad_request"
    assert "TLS" in replies[0]["message"]
    # A real TLS client gets a handshake error, not a hang.
    with pytest.raises((ssl.SSLError, OSError)):
        world.connect(addr, tls=ssl.create_default_context(), timeout=10)
    world.still_serves(addr)


def test_http_request(world: World) -> None:
    addr = world.serve()
    c = world.connect(addr)
    c.hello()
    c.sock.sendall(b"GET / HTTP/1.1\r\nHost: car.local\r\nUser-Agent: curl/8\r\n\r\n")
    replies = c.rest()
    assert [r.get("code") for r in replies] == ["bad_request"]
    world.still_serves(addr)


def test_too_many_clients(world: World) -> None:
    addr = world.serve(make_config(SOCKET_SERVER_MAX_CLIENTS="2"))
    a = world.connect(addr).auth()
    b = world.connect(addr)
    b.hello()
    c = world.connect(addr)
    replies = c.rest()
    assert [r.get("code") for r in replies] == ["too_many_clients"]
    assert a.ask("PING") == {"class": "PONG"}  # the others are unaffected
    b.send("QUIT")
    assert b.rest() == []
    wait_until(lambda: world.server.clients == 1, what="a free slot")
    world.still_serves(addr)


def test_clients_of_the_read_secret_cannot_take_the_last_connection(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    """Found: clients of the read secret (a passenger's phone, a dashboard) that
    authenticate and WATCH hold their connections for ever, authenticated clients are
    never displaced, so SOCKET_SERVER_MAX_CLIENTS of them locked the owner out."""
    caplog.set_level(logging.INFO, logger="eccm.control")
    reader = "a read-only secret for the passenger, 40+ chars"
    addr = world.serve(make_config(SOCKET_SERVER_MAX_CLIENTS="3", SOCKET_SERVER_READ_SECRET=reader))

    def auth_as(secret: str) -> tuple[Client, Reply]:
        c = world.connect(addr)
        nonce = c.hello()["nonce"]
        return c, c.ask(f"AUTH HMAC {hmac_proof(secret, nonce)}")

    readers = [auth_as(reader) for _ in range(2)]
    assert [r["scopes"] for _c, r in readers] == [["read"], ["read"]]
    for c, _r in readers:
        assert c.ask("WATCH RPM EVERY 60")["class"] == "WATCH"
    third, refused = auth_as(reader)
    assert refused == {
        "class": "ERROR",
        "code": "too_many_clients",
        "message": "clients of the read secret hold 2 of the 3 connections; the last is kept "
        "for the full secret",
    }
    assert third.rest() == []
    assert any("the last is kept for the full secret" in r.getMessage() for r in caplog.records)
    wait_until(lambda: world.server.clients == 2, what="the refused reader's slot to be free")
    owner, ok = auth_as(SECRET)
    assert ok["ok"] is True and "control" in ok["scopes"]
    assert owner.ask("PING") == {"class": "PONG"}
    # A reader that leaves makes room for another.
    readers[0][0].send("QUIT")
    readers[0][0].rest()
    wait_until(lambda: world.server.clients == 2, what="the reader to leave")
    _c, again = auth_as(reader)
    assert again["scopes"] == ["read"]


def test_a_watcher_that_never_reads_is_dropped_and_others_are_served(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    # Many values make big LIVE lines, so that the unread bytes pile up in seconds.
    for i in range(150):
        name = f"VALUE_{i:03d}_WITH_A_LONG_NAME"
        world.backend.info.append(ValueInfo(name, "unit_of_some_length", "", True))
        world.backend.set(name, 1234.5678 + i, "unit_of_some_length")
    addr = world.serve()
    watcher = world.connect(addr, rcvbuf=4096).auth()
    watcher.send("WATCH EVERY 0.1")
    other = world.connect(addr).auth()
    deadline = time.monotonic() + 60
    while world.server.clients == 2 and time.monotonic() < deadline:
        # Served all along; the pause only paces these requests.
        assert other.ask("GET RPM")["class"] == "VALUES"
        time.sleep(0.05)
    wait_until(lambda: world.server.clients == 1, timeout=60, what="the watcher to be dropped")
    assert "left unread" in caplog.text
    assert other.ask("PING") == {"class": "PONG"}
    world.still_serves(addr)


def test_stop_closes_every_client(world: World) -> None:
    addr = world.serve()
    c = world.connect(addr).auth()
    c.send("WATCH EVERY 0.5")
    world.server.stop()
    replies = c.rest()  # whatever was in flight, then the end
    assert all(r["class"] in ("WATCH", "LIVE") for r in replies)
    with pytest.raises(OSError):
        Client(addr, timeout=2)


# -- timeouts and failure delays -----------------------------------------------------------
def test_auth_timeout(world: World) -> None:
    addr = world.serve(auth_timeout=0.5)
    c = world.connect(addr)
    c.hello()
    assert c.rest() == []


def test_idle_timeout(world: World) -> None:
    addr = world.serve(idle_timeout=0.5)
    c = world.connect(addr).auth()
    assert c.rest() == []


def test_failure_delay_per_address(world: World) -> None:
    """The delays count from the failure; t0 is taken before it, so they are lower bounds."""
    addr = world.serve(failure_base=0.4)
    bad = world.connect(addr)
    bad.hello()
    t0 = time.monotonic()
    assert bad.ask(f"AUTH HMAC {'0' * 64}")["code"] == "auth_failed"
    assert bad.rest() == []  # a failed AUTH closes
    good = world.connect(addr)
    nonce = good.hello()["nonce"]
    assert good.ask(f"AUTH HMAC {hmac_proof(SECRET, nonce)}") == {
        "class": "AUTH",
        "ok": True,
        "scopes": ["read", "control", "diagnose"],
    }
    assert time.monotonic() - t0 >= 0.4  # held back, though right
    # Success reset the address; then two failures in a row: the next waits twice as long.
    first = world.connect(addr)
    first.hello()
    assert first.ask(f"AUTH HMAC {'0' * 64}")["code"] == "auth_failed"
    second = world.connect(addr)
    second.hello()
    t0 = time.monotonic()
    assert second.ask(f"AUTH HMAC {'0' * 64}")["code"] == "auth_failed"
    late = world.connect(addr)
    late.hello()
    assert late.ask(f"AUTH HMAC {'0' * 64}")["code"] == "auth_failed"
    assert time.monotonic() - t0 >= 0.8


# -- the listen queue (issue 10.7) ---------------------------------------------------------
TCP_ESTABLISHED = 1


def tcp_state(sock: socket.socket) -> tuple[int, int]:
    """(tcpi_state, tcpi_total_retrans) of a Linux TCP socket (struct tcp_info)."""
    info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 104)
    return info[0], int.from_bytes(info[100:104], "little")


@pytest.mark.skipif(not hasattr(socket, "TCP_INFO"), reason="needs Linux TCP_INFO")
def test_a_burst_of_connects_waits_in_the_listen_queue_without_syn_retransmits(
    world: World,
) -> None:
    """Found: listen(16): 200 back-to-back connects overflowed the queue 22 times, and 11
    connects waited 1.02 s for the SYN to be sent again. With the accept loop held still,
    200 connects must all be completed by the kernel at once: none left in SYN-SENT, none
    retransmitted (a SYN the kernel dropped is only sent again after 1 s)."""
    addr = world.serve()
    socks: list[socket.socket] = []
    # The accept loop blocks on the server's lock right after its first accept, so every
    # other connect has to wait in the listen queue.
    with world.server._admission.lock:
        try:
            for _ in range(200):
                s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                socks.append(s)
                s.setblocking(False)
                with contextlib.suppress(BlockingIOError):
                    s.connect(addr)

            def in_syn_sent() -> int:
                return sum(tcp_state(s)[0] != TCP_ESTABLISHED for s in socks)

            # Loopback completes a queued connect within the connect() call; a dropped SYN
            # stays in SYN-SENT while the queue is full, whatever the wait.
            with contextlib.suppress(AssertionError):
                wait_until(lambda: in_syn_sent() == 0, timeout=20.0)
            stuck = in_syn_sent()
            retransmitted = sum(tcp_state(s)[1] > 0 for s in socks)
        finally:
            for s in socks:
                s.close()
    assert (stuck, retransmitted) == (0, 0)


# -- configuration problems ----------------------------------------------------------------
def test_port_in_use_is_a_config_error(world: World) -> None:
    _host, port = world.serve()
    server = ControlServer.from_config(make_config(), world.backend, port=port)
    with pytest.raises(ConfigError, match="SOCKET_SERVER_PORT"):
        server.start()


def test_unreadable_tls_files_are_a_config_error(tmp_path: Path) -> None:
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate\n")
    cfg = make_config(SOCKET_SERVER_TLS_CERT=str(junk), SOCKET_SERVER_TLS_KEY=str(junk))
    with pytest.raises(ConfigError, match="SOCKET_SERVER_TLS_CERT"):
        ControlServer.from_config(cfg, FakeBackend(SystemClock()))


# -- TLS -----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    if OPENSSL is None:
        pytest.skip("openssl is not on PATH: cannot make a self-signed certificate")
    d = tmp_path_factory.mktemp("tls")
    cert, key = d / "cert.pem", d / "key.pem"
    subprocess.run(
        [OPENSSL, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "2", "-subj", "/CN=localhost",
         "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    return str(cert), str(key)


def _tls_config(certificate: tuple[str, str], **extra: str) -> Config:
    cert, key = certificate
    return make_config(SOCKET_SERVER_TLS_CERT=cert, SOCKET_SERVER_TLS_KEY=key, **extra)


def _trusting(cert: str) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=cert)


def test_tls_session(world: World, certificate: tuple[str, str]) -> None:
    addr = world.serve(_tls_config(certificate))
    c = world.connect(addr, tls=_trusting(certificate[0]))
    assert isinstance(c.sock, ssl.SSLSocket)
    assert c.sock.version() in ("TLSv1.2", "TLSv1.3")
    hello = c.hello()
    assert hello["auth"] == ["hmac-sha256", "plain"]
    assert c.ask(f"AUTH {SECRET}") == {
        "class": "AUTH",
        "ok": True,
        "scopes": ["read", "control", "diagnose"],
    }
    assert c.ask("GET RPM")["values"]["RPM"]["value"] == 850.0
    c.send("QUIT")
    assert c.rest() == []


@pytest.mark.filterwarnings("ignore:ssl.TLSVersion.TLSv1_1 is deprecated:DeprecationWarning")
def test_tls_refuses_old_versions_and_plain_text(
    world: World, certificate: tuple[str, str]
) -> None:
    addr = world.serve(_tls_config(certificate))
    old = _trusting(certificate[0])
    old.minimum_version = ssl.TLSVersion.MINIMUM_SUPPORTED
    old.maximum_version = ssl.TLSVersion.TLSv1_1
    with pytest.raises((ssl.SSLError, OSError)):
        world.connect(addr, tls=old, timeout=10)
    # Plain text (someone typing into nc) is told what the port speaks, and never served.
    plain = world.connect(addr, timeout=20)
    plain.sock.sendall(f"AUTH {SECRET}\nPING\n".encode())
    replies = plain.rest()
    assert [r.get("code") for r in replies] == ["bad_request"]
    assert "speaks TLS" in replies[0]["message"] and "--tls" in replies[0]["message"]
    world.still_serves(addr, tls=_trusting(certificate[0]))


def test_tls_too_many_clients_get_a_readable_refusal(
    world: World, certificate: tuple[str, str]
) -> None:
    addr = world.serve(_tls_config(certificate, SOCKET_SERVER_MAX_CLIENTS="1"))
    ctx = _trusting(certificate[0])
    first = world.connect(addr, tls=ctx)
    first.hello()
    second = world.connect(addr, tls=ctx)
    assert [r.get("code") for r in second.rest()] == ["too_many_clients"]


def test_openssl_s_client_quiet(world: World, certificate: tuple[str, str]) -> None:
    assert OPENSSL is not None
    host, port = world.serve(_tls_config(certificate))
    proc = subprocess.run(
        [OPENSSL, "s_client", "-quiet", "-connect", f"{host}:{port}",
         "-CAfile", certificate[0], "-verify_return_error"],
        input=f"AUTH {SECRET}\nGET RPM\nQUIT\n".encode(),
        capture_output=True, timeout=60,
    )  # fmt: skip
    replies = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith(b"{")]
    assert [r["class"] for r in replies] == ["HELLO", "AUTH", "VALUES"], proc.stderr


def test_readme_hmac_one_liner_matches(world: World) -> None:
    if OPENSSL is None:
        pytest.skip("openssl is not on PATH")
    nonce = "0123456789abcdef0123456789abcdef"
    out = subprocess.run(
        ["sh", "-c", 'printf %s "$NONCE" | openssl dgst -sha256 -hmac "$SECRET"'],
        env={**os.environ, "NONCE": nonce, "SECRET": SECRET},
        capture_output=True, check=True, text=True, timeout=30,
    ).stdout  # fmt: skip
    assert out.split()[-1] == hmac_proof(SECRET, nonce)


# -- eccm query ----------------------------------------------------------------------------
def test_query_prints_the_reply(world: World, capsys: pytest.CaptureFixture[str]) -> None:
    host, port = world.serve()
    assert run_query(host, port, False, None, ["get", "RPM"], SECRET) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 1 and json.loads(out[0])["values"]["RPM"]["value"] == 850.0
    assert run_query(host, port, False, None, ["GET", "NOPE"], SECRET) == 1
    assert json.loads(capsys.readouterr().out)["code"] == "unknown_value"
    # `QUIT now` is refused like any other word a command does not take, and said so.
    assert run_query(host, port, False, None, ["QUIT", "now"], SECRET) == 1
    assert json.loads(capsys.readouterr().out)["message"] == "QUIT takes no argument"
    assert run_query(host, port, False, None, ["quit"], SECRET) == 0
    assert capsys.readouterr().out == ""


def test_query_errors_are_one_clear_line(world: World, capsys: pytest.CaptureFixture[str]) -> None:
    host, port = world.serve()
    assert run_query(host, port, False, None, ["STATUS"], "wrong") == 2
    assert "check the secret" in capsys.readouterr().err
    assert run_query(host, port, False, None, ["STATUS"], None) == 2
    assert "ECCM_SOCKET_SERVER_SECRET" in capsys.readouterr().err
    free = socket.socket()
    free.bind(("127.0.0.1", 0))
    unused = free.getsockname()[1]
    free.close()
    assert run_query(host, unused, False, None, ["STATUS"], SECRET) == 2
    assert "cannot connect" in capsys.readouterr().err


def test_query_waits_for_an_auth_held_back_for_another_connection(
    world: World, capsys: pytest.CaptureFixture[str]
) -> None:
    """A wrong AUTH of someone else from this address is held back: `eccm query` is told
    `busy` with a retry hint, waits it out and authenticates, instead of saying the secret
    is wrong."""
    host, port = world.serve(failure_base=1.0)
    first = world.connect((host, port))
    first.hello()
    assert first.ask(f"AUTH HMAC {'0' * 64}")["code"] == "auth_failed"
    held = world.connect((host, port))
    held.hello()
    held.send(f"AUTH HMAC {'0' * 64}")  # held back for a second after the first failure
    probe = world.connect((host, port))
    probe.hello()
    refused = probe.ask(f"AUTH HMAC {'0' * 64}")
    assert refused["code"] == "busy" and refused["retry_after"] >= 1
    assert run_query(host, port, False, None, ["PING"], SECRET) == 0
    out = capsys.readouterr()
    assert json.loads(out.out.splitlines()[-1]) == {"class": "PONG"}
    assert "authentication refused" not in out.err


def test_query_dtc_clear_asks_for_confirmation(
    world: World, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    host, port = world.serve()
    monkeypatch.setattr("sys.stdin", io.StringIO("no\n"))
    assert run_query(host, port, False, None, ["DTC", "CLEAR"], SECRET) == 1
    assert world.backend.clears == 0
    capsys.readouterr()
    monkeypatch.setattr("sys.stdin", io.StringIO("yes\n"))
    assert run_query(host, port, False, None, ["DTC", "CLEAR"], SECRET) == 0
    classes = [json.loads(line)["class"] for line in capsys.readouterr().out.splitlines()]
    assert classes == ["CONFIRM", "DTC_CLEARED"]
    assert world.backend.clears == 1


def test_query_over_tls(
    world: World, certificate: tuple[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    _host, port = world.serve(_tls_config(certificate))
    assert run_query("localhost", port, True, certificate[0], ["PING"], SECRET) == 0
    assert json.loads(capsys.readouterr().out) == {"class": "PONG"}
    assert run_query("localhost", port, True, None, ["PING"], SECRET) == 2
    assert "--cafile" in capsys.readouterr().err


def test_gen_secret_is_long_and_random() -> None:
    a, b = gen_secret(), gen_secret()
    assert len(a) >= 32 and a != b and a.isprintable() and " " not in a
    make_config(SOCKET_SERVER_SECRET=a, SOCKET_SERVER_BIND="0.0.0.0")  # long enough for it


def test_read_secret_over_the_socket_reads_but_may_not_upload_or_clear(world: World) -> None:
    reader = "a read-only secret for the dashboard, 40+ characters"
    address = world.serve(make_config(SOCKET_SERVER_READ_SECRET=reader))
    c = world.connect(address)
    nonce = c.hello()["nonce"]
    assert c.ask(f"AUTH HMAC {hmac_proof(reader, nonce)}") == {
        "class": "AUTH",
        "ok": True,
        "scopes": ["read"],
    }
    assert c.ask("GET RPM")["class"] == "VALUES"
    for line in ("UPLOAD", "DTC CLEAR"):
        reply = c.ask(line)
        assert reply["class"] == "ERROR" and reply["code"] == "forbidden", reply
    assert world.backend.clears == 0
    full = world.connect(address).auth()  # the full secret: every scope, as before
    assert full.ask("UPLOAD") == {"class": "UPLOAD", "queued": 3}
    assert full.ask("DTC CLEAR")["class"] == "CONFIRM"


def test_query_read_only_uses_the_read_secret(
    world: World,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`eccm query --read-only` authenticates with SOCKET_SERVER_READ_SECRET: it reads, and
    the server refuses what needs another scope."""
    from eccm.cli import main

    reader = "a read-only secret for the dashboard, 40+ characters"
    monkeypatch.delenv("ECCM_SOCKET_SERVER_SECRET", raising=False)
    monkeypatch.delenv("ECCM_SOCKET_SERVER_READ_SECRET", raising=False)
    _host, port = world.serve(make_config(SOCKET_SERVER_READ_SECRET=reader))
    config = tmp_path / "config.ini"
    config.write_text(
        f"[DEFAULT]\nCAR_IDENTIFIER=test-car\nSOCKET_SERVER_PORT={port}\n"
        f"SOCKET_SERVER_SECRET={SECRET}\nSOCKET_SERVER_READ_SECRET={reader}\n"
    )
    assert main(["query", "--config", str(config), "--read-only", "GET", "RPM"]) == 0
    assert json.loads(capsys.readouterr().out)["class"] == "VALUES"
    assert main(["query", "--config", str(config), "--read-only", "UPLOAD"]) == 1
    assert json.loads(capsys.readouterr().out)["code"] == "forbidden"
    assert main(["query", "--config", str(config), "UPLOAD"]) == 0  # the full secret
    assert json.loads(capsys.readouterr().out)["class"] == "UPLOAD"
    # Without a config file, the environment gives it, as it gives SOCKET_SERVER_SECRET.
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    monkeypatch.delenv("ECCM_CONFIG", raising=False)
    query = ["query", "--port", str(port), "--read-only", "STATUS"]
    assert main(query) == 2
    assert "SOCKET_SERVER_READ_SECRET" in capsys.readouterr().err
    monkeypatch.setenv("ECCM_SOCKET_SERVER_READ_SECRET", reader)
    assert main(query) == 0
    assert json.loads(capsys.readouterr().out)["class"] == "STATUS"
