"""The control socket under abuse, on real sockets: regression tests of what an attacker on
the LAN or a clumsy script found (connections that never authenticate, slow TLS
handshakes, plain text on the TLS port), and of `eccm query` as a shell user meets it
(a closed pipe, Ctrl-C, a held-back AUTH, a TLS port without --tls)."""

from __future__ import annotations

import contextlib
import io
import logging
import os
import pty
import select
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from eccm.clock import SystemClock
from eccm.config import Config, parse
from eccm.control import client as query_client
from eccm.control.client import hmac_proof, run_query
from eccm.control.server import ControlServer, Limits, address_key
from tests.control_fakes import SECRET, Client, FakeBackend
from tests.terminal import ECCM
from tests.waiting import wait_until

WAIT = 60.0  # generous: the suite shares two cores with other work
OPENSSL = shutil.which("openssl")


class OffsetClock(SystemClock):
    """The system clock, moved forward on demand (a deadline passes without waiting)."""

    def __init__(self) -> None:
        self.offset = 0.0

    def time(self) -> float:
        return super().time() + self.offset

    def monotonic(self) -> float:
        return super().monotonic() + self.offset


def make_config(**extra: str) -> Config:
    return parse(
        {
            "CAR_IDENTIFIER": "abuse-car",
            "ENABLE_SOCKET_SERVER": "yes",
            "SOCKET_SERVER_SECRET": SECRET,
            **extra,
        }
    )


class World:
    def __init__(self) -> None:
        self.clock = OffsetClock()
        self.backend = FakeBackend(self.clock)
        self.servers: list[ControlServer] = []
        self.clients: list[Client] = []

    def serve(self, cfg: Config | None = None, **limits: Any) -> tuple[str, int]:
        server = ControlServer.from_config(
            cfg or make_config(), self.backend, self.clock, port=0, limits=Limits(**limits)
        )
        server.start()
        self.servers.append(server)
        return server.address

    @property
    def server(self) -> ControlServer:
        return self.servers[-1]

    def connect(self, address: tuple[str, int], **kw: Any) -> Client:
        kw.setdefault("timeout", WAIT)
        c = Client(address, **kw)
        self.clients.append(c)
        return c

    def stop(self) -> None:
        for c in self.clients:
            c.close()
        for s in self.servers:
            s.stop()


@pytest.fixture
def world() -> Iterator[World]:
    w = World()
    yield w
    w.stop()


def self_signed(directory: Path, names: str) -> tuple[str, str]:
    if OPENSSL is None:
        pytest.skip("openssl is not on PATH: cannot make a self-signed certificate")
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        [OPENSSL, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "2", "-subj", "/CN=car",
         "-addext", f"subjectAltName={names}"],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    return str(cert), str(key)


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    return self_signed(tmp_path_factory.mktemp("tls"), "DNS:localhost,IP:127.0.0.1")


def tls_config(certificate: tuple[str, str], **extra: str) -> Config:
    return make_config(
        SOCKET_SERVER_TLS_CERT=certificate[0], SOCKET_SERVER_TLS_KEY=certificate[1], **extra
    )


def client_hello() -> bytes:
    """The first flight of a real TLS client."""
    obj = ssl.create_default_context().wrap_bio(
        ssl.MemoryBIO(), outgoing := ssl.MemoryBIO(), server_hostname="localhost"
    )
    with pytest.raises(ssl.SSLWantReadError):
        obj.do_handshake()
    return outgoing.read()


def codes(replies: list[dict[str, Any]]) -> list[Any]:
    return [r.get("code") for r in replies]


# -- connections that never authenticate ---------------------------------------------------
def test_connections_that_never_authenticate_cannot_lock_the_owner_out(world: World) -> None:
    """Found: four (or SOCKET_SERVER_MAX_CLIENTS) idle connections, renewed every 10 s,
    refused everyone else with too_many_clients for as long as the attacker liked."""
    addr = world.serve(make_config(SOCKET_SERVER_MAX_CLIENTS="4"))
    crowd = []
    for _ in range(4):  # 127.0.0.2 stands for another host on the LAN
        c = world.connect(addr, source="127.0.0.2")
        c.hello()
        crowd.append(c)
    wait_until(lambda: world.server.clients == 4, timeout=WAIT, what="four connections")
    owner = world.connect(addr).auth()  # displaces the crowd's oldest connection
    assert owner.ask("GET RPM")["class"] == "VALUES"
    assert codes(crowd[0].rest()) == ["too_many_clients"]
    assert crowd[1].ask("PING") == {"class": "PONG"}  # the rest of the crowd still waits
    # The crowd cannot push the owner out, nor take turns evicting each other.
    assert codes(world.connect(addr, source="127.0.0.2").rest()) == ["too_many_clients"]
    assert owner.ask("PING") == {"class": "PONG"}
    # A second connection of the owner's gets in too: the crowd still holds the most.
    second = world.connect(addr).auth()
    assert second.ask("PING") == {"class": "PONG"}
    assert codes(crowd[1].rest()) == ["too_many_clients"]


