"""The control protocol session in memory: no socket, no thread, a fake clock."""

from __future__ import annotations

import json
import logging
import re
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from eccm import __version__
from eccm.clock import FakeClock
from eccm.control.protocol import (
    ERROR_CODES,
    LINE_LIMIT_AFTER_AUTH,
    LINE_LIMIT_BEFORE_AUTH,
    TRANSITIONS,
    AuthLimiter,
    Call,
    Event,
    Session,
    State,
    encode,
)
from eccm.gnss.fix import Fix
from eccm.service import ClearResult, Service, ServiceError
from tests.control_fakes import SECRET, FakeBackend, proof

Reply = dict[str, Any]


def decode(data: bytes) -> list[Reply]:
    assert data == b"" or data.endswith(b"\n")
    out = []
    for line in data.decode("ascii").splitlines():
        obj = json.loads(line)  # ascii + json: every reply is valid JSON, NaN refused
        assert isinstance(obj, dict) and isinstance(obj.get("class"), str)
        out.append(obj)
    return out


class Peer:
    """A session and the fake world around it. Calls that may wait are handed over as the
    server hands them to a worker: parked in ``calls``, run by :meth:`pump` (after the
    session has done all it can without them), or left for the test with ``park=True``."""

    def __init__(self, *, plain_auth: bool = False, park: bool = False, **kw: Any) -> None:
        self.clock: FakeClock = kw.pop("clock", None) or FakeClock()
        self.backend: FakeBackend = kw.pop("backend", None) or FakeBackend(self.clock)
        address = kw.pop("address", "192.0.2.7")
        service = Service(self.backend, self.clock, allow_dtc_clear=kw.pop("allow_dtc_clear", True))
        self.calls: list[Call] = []
        self.park = park
        self.session = Session(
            service,
            SECRET,
            self.clock,
            peer=f"{address}:50000",
            address=address,
            plain_auth=plain_auth,
            run_call=self.calls.append,
            **kw,
        )
        self.hello = decode(self.session.data_to_send())

    def pump(self) -> None:
        while True:
            while self.session.step():
                pass
            if self.park or not self.calls:
                return
            self.calls.pop(0).run()

    def feed(self, data: bytes) -> list[Reply]:
        self.session.receive_data(data)
        self.pump()
        return decode(self.session.data_to_send())

    def line(self, text: str) -> list[Reply]:
        return self.feed(text.encode() + b"\n")

    def one(self, text: str) -> Reply:
        replies = self.line(text)
        assert len(replies) == 1, replies
        return replies[0]

    def tick(self, seconds: float = 0.0) -> list[Reply]:
        if seconds:
            self.clock.advance(seconds)
        self.session.tick()
        self.pump()
        return decode(self.session.data_to_send())

    def auth(self) -> Peer:
        reply = self.one(f"AUTH HMAC {proof(self.session.nonce)}")
        assert reply == {"class": "AUTH", "ok": True, "scopes": ["read", "control", "diagnose"]}
        return self


def authed(**kw: Any) -> Peer:
    return Peer(**kw).auth()


def error(reply: Reply, code: str) -> None:
    assert reply["class"] == "ERROR", reply
    assert reply["code"] == code, reply
    assert isinstance(reply["message"], str) and reply["message"]


# -- HELLO and AUTH ------------------------------------------------------------------------
def test_hello_announces_protocol_version_nonce_and_methods() -> None:
    p = Peer()
    assert p.hello == [
        {
            "class": "HELLO",
            "proto": 1,
            "version": __version__,
            "nonce": p.session.nonce,
            "auth": ["hmac-sha256"],
        }
    ]
    assert re.fullmatch(r"[0-9a-f]{32}", p.session.nonce)
    assert Peer().session.nonce != p.session.nonce
    assert Peer(plain_auth=True).hello[0]["auth"] == ["hmac-sha256", "plain"]


def test_hmac_auth_moves_to_ready_case_insensitively() -> None:
    p = Peer()
    assert p.session.state is State.AUTHENTICATING
    assert p.one(f"auth hmac {proof(p.session.nonce).upper()}") == {
        "class": "AUTH",
        "ok": True,
        "scopes": ["read", "control", "diagnose"],
    }
    assert p.session.state is State.READY


def test_wrong_hmac_fails_and_closes_and_ignores_what_follows() -> None:
    p = Peer()
    replies = p.line(f"AUTH HMAC {proof(p.session.nonce, 'another secret')}")
    assert len(replies) == 1
    error(replies[0], "auth_failed")
    assert p.session.closed and p.session.state is State.CLOSED
    assert p.line("PING") == []


def test_hmac_of_another_nonce_fails() -> None:
    other = Peer()
    p = Peer()
    error(p.one(f"AUTH HMAC {proof(other.session.nonce)}"), "auth_failed")


