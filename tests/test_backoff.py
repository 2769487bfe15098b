from eccm.backoff import Backoff


def test_first_attempt_has_no_delay_then_doubles_up_to_the_cap() -> None:
    b = Backoff(base=0.5, cap=4.0)
    delays = []
    for _ in range(7):
        delays.append(b.delay())
        b = b.failed()
    assert delays == [0.0, 0.5, 1.0, 2.0, 4.0, 4.0, 4.0]


def test_jitter_is_bounded_by_the_cap_and_success_resets() -> None:
    b = Backoff(base=1.0, cap=3.0, jitter=0.5).failed().failed()
    assert b.delay(draw=0.0) == 2.0
    assert b.delay(draw=0.99) == 2.99
    assert b.failed().delay(draw=0.99) == 3.0
    assert b.succeeded().delay() == 0.0


def test_attempts_stop_growing_so_the_delay_never_overflows() -> None:
    b = Backoff(base=1.0, cap=300.0)
    for _ in range(10_000):
        b = b.failed()
    assert b.delay() == 300.0