def test_authenticated_clients_and_fair_shares_are_never_displaced(world: World) -> None:
    addr = world.serve(make_config(SOCKET_SERVER_MAX_CLIENTS="3"))
    a = world.connect(addr, source="127.0.0.2").auth()
    b = world.connect(addr, source="127.0.0.2").auth()
    waiting = world.connect(addr, source="127.0.0.3")
    waiting.hello()
    wait_until(lambda: world.server.clients == 3, timeout=WAIT, what="three connections")
    # Two authenticated, one waiting from an address with no more than the newcomer's
    # fair share: nobody is displaced.
    assert codes(world.connect(addr).rest()) == ["too_many_clients"]
    assert a.ask("PING") == b.ask("PING") == waiting.ask("PING") == {"class": "PONG"}


# -- the AUTH limiter (issue 10.4) ---------------------------------------------------------
WRONG = f"AUTH HMAC {'0' * 64}"


def replied(clients: list[Client]) -> list[Client]:
    """The clients with a reply waiting (their HELLO was read already)."""
    ready, _w, _x = select.select([c.sock for c in clients], [], [], 0)
    return [c for c in clients if c.sock in ready]


def held_one_at_a_time(world: World, clients: list[Client]) -> dict[str, int]:
    """Fire a wrong AUTH on every client at once; every one but a single held-back AUTH is
    answered without waiting for the server's clock; then the clock passes the delay."""
    for c in clients:
        c.hello()
    for c in clients:
        c.send(WRONG)
    wait_until(
        lambda: len(replied(clients)) >= len(clients) - 1,
        timeout=WAIT,
        what="every AUTH but one answered",
    )
    answered = replied(clients)
    got: dict[str, int] = {}
    for c in answered:
        code = c.reply()["code"]
        got[code] = got.get(code, 0) + 1
    (held,) = [c for c in clients if c not in answered]  # nothing moved the clock: still held
    world.clock.offset += 61.0
    assert held.reply()["code"] == "auth_failed"
    return got


def test_auths_from_one_address_are_checked_one_at_a_time(world: World) -> None:
    """Found: failed AUTHs held back for one address were all released together after the
    delay, so SOCKET_SERVER_MAX_CLIENTS guesses passed per delay."""
    # A long auth timeout: the clock jumps below must not close a connection whose AUTH
    # the server has not read yet.
    addr = world.serve(failure_base=30.0, auth_timeout=600.0)
    first = world.connect(addr)
    first.hello()
    assert first.ask(WRONG)["code"] == "auth_failed"
    crowd = [world.connect(addr) for _ in range(5)]
    assert held_one_at_a_time(world, crowd) == {"busy": 4}
    # Refused, not checked: the right secret still gets in once the address's delay is over.
    owner = world.connect(addr)
    owner.send(f"AUTH HMAC {hmac_proof(SECRET, owner.hello()['nonce'])}")
    world.clock.offset += 61.0
    assert owner.reply() == {"class": "AUTH", "ok": True, "scopes": ["read", "control", "diagnose"]}


def test_rotating_loopback_addresses_are_one_address(world: World) -> None:
    """Found: every 127.x.y.z had its own entry: 300 guesses from rotating loopback
    addresses took 0.2 s. Eight connections from eight of them get one guess checked,
    one held back, the rest refused."""
    addr = world.serve(failure_base=30.0)
    crowd = [world.connect(addr, source=f"127.0.0.{i}") for i in range(2, 10)]
    assert held_one_at_a_time(world, crowd) == {"auth_failed": 1, "busy": 6}