def test_plain_auth_when_allowed(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    p = Peer(plain_auth=True)
    assert p.one(f"AUTH {SECRET}") == {
        "class": "AUTH",
        "ok": True,
        "scopes": ["read", "control", "diagnose"],
    }
    bad = Peer(plain_auth=True)
    error(bad.one("AUTH not the secret at all"), "auth_failed")
    assert bad.session.closed
    assert SECRET not in caplog.text and "not the secret" not in caplog.text


READER = "a read-only secret for the dashboard, 40+ characters"


def test_read_secret_authenticates_with_the_read_scope(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    p = Peer(read_secret=READER)
    assert p.one(f"AUTH HMAC {proof(p.session.nonce, READER)}") == {
        "class": "AUTH",
        "ok": True,
        "scopes": ["read"],
    }
    assert p.one("GET RPM")["values"]["RPM"]["value"] == 850.0
    assert p.one("GET FUEL_LEVEL")["values"]["FUEL_LEVEL"]["value"] == 42.5  # on demand
    for line in ("STATUS", "SUPPORTED", "GNSS", "DTC", "TRIP"):
        assert p.one(line)["class"] == line
    assert p.one("WATCH RPM EVERY 0.5")["class"] == "WATCH"
    assert p.tick(0)[0]["class"] == "LIVE"
    assert p.one("WATCH OFF")["watching"] is False
    for line, scope in (
        ("DTC CLEAR", "diagnose"),
        ("DTC CLEAR CONFIRM 12345678", "diagnose"),
        ("UPLOAD", "control"),
    ):
        reply = p.one(line)
        error(reply, "forbidden")
        assert f"needs the {scope} scope" in reply["message"], reply
    assert p.backend.clears == 0
    assert not p.session.closed and p.one("PING") == {"class": "PONG"}
    assert READER not in caplog.text and "scopes read" in caplog.text


def test_read_secret_in_plain_auth_and_the_full_secret_beside_it() -> None:
    p = Peer(plain_auth=True, read_secret=READER)
    assert p.one(f"AUTH {READER}")["scopes"] == ["read"]
    error(p.one("UPLOAD"), "forbidden")
    full = Peer(read_secret=READER).auth()  # the full secret: every scope, as before
    assert full.one("UPLOAD") == {"class": "UPLOAD", "queued": 3}
    token = full.one("DTC CLEAR")["token"]
    assert full.one(f"DTC CLEAR CONFIRM {token}")["class"] == "DTC_CLEARED"
    wrong = Peer(read_secret=READER)
    error(wrong.one(f"AUTH HMAC {proof(wrong.session.nonce, READER + 'x')}"), "auth_failed")
    assert wrong.session.closed


def test_a_held_back_auth_with_the_read_secret_gets_the_read_scope() -> None:
    clock = FakeClock()
    limiter = AuthLimiter(clock, base=1.0)
    first = Peer(clock=clock, limiter=limiter, read_secret=READER)
    error(first.one(f"AUTH HMAC {'0' * 64}"), "auth_failed")
    second = Peer(clock=clock, limiter=limiter, read_secret=READER)
    assert second.line(f"AUTH HMAC {proof(second.session.nonce, READER)}\nUPLOAD") == []
    replies = second.tick(1.0)
    assert replies[0] == {"class": "AUTH", "ok": True, "scopes": ["read"]}
    error(replies[1], "forbidden")


def test_read_secret_is_nothing_when_unset() -> None:
    p = Peer(plain_auth=True)
    error(p.one(f"AUTH {READER}"), "auth_failed")
    with pytest.raises(ValueError):
        Peer(read_secret=SECRET)


def test_plain_auth_refused_on_plain_network_connection_without_closing() -> None:
    p = Peer(plain_auth=False)
    error(p.one(f"AUTH {SECRET}"), "forbidden")
    assert p.session.state is State.AUTHENTICATING
    p.auth()


def test_auth_syntax_and_repeated_auth() -> None:
    p = Peer()
    error(p.one("AUTH"), "bad_request")
    p.auth()
    error(p.one(f"AUTH HMAC {proof(p.session.nonce)}"), "bad_request")
    assert p.session.state is State.READY


def test_auth_hmac_without_its_proof_is_a_slip_not_a_failure() -> None:
    """Found: `AUTH HMAC` alone (Enter pressed before the paste) was taken for a plain
    secret: a failure counted, the connection closed, the next AUTH held back."""
    limiter = AuthLimiter(FakeClock())
    for plain_auth in (True, False):
        p = Peer(plain_auth=plain_auth, limiter=limiter)
        error(p.one("AUTH HMAC"), "bad_request")
        error(p.one("auth hmac 00 11"), "bad_request")
        assert p.session.state is State.AUTHENTICATING
        p.auth()
    assert limiter.wait("192.0.2.7") == 0.0


def test_before_auth_only_auth_ping_help_quit() -> None:
    p = Peer()
    assert p.one("PING") == {"class": "PONG"}
    help_ = p.one("help")
    assert help_["class"] == "HELP" and "DTC CLEAR CONFIRM <token>" in help_["commands"]
    assert help_["errors"] == list(ERROR_CODES)
    for line in ("GET RPM", "STATUS", "SUPPORTED", "DTC", "DTC CLEAR", "WATCH", "UPLOAD",
                 "GNSS", "FROBNICATE"):  # fmt: skip
        error(p.one(line), "noauth")
    assert p.session.state is State.AUTHENTICATING
    assert p.line("QUIT") == []
    assert p.session.closed


def test_secret_never_logged_even_at_debug(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    p = Peer(plain_auth=True)
    p.one(f"AUTH {SECRET}")
    p.one("GET RPM")
    p.line("QUIT")
    q = Peer(plain_auth=False)
    q.one(f"AUTH {SECRET}")
    assert SECRET not in caplog.text


# -- failure delays ------------------------------------------------------------------------
def test_limiter_doubles_per_failure_up_to_the_cap_and_resets() -> None:
    clock = FakeClock()
    lim = AuthLimiter(clock, base=1.0, cap=60.0)
    assert lim.wait("a") == 0.0
    waits = []
    for _ in range(9):
        lim.failed("a")
        waits.append(lim.wait("a"))
    assert waits == [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 60.0, 60.0, 60.0]
    assert lim.wait("b") == 0.0
    clock.advance(59.5)
    assert lim.wait("a") == pytest.approx(0.5)
    lim.succeeded("a")
    assert lim.wait("a") == 0.0


def test_limiter_forgets_old_failures_and_bounds_its_memory() -> None:
    clock = FakeClock()
    lim = AuthLimiter(clock, forget_after=100.0, max_addresses=3)
    lim.failed("a")
    clock.advance(101)
    assert lim.wait("a") == 0.0
    for host in ("h1", "h2", "h3", "h4"):
        clock.advance(1)
        lim.failed(host)
    assert lim.wait("h1") == 0.0  # the oldest was forgotten
    assert lim.wait("h4") > 0


def test_auth_after_a_failure_is_held_back_right_or_wrong() -> None:
    clock = FakeClock()
    limiter = AuthLimiter(clock, base=1.0)
    first = Peer(clock=clock, limiter=limiter)
    error(first.one(f"AUTH HMAC {'0' * 64}"), "auth_failed")

    second = Peer(clock=clock, limiter=limiter)
    assert second.line(f"AUTH HMAC {proof(second.session.nonce)}\nPING") == []
    assert not second.session.wants_data
    assert second.session.next_deadline() == pytest.approx(clock.monotonic() + 1.0)
    assert second.tick(0.5) == []
    # Released: AUTH checked, then the pipelined PING answered.
    assert second.tick(0.5) == [
        {"class": "AUTH", "ok": True, "scopes": ["read", "control", "diagnose"]},
        {"class": "PONG"},
    ]
    assert limiter.wait("192.0.2.7") == 0.0  # success resets the address

    # Two failures in a row: the next attempt waits 2 s.
    p = Peer(clock=clock, limiter=limiter)
    error(p.one(f"AUTH HMAC {'0' * 64}"), "auth_failed")  # not held: the address was reset
    p = Peer(clock=clock, limiter=limiter)
    assert p.line(f"AUTH HMAC {'0' * 64}") == []
    error(p.tick(1.0)[0], "auth_failed")
    third = Peer(clock=clock, limiter=limiter)
    third.line(f"AUTH HMAC {'1' * 64}")
    assert third.tick(1.9) == []
    error(third.tick(0.2)[0], "auth_failed")


def test_auth_timeout_is_paused_while_an_auth_is_held_back() -> None:
    clock = FakeClock()
    limiter = AuthLimiter(clock, base=1.0, cap=60.0)
    for _ in range(7):
        limiter.failed("192.0.2.7")
    p = Peer(clock=clock, limiter=limiter)
    p.line(f"AUTH HMAC {proof(p.session.nonce)}")
    assert p.tick(30) == [] and not p.session.closed
    assert p.tick(30) == [{"class": "AUTH", "ok": True, "scopes": ["read", "control", "diagnose"]}]


def test_one_pending_auth_per_address_the_others_refused_at_once() -> None:
    """Found (issue 10.4): AUTHs held back for one address were all released together
    after the delay, so SOCKET_SERVER_MAX_CLIENTS guesses passed per delay."""
    clock = FakeClock()
    limiter = AuthLimiter(clock, base=1.0)
    error(Peer(clock=clock, limiter=limiter).one(f"AUTH HMAC {'0' * 64}"), "auth_failed")
    held = Peer(clock=clock, limiter=limiter)
    assert held.line(f"AUTH HMAC {'1' * 64}") == []  # held back 1 s
    for _ in range(5):
        other = Peer(clock=clock, limiter=limiter)
        reply = other.one(f"AUTH HMAC {'2' * 64}")
        error(reply, "busy")  # refused at once, not checked, not counted
        assert "AUTH" in reply["message"]
        # The connection stays (its auth timeout runs); it reads again after the hint.
        assert other.session.state is State.AUTHENTICATING and not other.session.closed
    error(held.tick(1.0)[0], "auth_failed")
    # The address is free again: the next AUTH is held (2 s now), not refused.
    nxt = Peer(clock=clock, limiter=limiter)
    assert nxt.line(f"AUTH HMAC {proof(nxt.session.nonce)}") == []
    assert nxt.tick(2.0) == [
        {"class": "AUTH", "ok": True, "scopes": ["read", "control", "diagnose"]}
    ]


def test_a_held_auth_whose_connection_closes_frees_its_address() -> None:
    clock = FakeClock()
    limiter = AuthLimiter(clock, base=1.0)
    error(Peer(clock=clock, limiter=limiter).one(f"AUTH HMAC {'0' * 64}"), "auth_failed")
    gone = Peer(clock=clock, limiter=limiter)
    assert gone.line(f"AUTH HMAC {'1' * 64}") == []
    gone.session.abort("peer gone")
    late = Peer(clock=clock, limiter=limiter)
    assert late.line(f"AUTH HMAC {proof(late.session.nonce)}") == []  # held, not refused
    assert late.tick(1.0) == [
        {"class": "AUTH", "ok": True, "scopes": ["read", "control", "diagnose"]}
    ]


def test_loopback_addresses_are_one_address_for_the_limiter() -> None:
    """Found (issue 10.4): every 127.x.y.z had its own entry: 300 guesses from rotating
    loopback addresses went through in 0.2 s."""
    clock = FakeClock()
    limiter = AuthLimiter(clock, base=1.0)
    p = Peer(clock=clock, limiter=limiter, address="127.0.0.2")
    error(p.one(f"AUTH HMAC {'0' * 64}"), "auth_failed")
    for other in ("127.0.0.3", "127.1.2.3", "::1", "::ffff:127.0.0.9"):
        assert limiter.wait(other) == pytest.approx(1.0), other
    assert limiter.wait("192.0.2.7") == 0.0
    q = Peer(clock=clock, limiter=limiter, address="127.0.0.3")
    assert q.line(f"AUTH HMAC {'1' * 64}") == []  # held back like the same address


def test_global_ceiling_on_failures_from_rotating_addresses() -> None:
    """Rotating addresses (a /16 of a LAN, IPv6 /64s) must not multiply the guesses: at
    most 30 are checked per minute across every address, right or wrong."""
    clock = FakeClock()
    limiter = AuthLimiter(clock, base=1.0)
    checked = 0
    held: list[Peer] = []
    for i in range(300):
        p = Peer(clock=clock, limiter=limiter, address=f"10.0.{i // 250}.{i % 250 + 1}")
        replies = p.line(f"AUTH HMAC {'0' * 64}")
        if replies:
            error(replies[0], "auth_failed")
            checked += 1
        else:
            held.append(p)
        clock.advance(0.1)  # 300 guesses in 30 s
    assert checked == 30
    # The right secret is held back too while the ceiling is reached (checking it would
    # tell a guesser it was right), and goes through once the minute has passed.
    owner = Peer(clock=clock, limiter=limiter, address="192.0.2.99")
    assert owner.line(f"AUTH HMAC {proof(owner.session.nonce)}") == []
    assert owner.tick(61.0) == [
        {"class": "AUTH", "ok": True, "scopes": ["read", "control", "diagnose"]}
    ]
    # The held guesses are released 30 a minute, the others held again.
    assert sum(bool(p.tick()) for p in held) == 30
    clock.advance(1.0)
    assert sum(bool(p.tick()) for p in held) == 0


def test_failures_are_logged_once_a_minute_with_a_count(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Found (issue 10.4): every failure logged a WARNING (826 lines in one run)."""
    caplog.set_level(logging.INFO)
    clock = FakeClock()
    limiter = AuthLimiter(clock, base=0.0, per_minute=1000)  # no delays: the log is tested
    for i in range(100):
        p = Peer(clock=clock, limiter=limiter, address=f"192.0.2.{i % 7 + 1}")
        error(p.one(f"AUTH HMAC {'0' * 64}"), "auth_failed")
        clock.advance(0.5)  # 100 failures in 50 s
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert 1 <= len(warnings) <= 2, [r.getMessage() for r in warnings]
    clock.advance(60)
    limiter.report()
    lines = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(lines) <= 3
    counts = [int(m.group(1)) for m in map(re.compile(r"failed (\d+) time").search, lines) if m]
    assert sum(counts) == 100, lines
    assert "192.0.2.2 (15)" in lines[-1] and len(lines[-1]) < 400  # addresses named, bounded


# -- timeouts ------------------------------------------------------------------------------
def test_auth_timeout_closes_after_ten_seconds() -> None:
    p = Peer()
    assert p.session.next_deadline() == pytest.approx(p.clock.monotonic() + 10)
    p.one("PING")  # activity before AUTH does not extend the deadline
    assert p.tick(9.9) == [] and not p.session.closed
    assert p.tick(0.1) == []
    assert p.session.closed and p.session.close_reason == "auth timeout"


def test_idle_timeout_after_auth_and_activity_extends_it() -> None:
    p = authed()
    p.tick(299)
    p.one("PING")
    p.tick(299)
    assert not p.session.closed
    p.tick(1)
    assert p.session.closed and p.session.close_reason == "idle"


def test_a_watcher_is_not_idle() -> None:
    p = authed()
    p.one("WATCH RPM EVERY 60")
    for _ in range(10):
        p.tick(60)
    assert not p.session.closed


# -- framing -------------------------------------------------------------------------------
def test_crlf_and_lf_lines_and_split_chunks() -> None:
    p = Peer()
    assert p.feed(b"PI") == []
    assert p.feed(b"NG\r") == []
    assert p.feed(b"\nPING\nPING\r\n") == [{"class": "PONG"}] * 3


def test_line_limit_before_auth() -> None:
    ok = Peer()
    error(ok.one("X" * LINE_LIMIT_BEFORE_AUTH), "noauth")
    crlf = Peer()
    error(crlf.feed(b"X" * LINE_LIMIT_BEFORE_AUTH + b"\r\n")[0], "noauth")
    long = Peer()
    replies = long.line("X" * (LINE_LIMIT_BEFORE_AUTH + 1))
    assert len(replies) == 1
    error(replies[0], "line_too_long")
    assert long.session.closed


def test_line_limit_before_auth_without_newline() -> None:
    p = Peer()
    assert p.feed(b"A" * (LINE_LIMIT_BEFORE_AUTH + 1)) == []  # could still end in CRLF
    replies = p.feed(b"A")
    error(replies[0], "line_too_long")
    assert p.session.closed


def test_line_limit_after_auth_is_1024() -> None:
    p = authed()
    error(p.one("GET " + "A" * (LINE_LIMIT_AFTER_AUTH - 4)), "unknown_value")
    error(p.one("X" * (LINE_LIMIT_AFTER_AUTH + 1)), "line_too_long")
    assert p.session.closed


def test_auth_and_request_in_one_chunk_switch_the_limit_between_lines() -> None:
    p = Peer()
    chunk = f"AUTH HMAC {proof(p.session.nonce)}\nGET {'A' * 600}\n".encode()
    replies = p.feed(chunk)
    assert replies[0] == {"class": "AUTH", "ok": True, "scopes": ["read", "control", "diagnose"]}
    error(replies[1], "unknown_value")


def test_four_mebibytes_without_newline_end_at_the_limit() -> None:
    p = authed()
    replies = p.feed(b"Z" * (4 << 20))
    assert len(replies) == 1
    error(replies[0], "line_too_long")
    assert p.session.closed


def test_wants_data_is_false_while_a_line_waits() -> None:
    p = authed()
    p.session.receive_data(b"PING\nPING\n")
    assert not p.session.wants_data
    assert p.session.step() and p.session.step()
    assert p.session.wants_data
    assert not p.session.step()


def test_empty_and_odd_lines_each_get_one_reply() -> None:
    p = authed()
    error(p.one(""), "bad_request")
    error(p.one("   \t "), "bad_request")
    reply = p.feed(b"\xff\xfe\x00\x01 \xc3\x28\n")
    error(reply[0], "unknown_command")


def test_echoed_text_is_escaped_and_cut_short() -> None:
    p = authed()
    word = '"}\x1b[31m\u2603' + "Q" * 500
    raw = p.session
    raw.receive_data(("FROB" + word + "\n").encode())
    raw.step()
    data = raw.data_to_send()
    assert data.count(b"\n") == 1 and b"\x1b" not in data
    reply = decode(data)[0]
    error(reply, "unknown_command")
    assert len(reply["message"]) < 120
    assert "\u2603" in reply["message"]  # escaped on the wire, intact once decoded


def test_http_request_is_answered_and_closed() -> None:
    p = Peer()
    replies = p.feed(b"GET / HTTP/1.1\r\nHost: car\r\n\r\n")
    assert len(replies) == 1
    error(replies[0], "bad_request")
    assert "HTTP" in replies[0]["message"] and p.session.closed


def test_tls_client_hello_on_the_plain_port_is_answered_and_closed() -> None:
    p = Peer()
    replies = p.feed(bytes.fromhex("160301020001") + bytes(range(256)))
    assert len(replies) == 1
    error(replies[0], "bad_request")
    assert "TLS" in replies[0]["message"] and p.session.closed


def test_peer_half_close_ends_after_pending_lines() -> None:
    p = authed()
    p.session.receive_data(b"PING\nPING\n")
    p.session.receive_data(b"")
    assert p.tick() == [{"class": "PONG"}, {"class": "PONG"}]
    assert p.session.closed and p.session.close_reason == "peer closed"


def test_a_half_closed_watcher_keeps_streaming() -> None:
    p = authed()
    p.session.receive_data(b"WATCH RPM EVERY 1\n")
    p.session.receive_data(b"")
    assert [r["class"] for r in p.tick()] == ["WATCH"]
    assert [r["class"] for r in p.tick()] == ["LIVE"]
    assert [r["class"] for r in p.tick(1)] == ["LIVE"]
    assert not p.session.closed


# -- commands ------------------------------------------------------------------------------
def test_ping_help_quit_after_auth() -> None:
    p = authed()
    assert p.one("ping") == {"class": "PONG"}
    assert p.one("Help")["class"] == "HELP"
    assert p.line("quit") == []
    assert p.session.closed and p.session.close_reason == "QUIT"


def test_unknown_command() -> None:
    error(authed().one("FROBNICATE now"), "unknown_command")


def test_supported_lists_name_unit_description_logged() -> None:
    p = authed()
    reply = p.one("SUPPORTED")
    assert reply["class"] == "SUPPORTED"
    assert reply["values"][0] == {
        "name": "RPM",
        "unit": "revolutions_per_minute",
        "description": "Engine RPM",
        "logged": True,
    }
    assert {v["name"]: v["logged"] for v in reply["values"]}["FUEL_LEVEL"] is False
    error(p.one("SUPPORTED RPM"), "bad_request")


def test_get_named_values_with_age() -> None:
    p = authed()
    p.clock.advance(0.12)
    reply = p.one("get rpm SPEED rpm")
    assert reply["class"] == "VALUES"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", reply["time"])
    assert reply["values"] == {
        "RPM": {"value": 850.0, "unit": "revolutions_per_minute", "age_ms": 120},
        "SPEED": {"value": 0.0, "unit": "kilometer_per_hour", "age_ms": 120},
    }


def test_get_everything_includes_logged_values_without_a_reading_and_gps() -> None:
    p = authed()
    p.backend.set("GPS_LATITUDE", 48.85, "degree")
    reply = p.one("GET")
    assert list(reply["values"]) == ["RPM", "SPEED", "THROTTLE_POS", "GPS_LATITUDE"]
    assert reply["values"]["THROTTLE_POS"] == {"value": None, "unit": "percent", "age_ms": None}
    assert p.backend.reads == []  # nothing unlogged is read for a bare GET


def test_get_unlogged_value_reads_the_car_on_demand() -> None:
    p = authed()
    reply = p.one("GET FUEL_LEVEL RPM")
    assert reply["values"]["FUEL_LEVEL"] == {"value": 42.5, "unit": "percent", "age_ms": 0}
    assert p.backend.reads == ["FUEL_LEVEL"]


@pytest.mark.parametrize("code", ["not_connected", "obd_timeout", "busy"])
def test_get_on_demand_failures(code: str) -> None:
    p = authed()
    p.backend.read_error = ServiceError(code, "nope")
    error(p.one("GET RPM FUEL_LEVEL"), code)
    assert p.one("GET RPM")["class"] == "VALUES"  # the session goes on


def test_get_unknown_value() -> None:
    p = authed()
    reply = p.one("GET RPM NOT_A_VALUE")
    error(reply, "unknown_value")
    assert "NOT_A_VALUE" in reply["message"] and "SUPPORTED" in reply["message"]
    p.backend.state = "connecting"
    assert "not connected" in p.one("GET MAF")["message"]


def test_nan_and_infinite_values_become_null() -> None:
    p = authed()
    p.backend.set("RPM", float("nan"), "revolutions_per_minute")
    p.backend.set("SPEED", float("inf"), "kilometer_per_hour")
    reply = p.one("GET RPM SPEED")
    assert reply["values"]["RPM"]["value"] is None
    assert reply["values"]["SPEED"]["value"] is None
    status = p.one("STATUS")
    assert status["odd"] is None


def test_encode_refuses_nan_as_a_last_guard() -> None:
    with pytest.raises(ValueError):
        encode({"class": "X", "v": float("nan")})


def test_gnss_with_and_without_fix() -> None:
    p = authed()
    assert p.one("GNSS") == {"class": "GNSS", "fix": False}
    p.backend.fix = Fix(
        time_utc=1_700_000_000.5,
        latitude=48.8566,
        longitude=2.3522,
        altitude=35.0,
        speed=float("nan"),
        track=90.0,
        quality=1,
        satellites=9,
        hdop=0.9,
        received=p.clock.monotonic(),
        received_wall=p.clock.time(),
    )
    p.clock.advance(0.25)
    reply = p.one("GNSS")
    assert reply == {
        "class": "GNSS",
        "fix": True,
        "time": "2023-11-14T22:13:20.500Z",
        "lat": 48.8566,
        "lon": 2.3522,
        "alt": 35.0,
        "speed": None,
        "track": 90.0,
        "satellites": 9,
        "hdop": 0.9,
        "quality": 1,
        "age_ms": 250,
    }


def test_status_carries_the_backend_fields() -> None:
    reply = authed().one("STATUS")
    assert reply["class"] == "STATUS"
    for key in ("obd", "protocol", "trip", "recording", "rows", "upload_queue",
                "last_upload", "last_error", "uptime_s"):  # fmt: skip
        assert key in reply


def test_backend_crash_is_server_error_and_the_session_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    p = authed()
    p.backend.fail_status = True
    error(p.one("STATUS"), "server_error")
    assert "boom" in caplog.text  # the details go to the log, not to the client
    assert p.one("PING") == {"class": "PONG"}


def test_upload() -> None:
    p = authed()
    assert p.one("UPLOAD") == {"class": "UPLOAD", "queued": 3}
    p.backend.upload_error = ServiceError("forbidden", "uploads are off")
    error(p.one("UPLOAD"), "forbidden")


def test_dtc_read() -> None:
    p = authed()
    assert p.one("dtc") == {
        "class": "DTC",
        "mil": True,
        "stored": [{"code": "P0143", "description": "O2 Sensor Circuit Low Voltage"}],
        "pending": [],
    }
    p.backend.state = "disconnected"
    error(p.one("DTC"), "not_connected")
    for bad in ("DTC READ", "DTC CLEAR NOW", "DTC CLEAR CONFIRM", "DTC CLEAR CONFIRM a b"):
        error(p.one(bad), "bad_request")


# -- DTC CLEAR -----------------------------------------------------------------------------
def test_dtc_clear_two_steps(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    p = authed()
    confirm = p.one("DTC CLEAR")
    assert confirm["class"] == "CONFIRM"
    assert re.fullmatch(r"[0-9a-f]{8}", confirm["token"])
    assert confirm["expires_in"] == 30
    assert confirm["warning"] == "clears stored codes and resets readiness monitors"
    assert p.backend.clears == 0
    done = p.one(f"dtc clear confirm {confirm['token'].upper()}")
    assert done == {"class": "DTC_CLEARED", "ok": True, "ecu": "44"}
    assert p.backend.clears == 1
    assert "192.0.2.7:50000" in caplog.text and "'44'" in caplog.text


def test_dtc_clear_reports_a_refusing_ecu() -> None:
    p = authed()
    p.backend.clear_answer = ClearResult(False, "7F 04 22")
    token = p.one("DTC CLEAR")["token"]
    assert p.one(f"DTC CLEAR CONFIRM {token}") == {
        "class": "DTC_CLEARED",
        "ok": False,
        "ecu": "7F 04 22",
    }


def test_dtc_clear_token_is_single_use() -> None:
    p = authed()
    token = p.one("DTC CLEAR")["token"]
    assert p.one(f"DTC CLEAR CONFIRM {token}")["class"] == "DTC_CLEARED"
    error(p.one(f"DTC CLEAR CONFIRM {token}"), "confirm_invalid")
    assert p.backend.clears == 1


def test_dtc_clear_token_is_bound_to_its_session() -> None:
    a, b = authed(), authed()
    b.backend = a.backend
    token = a.one("DTC CLEAR")["token"]
    error(b.one(f"DTC CLEAR CONFIRM {token}"), "confirm_invalid")
    assert a.backend.clears == 0
    assert a.one(f"DTC CLEAR CONFIRM {token}")["class"] == "DTC_CLEARED"


def test_dtc_clear_token_expires_after_30_seconds() -> None:
    p = authed()
    token = p.one("DTC CLEAR")["token"]
    p.clock.advance(30)
    p.backend.set("SPEED", 0.0)
    assert p.one(f"DTC CLEAR CONFIRM {token}")["class"] == "DTC_CLEARED"
    token = p.one("DTC CLEAR")["token"]
    p.clock.advance(30.01)
    p.backend.set("SPEED", 0.0)
    error(p.one(f"DTC CLEAR CONFIRM {token}"), "confirm_invalid")
    assert p.backend.clears == 1


def test_a_wrong_token_burns_the_pending_one() -> None:
    p = authed()
    token = p.one("DTC CLEAR")["token"]
    error(p.one("DTC CLEAR CONFIRM 00000000"), "confirm_invalid")
    error(p.one(f"DTC CLEAR CONFIRM {token}"), "confirm_invalid")
    assert p.backend.clears == 0


def test_dtc_clear_forbidden_by_config() -> None:
    p = authed(allow_dtc_clear=False)
    error(p.one("DTC CLEAR"), "forbidden")
    error(p.one("DTC CLEAR CONFIRM 12345678"), "confirm_invalid")
    assert p.backend.clears == 0


def test_dtc_clear_not_connected() -> None:
    p = authed()
    p.backend.state = "disconnected"
    error(p.one("DTC CLEAR"), "not_connected")


def test_dtc_clear_refused_while_moving_then_accepted_at_standstill() -> None:
    p = authed()
    p.backend.set("SPEED", 12.0)
    error(p.one("DTC CLEAR"), "vehicle_moving")
    p.backend.set("SPEED", 0.0)
    token = p.one("DTC CLEAR")["token"]
    p.backend.set("SPEED", 3.0)  # drove off before confirming: refused, token spent
    error(p.one(f"DTC CLEAR CONFIRM {token}"), "vehicle_moving")
    p.backend.set("SPEED", 0.0)
    error(p.one(f"DTC CLEAR CONFIRM {token}"), "confirm_invalid")
    assert p.backend.clears == 0


def test_dtc_clear_reads_a_stale_speed_again() -> None:
    p = authed()
    p.clock.advance(5)  # the logged SPEED is 5 s old
    p.backend.on_demand["SPEED"] = p.backend.readings["SPEED"].__class__(7.0, "kph", 0.0)
    error(p.one("DTC CLEAR"), "vehicle_moving")
    assert p.backend.reads == ["SPEED"]


def test_dtc_clear_with_unknown_speed_is_refused() -> None:
    p = authed()
    del p.backend.readings["SPEED"]
    error(p.one("DTC CLEAR"), "vehicle_moving")
    p.backend.set("SPEED", "n/a")
    error(p.one("DTC CLEAR"), "vehicle_moving")
    p.clock.advance(3)  # stale: read again, and the car does not answer
    p.backend.read_error = ServiceError("obd_timeout", "slow")
    error(p.one("DTC CLEAR"), "obd_timeout")


# -- WATCH ---------------------------------------------------------------------------------
def test_watch_streams_until_off() -> None:
    p = authed()
    reply = p.one("WATCH RPM SPEED EVERY 0.5")
    assert reply == {
        "class": "WATCH",
        "ok": True,
        "watching": True,
        "values": ["RPM", "SPEED"],
        "every": 0.5,
    }
    assert p.session.state is State.WATCHING
    first = p.tick()
    assert len(first) == 1 and first[0]["class"] == "LIVE"
    assert list(first[0]["values"]) == ["RPM", "SPEED"]
    assert p.tick(0.25) == []
    p.backend.set("RPM", 2000.0, "revolutions_per_minute")
    second = p.tick(0.25)
    assert second[0]["values"]["RPM"]["value"] == 2000.0
    assert p.one("PING") == {"class": "PONG"}  # other commands still work
    assert p.one("watch off") == {"class": "WATCH", "ok": True, "watching": False}
    assert p.session.state is State.READY
    assert p.tick(5) == []


def test_watch_without_names_streams_every_logged_value_at_one_second() -> None:
    p = authed()
    assert p.one("WATCH")["every"] == 1.0
    live = p.tick()[0]
    assert set(live["values"]) == {"RPM", "SPEED", "THROTTLE_POS"}
    assert p.tick(0.99) == []
    assert len(p.tick(0.01)) == 1


def test_watch_falling_behind_does_not_burst() -> None:
    p = authed()
    p.one("WATCH RPM EVERY 0.1")
    p.tick()
    assert len(p.tick(10)) == 1


def test_watch_again_replaces_the_watch() -> None:
    p = authed()
    p.one("WATCH RPM EVERY 1")
    p.tick()
    assert p.one("WATCH SPEED EVERY 2")["values"] == ["SPEED"]
    assert list(p.tick()[0]["values"]) == ["SPEED"]
    assert p.session.state is State.WATCHING


@pytest.mark.parametrize(
    "line",
    ["WATCH RPM EVERY 0.05", "WATCH EVERY 0", "WATCH EVERY nan", "WATCH EVERY inf",
     "WATCH EVERY 1e9", "WATCH EVERY", "WATCH EVERY x", "WATCH EVERY 1 RPM",
     "WATCH FUEL_LEVEL"],
)  # fmt: skip
def test_watch_bad_requests(line: str) -> None:
    p = authed()
    error(p.one(line), "bad_request")
    assert p.session.state is State.READY


def test_watch_unknown_value() -> None:
    p = authed()
    error(p.one("WATCH RPM NOPE"), "unknown_value")
    assert p.session.state is State.READY


def test_watch_minimum_interval_is_accepted() -> None:
    assert authed().one("WATCH EVERY 0.1")["every"] == 0.1


# -- calls that may wait on the car run off the step ------------------------------------
def test_a_dtc_read_is_handed_over_and_later_lines_wait_for_its_reply() -> None:
    p = authed(park=True)
    assert p.feed(b"DTC\nPING\n") == []
    assert [c.word for c in p.calls] == ["DTC"] and not p.calls[0].done
    assert not p.session.step()  # the PING waits behind the DTC: replies keep their order
    assert not p.session.wants_data  # and nothing more is read meanwhile
    assert p.session.next_deadline() is None  # no idle timeout while the car is asked
    p.calls.pop().run()
    assert [r["class"] for r in p.tick(400)] == ["DTC", "PONG"]
    assert not p.session.closed


@pytest.mark.parametrize(
    ("line", "waits"),
    [("GET RPM SPEED", False), ("GET", False), ("GET NOPE", False), ("GET RPM FUEL_LEVEL", True),
     ("STATUS", False), ("TRIP", False), ("GNSS", False), ("SUPPORTED", False),
     ("UPLOAD", True), ("DTC", True), ("DTC CLEAR", True), ("DTC CLEAR CONFIRM 1234abcd", True)],
)  # fmt: skip
def test_which_calls_are_handed_over(line: str, waits: bool) -> None:
    p = authed(park=True)
    replies = p.line(line)
    assert [c.word for c in p.calls] == ([line.split()[0]] if waits else [])
    assert len(replies) == (0 if waits else 1)
    assert p.backend.reads == []  # nothing read from the car on the step


def test_live_lines_go_on_while_a_call_runs() -> None:
    p = authed(park=True)
    p.one("WATCH RPM EVERY 0.5")
    assert [r["class"] for r in p.tick()] == ["LIVE"]
    assert p.line("DTC") == []
    assert [r["class"] for r in p.tick(0.5)] == ["LIVE"]
    assert p.session.next_deadline() == pytest.approx(p.clock.monotonic() + 0.5)
    p.calls.pop().run()
    assert [r["class"] for r in p.tick()] == ["DTC"]


def test_a_busy_reply_of_a_call_pauses_the_session() -> None:
    p = authed(park=True)
    p.backend.read_error = ServiceError("busy", "the adapter is logging", 0.6)
    p.session.receive_data(b"GET FUEL_LEVEL\nPING\n")
    p.pump()
    p.calls.pop().run()
    replies = p.tick()
    assert [r.get("code") for r in replies] == ["busy"] and replies[0]["retry_after"] == 0.6
    assert p.tick(0.5) == []
    assert p.tick(0.1) == [{"class": "PONG"}]


def test_a_session_closed_while_a_call_runs_drops_its_reply() -> None:
    p = authed(park=True)
    p.line("DTC CLEAR")
    call = p.calls.pop()
    p.session.abort("connection closed")
    call.run()  # the worker finishes later: nobody is told
    assert call.reply is not None and call.reply["class"] == "CONFIRM"
    assert p.tick() == [] and p.session.closed and p.session.data_to_send() == b""


def test_a_call_that_crashes_is_a_server_error(caplog: pytest.LogCaptureFixture) -> None:
    p = authed()

    def broken(timeout: float, **kw: Any) -> Any:
        raise RuntimeError("kaput")

    p.backend.read_dtcs = broken  # type: ignore[method-assign]
    error(p.one("DTC"), "server_error")
    assert "kaput" in caplog.text and "DTC" in caplog.text
    assert p.one("PING") == {"class": "PONG"}


# -- the state table -----------------------------------------------------------------------
def test_every_transition_of_the_table_is_reached() -> None:
    seen: set[tuple[State, Event]] = set()
    original = Session._fire

    def spy(self: Session, event: Event) -> None:
        seen.add((self.state, event))
        original(self, event)

    Session._fire = spy  # type: ignore[method-assign]
    try:
        Peer().line(f"AUTH HMAC {'0' * 64}")  # AUTHENTICATING -AUTH_FAILED-> CLOSED
        Peer().line("QUIT")  # AUTHENTICATING -CLOSE-> CLOSED
        p = authed()  # AUTHENTICATING -AUTH_OK-> READY
        p.one("WATCH OFF")  # READY -WATCH_OFF-> READY
        p.one("WATCH RPM")  # READY -WATCH_ON-> WATCHING
        p.one("WATCH SPEED")  # WATCHING -WATCH_ON-> WATCHING
        p.one("WATCH OFF")  # WATCHING -WATCH_OFF-> READY
        p.line("QUIT")  # READY -CLOSE-> CLOSED
        w = authed()
        w.one("WATCH")
        w.line("QUIT")  # WATCHING -CLOSE-> CLOSED
        w.session._close("again")  # CLOSED -CLOSE-> CLOSED
    finally:
        Session._fire = original  # type: ignore[method-assign]
    assert seen == set(TRANSITIONS)


def test_an_illegal_transition_is_a_bug_not_a_peer_error() -> None:
    p = authed()
    with pytest.raises(RuntimeError):
        p.session._fire(Event.AUTH_OK)


# -- every error code ----------------------------------------------------------------------
def test_every_error_code_of_the_spec_is_produced() -> None:
    """too_many_clients belongs to the server (tests/test_control_server.py)."""
    seen: set[str] = set()

    def collect(replies: list[Reply]) -> None:
        seen.update(r["code"] for r in replies if r["class"] == "ERROR")

    collect(authed().line("WATCH EVERY 0"))  # bad_request
    collect(authed().line("NOPE"))  # unknown_command
    collect(authed().line("GET NOPE"))  # unknown_value
    collect(Peer().line("GET"))  # noauth
    collect(Peer().line(f"AUTH HMAC {'0' * 64}"))  # auth_failed
    collect(authed().line("DTC CLEAR CONFIRM 00000000"))  # confirm_invalid
    collect(authed(allow_dtc_clear=False).line("DTC CLEAR"))  # forbidden
    moving = authed()
    moving.backend.set("SPEED", 50.0)
    collect(moving.line("DTC CLEAR"))  # vehicle_moving
    collect(Peer().line("X" * 300))  # line_too_long
    down = authed()
    down.backend.state = "disconnected"
    collect(down.line("DTC"))  # not_connected
    for code in ("obd_timeout", "busy"):
        p = authed()
        p.backend.read_error = ServiceError(code, "")
        collect(p.line("GET FUEL_LEVEL"))
    broken = authed()
    broken.backend.fail_status = True
    collect(broken.line("STATUS"))  # server_error
    assert seen == set(ERROR_CODES) - {"too_many_clients"}


# -- any input -----------------------------------------------------------------------------
_LINE = st.one_of(
    st.binary(max_size=1100).map(lambda b: b.replace(b"\n", b" ")),
    st.lists(
        st.sampled_from(
            ["GET", "get", "RPM", "SPEED", "FUEL_LEVEL", "WATCH", "EVERY", "OFF", "0.1", "1e400",
             "nan", "-1", "DTC", "CLEAR", "CONFIRM", "STATUS", "GNSS", "SUPPORTED", "UPLOAD",
             "PING", "HELP", "AUTH", "HMAC", "QUIT", "\u00e9", "\x00", '"', "\\", "\r"]
        ),
        max_size=8,
    ).map(lambda ws: " ".join(ws).encode()),
)  # fmt: skip


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(lines=st.lists(_LINE, max_size=12), authenticated=st.booleans())
def test_every_line_gets_one_json_reply_or_a_clean_close(
    lines: list[bytes], authenticated: bool
) -> None:
    p = authed() if authenticated else Peer()
    for line in lines:
        if p.session.closed:
            break
        replies = p.feed(line + b"\n")
        if p.session.closed:
            assert len(replies) <= 1  # QUIT: nothing; a limit or a bad AUTH: the error
        else:
            assert len(replies) == 1, (line, replies)
        assert all(set(r) >= {"class"} for r in replies)
        assert all(r["code"] in ERROR_CODES for r in replies if r["class"] == "ERROR")
