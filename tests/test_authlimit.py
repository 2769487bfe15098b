"""The failed-authentication limiter on its own: a fake clock, no socket."""

from __future__ import annotations

import threading
from collections.abc import Callable

import pytest

from eccm.clock import FakeClock
from eccm.control.authlimit import (
    LOOPBACK,
    STALE_AFTER,
    AuthLimiter,
    Verdict,
    limiter_key,
)


def wrong() -> bool:
    return False


def right() -> bool:
    return True


def test_limiter_keys_fold_loopback_and_ipv6_hosts() -> None:
    for host in ("127.0.0.1", "127.0.0.2", "127.255.1.9", "::1", "::ffff:127.0.0.5"):
        assert limiter_key(host) == LOOPBACK, host
    assert limiter_key("192.0.2.7") == limiter_key("::ffff:192.0.2.7") == "192.0.2.7"
    assert limiter_key("2001:db8:1:2::5") == limiter_key("2001:db8:1:2:ffff::9")
    assert limiter_key("2001:db8:1:2::/64") == "2001:db8:1:2::/64"  # a key already folded
    assert limiter_key("fe80::1%eth0") == "fe80::/64"
    assert limiter_key("client") == "client"  # not an address: taken as it is


def test_a_check_is_atomic_with_its_verdict() -> None:
    """Two threads must not both find an address clean and both check a guess: the
    second waits for the first's verdict, then is held back by it."""
    lim = AuthLimiter(FakeClock(), base=1.0)
    entered, go = threading.Event(), threading.Event()
    results: dict[str, Verdict] = {}

    def slow_wrong() -> bool:
        entered.set()
        go.wait(30)
        return False

    def run(name: str, verify: Callable[[], bool]) -> None:
        results[name] = lim.attempt("192.0.2.7", verify, holder=name).verdict

    a = threading.Thread(target=run, args=("a", slow_wrong))
    a.start()
    assert entered.wait(30)
    b = threading.Thread(target=run, args=("b", wrong))
    b.start()
    go.set()
    a.join(30)
    b.join(30)
    assert results == {"a": Verdict.REJECTED, "b": Verdict.HELD}


def test_held_refused_released_cancelled() -> None:
    clock = FakeClock()
    lim = AuthLimiter(clock, base=2.0)
    assert lim.attempt("192.0.2.7", wrong, holder="a").verdict is Verdict.REJECTED
    held = lim.attempt("192.0.2.7", right, holder="b")
    assert held.verdict is Verdict.HELD and held.until == pytest.approx(clock.monotonic() + 2)
    refused = lim.attempt("192.0.2.7", right, holder="c")
    assert refused.verdict is Verdict.REFUSED and refused.until == held.until
    assert lim.attempt("192.0.2.8", wrong, holder="d").verdict is Verdict.REJECTED  # others
    lim.cancel("192.0.2.7", "c")  # not the holder: changes nothing
    assert lim.attempt("192.0.2.7", right, holder="c").verdict is Verdict.REFUSED
    lim.cancel("192.0.2.7", "b")
    assert lim.attempt("192.0.2.7", right, holder="c").verdict is Verdict.HELD
    clock.advance(2.0)
    assert lim.attempt("192.0.2.7", right, holder="c").verdict is Verdict.ACCEPTED
    assert lim.wait("192.0.2.7") == 0.0  # success reset the address


def test_a_holder_that_never_comes_back_frees_its_address() -> None:
    clock = FakeClock()
    lim = AuthLimiter(clock, base=1.0)
    lim.failed("192.0.2.7")
    assert lim.attempt("192.0.2.7", wrong, holder="gone").verdict is Verdict.HELD
    clock.advance(1.0 + STALE_AFTER)
    assert lim.attempt("192.0.2.7", wrong, holder="other").verdict is Verdict.REFUSED
    clock.advance(0.1)
    assert lim.attempt("192.0.2.7", right, holder="other").verdict is Verdict.ACCEPTED


def test_the_global_ceiling_is_a_sliding_minute() -> None:
    clock = FakeClock()
    lim = AuthLimiter(clock, base=0.0, per_minute=3)
    for i in range(3):
        assert lim.attempt(f"10.0.0.{i}", wrong, holder=i).verdict is Verdict.REJECTED
        clock.advance(10.0)
    held = lim.attempt("10.0.0.9", right, holder="owner")  # right, but not checked yet
    assert held.verdict is Verdict.HELD and held.until == pytest.approx(clock.monotonic() + 30)
    clock.advance(30.0)
    assert lim.attempt("10.0.0.9", right, holder="owner").verdict is Verdict.ACCEPTED
    assert lim.attempt("10.0.0.8", wrong, holder="x").verdict is Verdict.REJECTED
    assert lim.attempt("10.0.0.7", wrong, holder="y").verdict is Verdict.HELD
    with pytest.raises(ValueError):
        AuthLimiter(clock, per_minute=0)