def test_failed_auths_do_not_flood_the_log(world: World, caplog: pytest.LogCaptureFixture) -> None:
    """Found: every failed AUTH logged a WARNING (826 lines in one run)."""
    caplog.set_level(logging.INFO, logger="eccm.control")
    addr = world.serve(failure_base=0.01, failure_cap=0.02)  # short delays: 20 quick failures
    for _ in range(20):
        c = world.connect(addr)
        c.hello()
        assert c.ask(WRONG)["code"] == "auth_failed"
        c.close()
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert 1 <= len(warnings) <= 3, warnings  # one a minute (the run may straddle two)
    assert world.connect(addr).auth().ask("PING") == {"class": "PONG"}


def test_a_surplus_client_that_pipelines_still_reads_why(world: World) -> None:
    """`printf 'AUTH ...\\nSTATUS\\n' | nc` on a full socket: the requests are read and
    discarded before the close, which a peer could otherwise see as a reset that destroys
    the line (Linux on loopback happens to keep it; other stacks need not)."""
    addr = world.serve(make_config(SOCKET_SERVER_MAX_CLIENTS="1"))
    owner = world.connect(addr).auth()
    for _ in range(10):
        c = world.connect(addr)
        with contextlib.suppress(OSError):  # the old server may have reset it already
            c.sock.sendall(f"AUTH {SECRET}\nSTATUS\n".encode())
            c.sock.shutdown(socket.SHUT_WR)
        assert codes(c.rest()) == ["too_many_clients"]
    assert owner.ask("PING") == {"class": "PONG"}


