"""The recorder's mailbox: rows and requests in order, rows bounded, requests never lost,
a waiting writer woken by a row, a napping one only by a request."""

from __future__ import annotations

import threading

from eccm.store.mailbox import Mailbox
from tests.waiting import wait_until

WAIT = 30.0


def test_items_come_out_in_order_and_only_rows_are_refused_when_full() -> None:
    box: Mailbox[str] = Mailbox(size=2)
    assert box.put_row("row 1") and box.put_row("row 2")
    assert not box.put_row("row 3")  # full: the caller counts it dropped
    box.put("stop")  # a request is never refused
    assert len(box) == 3
    assert [box.get(0.0) for _ in range(4)] == ["row 1", "row 2", "stop", None]


def test_a_row_wakes_a_writer_waiting_for_one() -> None:
    box: Mailbox[str] = Mailbox(size=10)
    got: list[str | None] = []
    taker = threading.Thread(target=lambda: got.append(box.get(WAIT)))
    taker.start()
    # Put only once the taker waits (else get() finds the row without waiting).
    wait_until(lambda: box._asleep, WAIT, "the taker to wait")
    box.put_row("row")
    taker.join(WAIT)
    assert got == ["row"]


def test_a_request_ends_a_nap_and_rows_do_not() -> None:
    box: Mailbox[str] = Mailbox(size=10)
    napped = threading.Event()

    def nap() -> None:
        box.nap(WAIT)
        napped.set()

    taker = threading.Thread(target=nap)
    taker.start()
    box.put_row("row")  # rows gather during a nap
    assert not napped.wait(0.2)
    box.put("rotate")
    assert napped.wait(WAIT)
    taker.join(WAIT)
    assert [box.get(0.0), box.get(0.0)] == ["row", "rotate"]
    box.put("stop")
    box.nap(WAIT)  # a request waiting: no nap at all
    assert box.get(0.0) == "stop"
