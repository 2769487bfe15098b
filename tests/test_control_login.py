"""AUTH on one connection (eccm/control/login.py) on its own: a fake clock, no session."""

from __future__ import annotations

from eccm.clock import FakeClock
from eccm.control.authlimit import AuthLimiter
from eccm.control.client import hmac_proof
from eccm.control.login import Failed, Granted, Held, Login, Refused
from eccm.service import ALL_SCOPES, READ_ONLY, Credentials

SECRET = "the full secret, long enough for any bind"
READER = "the read-only secret, long enough as well"


def login(clock: FakeClock, limiter: AuthLimiter | None = None, plain: bool = False) -> Login:
    return Login(
        Credentials(SECRET, READER),
        clock,
        peer="192.0.2.7:50000",
        address="192.0.2.7",
        limiter=limiter,
        plain_auth=plain,
    )


def test_each_secret_grants_its_scopes_by_hmac_and_plain() -> None:
    clock = FakeClock()
    one = login(clock, plain=True)
    assert one.methods == ["hmac-sha256", "plain"]
    assert one.attempt("hmac", hmac_proof(SECRET, one.nonce)) == Granted("hmac", ALL_SCOPES)
    assert one.attempt("plain", READER) == Granted("plain", READ_ONLY)
    assert one.attempt("hmac", hmac_proof(SECRET, "another nonce")) == Failed("hmac")


def test_plain_is_refused_unchecked_where_it_is_not_offered() -> None:
    clock = FakeClock()
    limiter = AuthLimiter(clock, base=1.0)
    one = login(clock, limiter)
    assert one.methods == ["hmac-sha256"]
    refused = one.attempt("plain", SECRET)  # the right secret, still refused
    assert isinstance(refused, Refused) and refused.code == "forbidden"
    assert limiter.wait("192.0.2.7") == 0.0  # not counted as a guess


def test_a_held_attempt_is_checked_when_its_time_comes() -> None:
    clock = FakeClock()
    limiter = AuthLimiter(clock, base=2.0)
    assert login(clock, limiter).attempt("hmac", "00" * 32) == Failed("hmac")
    one = login(clock, limiter)
    assert one.attempt("hmac", hmac_proof(READER, one.nonce)) == Held(clock.monotonic() + 2.0)
    assert one.held_until == clock.monotonic() + 2.0
    # Another connection from the address meanwhile: refused at once, with the time left.
    other = login(clock, limiter).attempt("hmac", "00" * 32)
    assert other == Refused("busy", other.message, 2.0) and "2 s" in other.message
    clock.advance(1.9)
    assert one.release() is None
    clock.advance(0.1)
    assert one.release() == Granted("hmac", READ_ONLY)
    assert one.held_until is None and one.release() is None


def test_cancel_frees_the_address_for_its_next_attempt() -> None:
    clock = FakeClock()
    limiter = AuthLimiter(clock, base=2.0)
    login(clock, limiter).attempt("hmac", "00" * 32)
    one = login(clock, limiter)
    assert isinstance(one.attempt("hmac", "00" * 32), Held)
    one.cancel()
    assert isinstance(login(clock, limiter).attempt("hmac", "00" * 32), Held)  # not Refused
