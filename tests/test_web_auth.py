"""The web page's pure parts on a fake clock: one-time login links, sessions, the CSP."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from eccm.clock import FakeClock
from eccm.service import ALL_SCOPES, READ_ONLY
from eccm.web.api import csp, tile_source
from eccm.web.auth import plain_secret_allowed
from eccm.web.keep import SessionFile
from eccm.web.loginlink import TTL, LoginLinks, base_url, link, mint
from eccm.web.sessions import Sessions

SECRET = "a secret of at least thirty-two characters!"
READ = "the read-only secret, also long enough, really"


def links(clock: FakeClock) -> LoginLinks:
    return LoginLinks.for_secrets(SECRET, READ, clock)


def test_a_link_logs_in_once_with_the_scopes_of_its_secret() -> None:
    clock = FakeClock()
    taker = links(clock)
    full, read = mint(SECRET, clock.time()), mint(READ, clock.time())
    assert taker.take(full) == ALL_SCOPES
    assert taker.take(full) is None  # single use
    assert taker.take(read) == READ_ONLY
    assert taker.take(mint("another secret entirely, as long as needed", clock.time())) is None


def test_a_link_expires_and_cannot_come_from_the_future() -> None:
    clock = FakeClock()
    taker = links(clock)
    token = mint(SECRET, clock.time())
    clock.advance(TTL + 0.01)
    assert taker.take(token) is None
    assert taker.take(mint(SECRET, clock.time() + 60)) is None
    late = mint(SECRET, clock.time())
    clock.advance(TTL - 1)
    assert taker.take(late) == ALL_SCOPES


def test_a_daemon_refuses_links_made_before_it_started() -> None:
    """It forgot which links were used: one made before it may have been."""
    clock = FakeClock()
    before = mint(SECRET, clock.time())
    clock.advance(1)
    taker = links(clock)
    assert taker.take(before) is None
    assert taker.take(mint(SECRET, clock.time())) == ALL_SCOPES


@pytest.mark.parametrize(
    "token",
    [
        "",
        "x",
        "A" * 500,
        "not base64 at all!",
        "é" * 40,
        base64.urlsafe_b64encode(b"\0" * 37).decode(),
    ],
)
def test_garbage_is_no_link(token: str) -> None:
    assert links(FakeClock()).take(token) is None


def test_a_tampered_link_is_refused() -> None:
    clock = FakeClock()
    token = mint(SECRET, clock.time())
    raw = bytearray(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
    raw[3] ^= 1  # a later issue time
    forged = base64.urlsafe_b64encode(bytes(raw)).rstrip(b"=").decode()
    assert links(clock).take(forged) is None
    assert links(clock).take(token) == ALL_SCOPES


def test_link_urls() -> None:
    assert link("http://127.0.0.1:8080/", "abc") == "http://127.0.0.1:8080/login/abc"
    assert base_url("::1", 8443, True) == "https://[::1]:8443"
    assert base_url("0.0.0.0", 80, False).endswith(":80")


def test_sessions_expire_when_idle_and_at_their_lifetime_and_at_logout() -> None:
    clock = FakeClock()
    sessions = Sessions(clock, idle=60, lifetime=300, limit=3)
    a = sessions.open(ALL_SCOPES, "10.0.0.2")
    assert a.sid != a.csrf and len(a.sid) >= 40
    assert a.sid not in a.caller.name  # the cookie never reaches a log line
    for _ in range(5):
        clock.advance(50)
        assert sessions.get(a.sid) is a  # used: the idle time starts again
    clock.advance(51)  # 301 s after login
    assert sessions.get(a.sid) is None
    b = sessions.open(READ_ONLY, "10.0.0.2")
    clock.advance(61)
    assert sessions.get(b.sid) is None
    c = sessions.open(ALL_SCOPES, "10.0.0.2")
    c.caller.clear_token = ("abcd1234", 1e9)
    sessions.close(c.sid)
    assert sessions.get(c.sid) is None and c.caller.clear_token is None
    assert sessions.get(None) is None and sessions.get("made-up") is None


def test_sessions_are_bounded_oldest_first() -> None:
    clock = FakeClock()
    sessions = Sessions(clock, limit=3)
    opened = [sessions.open(ALL_SCOPES, "127.0.0.1") for _ in range(5)]
    assert len(sessions) == 3
    assert [sessions.get(s.sid) is not None for s in opened] == [False, False, True, True, True]


def test_a_flood_of_logins_ends_its_own_sessions_not_the_owners() -> None:
    clock = FakeClock()
    sessions = Sessions(clock, limit=4)
    owner = sessions.open(ALL_SCOPES, "127.0.0.1")
    phone = sessions.open(ALL_SCOPES, "10.0.0.2")
    flood = [sessions.open(READ_ONLY, "127.0.0.1") for _ in range(10)]
    assert sessions.get(owner.sid) is owner and sessions.get(phone.sid) is phone
    assert [sessions.get(s.sid) is not None for s in flood[-3:]] == [False, True, True]
    # A login of another kind takes the oldest place of the address holding the most.
    late = sessions.open(READ_ONLY, "10.0.0.3")
    assert sessions.get(late.sid) is late and sessions.get(owner.sid) is None
    assert sessions.get(phone.sid) is phone


def test_bearer_callers_keep_their_token_per_address_and_scopes() -> None:
    sessions = Sessions(FakeClock())
    a = sessions.bearer("127.0.0.1", ALL_SCOPES)
    assert sessions.bearer("127.0.0.1", ALL_SCOPES) is a
    assert sessions.bearer("127.0.0.1", READ_ONLY) is not a
    assert sessions.bearer("10.0.0.3", ALL_SCOPES) is not a


@pytest.mark.parametrize(
    ("remote", "tls", "allow", "allowed"),
    [
        ("127.0.0.1", False, False, True),
        ("::1", False, False, True),
        ("::ffff:127.0.0.1", False, False, True),
        ("192.168.4.20", False, False, False),
        ("fe80::1", False, False, False),
        (None, False, False, False),
        ("192.168.4.20", True, False, True),
        ("192.168.4.20", False, True, True),
    ],
)
def test_a_secret_crosses_the_network_encrypted_only(
    remote: str | None, tls: bool, allow: bool, allowed: bool
) -> None:
    assert plain_secret_allowed(remote, tls, allow) is allowed


def test_the_csp_allows_the_page_alone_and_tiles_from_their_host() -> None:
    policy = csp("", "127.0.0.1:8080", False)
    assert "script-src 'self';" in policy and "default-src 'none'" in policy
    assert "unsafe-inline" not in policy and "frame-ancestors 'none'" in policy
    assert "connect-src 'self' ws://127.0.0.1:8080;" in policy
    assert "wss://pi.local:8443" in csp("", "pi.local:8443", True)
    assert "ws:" not in csp("", "evil; script-src *", False)  # a forged Host adds nothing
    tiles = tile_source("https://{s}.tile.example.org:8443/{z}/{x}/{y}.png")
    assert tiles == "https://*.tile.example.org:8443"
    assert f"img-src 'self' data: {tiles};" in csp(tiles, "h", False)


def test_kept_sessions_come_back_with_their_age_and_scopes(tmp_path: Path) -> None:
    clock = FakeClock()
    keep = SessionFile(tmp_path, "the full secret", "the read secret")
    first = Sessions(clock, idle=600, lifetime=3600, keep=keep)
    a = first.open(ALL_SCOPES, "10.0.0.2")
    b = first.open(READ_ONLY, "10.0.0.3")
    clock.advance(500)
    assert first.get(b.sid) is b
    # A restart: a new process reads the file (the monotonic clock starts again at boot).
    clock.advance(50)
    again = Sessions(clock, idle=600, lifetime=3600, keep=keep)
    restored = again.get(b.sid)
    assert restored is not None and restored.csrf == b.csrf and restored.caller.scopes == READ_ONLY
    clock.advance(51)
    assert again.get(a.sid) is None  # 601 s idle of 600: counted across the restart
    # A Pi without a clock may start earlier than it stopped: no time passed, not a crash.
    clock.set_wall(clock.time() - 86400)
    assert Sessions(clock, idle=600, lifetime=3600, keep=keep).get(b.sid) is not None
    # Another read secret ends the sessions it opened; the full one's are not its.
    other = SessionFile(tmp_path, "the full secret", "a new read secret")
    assert Sessions(clock, idle=600, lifetime=3600, keep=other).get(b.sid) is None
    # A file that is not JSON costs the sessions, not the start.
    keep.path.write_text("{not json")
    assert len(Sessions(clock, keep=keep)) == 0


def test_a_session_opened_over_plain_http_ends_when_the_page_turns_to_tls(
    tmp_path: Path,
) -> None:
    # A security review's find: a cookie sent in clear (no Secure flag, seen by anyone on
    # the car's Wi-Fi) still opened the page after WEB_SERVER_TLS_CERT was set.
    clock = FakeClock()
    plain = SessionFile(tmp_path, "the full secret")
    session = Sessions(clock, keep=plain).open(ALL_SCOPES, "10.0.0.2")
    assert Sessions(clock, keep=plain).get(session.sid) is not None  # a plain restart
    tls = SessionFile(tmp_path, "the full secret", tls=True)
    assert Sessions(clock, keep=tls).get(session.sid) is None
    over_tls = Sessions(clock, keep=tls).open(ALL_SCOPES, "10.0.0.2")
    assert Sessions(clock, keep=tls).get(over_tls.sid) is not None  # a TLS restart