def test_a_flood_of_refused_connections_does_not_flood_the_log(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    """Found: one WARNING line per refused connection, as fast as an attacker connects."""
    caplog.set_level(logging.INFO, logger="eccm.control")
    addr = world.serve(make_config(SOCKET_SERVER_MAX_CLIENTS="1"))
    owner = world.connect(addr).auth()
    for _ in range(30):
        with socket.create_connection(addr, timeout=WAIT) as s:
            assert b"too_many_clients" in s.recv(4096)

    def refusals() -> list[str]:
        return [r.getMessage() for r in caplog.records if "refused" in r.getMessage()]

    assert len(refusals()) == 1
    world.clock.offset += 61.0
    with socket.create_connection(addr, timeout=WAIT) as s:
        assert b"too_many_clients" in s.recv(4096)
    assert len(refusals()) == 2 and "and 29 more like it" in refusals()[1]
    assert owner.ask("PING") == {"class": "PONG"}


def test_address_key_groups_an_ipv6_host_by_its_slash_64() -> None:
    assert address_key("192.0.2.7") == "192.0.2.7"
    assert address_key("::ffff:192.0.2.7") == "192.0.2.7"
    assert address_key("2001:db8:1:2::5") == address_key("2001:db8:1:2:ffff::9")
    assert address_key("2001:db8:1:2::5") != address_key("2001:db8:1:3::5")
    assert address_key("fe80::1%eth0") == "fe80::/64"
    assert address_key("::1") == "::1"


# -- TLS -----------------------------------------------------------------------------------
def test_a_tls_handshake_that_trickles_frees_its_slot(
    world: World, certificate: tuple[str, str]
) -> None:
    addr = world.serve(tls_config(certificate, SOCKET_SERVER_MAX_CLIENTS="1"), auth_timeout=1.0)
    hello = client_hello()
    raw = socket.create_connection(addr, timeout=WAIT)
    stop = threading.Event()

    def trickle() -> None:  # a byte every 0.2 s: 100 s for the whole ClientHello
        for byte in hello:
            if stop.wait(0.2):
                return
            try:
                raw.sendall(bytes([byte]))
            except OSError:
                return

    sender = threading.Thread(target=trickle, daemon=True)
    sender.start()
    try:
        wait_until(lambda: world.server.clients == 1, timeout=WAIT, what="the slow client")
        wait_until(lambda: world.server.clients == 0, timeout=WAIT, what="its slot to free")
        c = world.connect(addr, tls=ssl.create_default_context(cafile=certificate[0]))
        assert c.auth().ask("PING") == {"class": "PONG"}
    finally:
        stop.set()
        sender.join(WAIT)
        raw.close()


def test_the_tls_handshake_counts_toward_the_time_to_authenticate(
    world: World, certificate: tuple[str, str]
) -> None:
    """Found: the 10 s to authenticate started after the handshake, which may itself take
    10 s: 20 s of a slot for someone who never proves anything."""
    # A long time to authenticate by the server's clock, which the test moves: were it
    # counted from the end of the handshake, the close would come minutes later.
    addr = world.serve(tls_config(certificate), auth_timeout=1000.0)
    raw = socket.create_connection(addr, timeout=WAIT)
    wait_until(lambda: world.server.clients == 1, timeout=WAIT, what="the connection")
    world.clock.offset += 990.0  # the handshake takes 990 s by the server's clock
    tls = ssl.create_default_context(cafile=certificate[0]).wrap_socket(
        raw, server_hostname="localhost"
    )
    lines = tls.makefile("rb")
    try:
        assert b'"HELLO"' in lines.readline()
        world.clock.offset += 20.0  # 1010 s since connect
        assert lines.readline() == b""  # closed: the time to authenticate ran out
    finally:
        lines.close()
        tls.close()


def test_plain_text_on_the_tls_port_is_told_so(world: World, certificate: tuple[str, str]) -> None:
    """Found: `nc` on the TLS port saw nothing at all, then an end (a binary alert)."""
    addr = world.serve(tls_config(certificate))
    c = world.connect(addr)
    c.sock.sendall(b"PING\r\n")
    replies = c.rest()
    assert codes(replies) == ["bad_request"] and "--tls" in replies[0]["message"]
    c = world.connect(addr, tls=ssl.create_default_context(cafile=certificate[0])).auth()
    assert c.ask("PING") == {"class": "PONG"}


# -- eccm query ----------------------------------------------------------------------------
def _env() -> dict[str, str]:
    return {
        **os.environ,
        "ECCM_SOCKET_SERVER_SECRET": SECRET,
        # A file of its own: a config.ini in the working directory must not be read, and
        # a named file that is missing is an error.
        "ECCM_CONFIG": str(Path(__file__).with_name("data") / "query-only.ini"),
        "PYTHONUNBUFFERED": "1",
    }


def test_query_into_a_pipe_closed_early_ends_quietly(world: World) -> None:
    """Found: `eccm query WATCH RPM | head -n 2` ended with exit 2 and "Broken pipe",
    blamed on the daemon."""
    _host, port = world.serve()
    proc = subprocess.Popen(
        [*ECCM, "query", "--port", str(port), "WATCH", "RPM", "EVERY", "0.1"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=_env(),
    )  # fmt: skip
    assert proc.stdout is not None and proc.stderr is not None
    try:
        assert b'"WATCH"' in proc.stdout.readline()
        assert b'"LIVE"' in proc.stdout.readline()
        proc.stdout.close()  # what head does after its lines
        assert proc.wait(WAIT) == 0
        assert proc.stderr.read() == b""
    finally:
        proc.kill()
        proc.wait()
        proc.stderr.close()


def test_query_watch_ends_on_sigint_without_a_traceback(world: World) -> None:
    _host, port = world.serve()
    proc = subprocess.Popen(
        [*ECCM, "query", "--port", str(port), "WATCH", "EVERY", "0.1"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=_env(),
    )  # fmt: skip
    assert proc.stdout is not None
    try:
        for _ in range(3):
            assert proc.stdout.readline()
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=WAIT)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == 0 and err == b""
    assert all(line.startswith(b'{"class":"LIVE"') for line in out.splitlines()[:-1])
    wait_until(lambda: world.server.clients == 0, timeout=WAIT, what="the QUIT")


def _in_a_terminal(argv: list[str], answer: bytes) -> tuple[int, str]:
    """Run ``argv`` on a pseudo-terminal; type ``answer`` once it asks something."""
    pid, fd = pty.fork()
    if pid == 0:  # the child: exec at once, nothing else
        os.execve(sys.executable, [*ECCM, *argv], _env())
    out = b""
    answered = False
    deadline = time.monotonic() + WAIT
    try:
        while time.monotonic() < deadline:
            ready, _w, _x = select.select([fd], [], [], 0.1)
            if ready:
                try:
                    chunk = os.read(fd, 4096)
                except OSError:  # EIO: the child is gone
                    break
                if not chunk:
                    break
                out += chunk
            if not answered and b"Type yes" in out:
                os.write(fd, answer)
                answered = True
    finally:
        _pid, status = os.waitpid(pid, 0)
        os.close(fd)
    return os.waitstatus_to_exitcode(status), out.decode("utf-8", "replace")


def test_query_ctrl_c_at_the_dtc_clear_prompt_clears_nothing(world: World) -> None:
    """Found: Ctrl-C at "Type yes to confirm" ended with exit 0 and not a word."""
    _host, port = world.serve()
    code, out = _in_a_terminal(["query", "--port", str(port), "DTC", "CLEAR"], b"\x03")
    assert code == 1, out
    assert "nothing cleared" in out and "Traceback" not in out
    assert world.backend.clears == 0
    code, out = _in_a_terminal(["query", "--port", str(port), "DTC", "CLEAR"], b"yes\n")
    assert code == 0 and '"DTC_CLEARED"' in out, out
    assert world.backend.clears == 1


def test_query_waits_out_a_held_back_auth_and_says_why(
    world: World, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Found: the daemon may hold an AUTH back 60 s after failures from the address, but
    `eccm query` gave up after 30 s with "no reply in time"."""
    addr = world.serve(failure_base=30.0)
    bad = world.connect(addr)
    bad.hello()
    assert bad.ask(f"AUTH HMAC {'0' * 64}")["code"] == "auth_failed"
    err = io.StringIO()
    monkeypatch.setattr(sys, "stderr", err)
    monkeypatch.setattr(query_client, "AUTH_NOTICE", 0.1)
    result: list[int] = []
    runner = threading.Thread(
        target=lambda: result.append(run_query(*addr, False, None, ["PING"], SECRET))
    )
    runner.start()
    try:
        wait_until(lambda: "holds authentication back" in err.getvalue(), timeout=WAIT)
    finally:
        world.clock.offset += 31.0  # the delay is over by the server's clock
        runner.join(WAIT)
    assert result == [0]
    assert '"PONG"' in capsys.readouterr().out


def test_query_without_tls_on_a_tls_port_says_to_add_it(
    world: World, certificate: tuple[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    _host, port = world.serve(tls_config(certificate), auth_timeout=1.0)
    assert run_query("localhost", port, False, None, ["PING"], SECRET) == 2
    assert "add --tls" in capsys.readouterr().err
    # --cafile alone means TLS: there is nothing else to trust a certificate for.
    assert run_query("localhost", port, False, certificate[0], ["PING"], SECRET) == 0
    assert capsys.readouterr().out.strip() == '{"class":"PONG"}'


def test_query_says_which_certificate_problem_it_is(
    world: World, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Found: a name the certificate does not list, and a --cafile that does not exist,
    were both answered with advice that could not help (pass --cafile; is eccm running?)."""
    cert, key = self_signed(tmp_path, "DNS:my-car.local")
    _host, port = world.serve(make_config(SOCKET_SERVER_TLS_CERT=cert, SOCKET_SERVER_TLS_KEY=key))
    assert run_query("127.0.0.1", port, True, cert, ["PING"], SECRET) == 2
    err = capsys.readouterr().err
    assert "mismatch" in err and "subjectAltName" in err and "pass the certificate" not in err
    missing = str(tmp_path / "no-such.pem")
    assert run_query("127.0.0.1", port, True, missing, ["PING"], SECRET) == 2
    err = capsys.readouterr().err
    assert f"--cafile {missing} cannot be read" in err and "is eccm running" not in err


def test_query_refuses_a_port_out_of_range(capsys: pytest.CaptureFixture[str]) -> None:
    """Found: --port 70000 was taken for port 4464 (getaddrinfo keeps 16 bits)."""
    for port in (70000, 0, -1):
        assert run_query("127.0.0.1", port, False, None, ["PING"], SECRET) == 2
        assert "is not a TCP port" in capsys.readouterr().err


def test_readme_bash_dev_tcp_session(world: World) -> None:
    """The README's bash-only session, word for word (with the port changed)."""
    if OPENSSL is None or shutil.which("bash") is None:
        pytest.skip("needs bash and openssl")
    _host, port = world.serve()
    script = (
        f"exec 3<>/dev/tcp/127.0.0.1/{port}; read -r HELLO <&3\n"
        """NONCE=$(printf %s "$HELLO" | sed 's/.*"nonce":"\\([0-9a-f]*\\)".*/\\1/')\n"""
        """printf 'AUTH HMAC %s\\nSTATUS\\nQUIT\\n' "$(printf %s "$NONCE" | openssl dgst """
        """-sha256 -hmac "$SECRET" | awk '{print $NF}')" >&3; cat <&3\n"""
    )
    proc = subprocess.run(
        ["bash", "-c", script], env={**os.environ, "SECRET": SECRET},
        capture_output=True, text=True, timeout=WAIT,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert [line[:17] for line in proc.stdout.splitlines()] == [
        '{"class":"AUTH","',
        '{"class":"STATUS"',
    ]
