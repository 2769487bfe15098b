"""DropCounter: exact counts of dropped rows, reported at most once a minute (fake time)."""

from __future__ import annotations

import threading

from eccm.store.drops import QUEUE, WRITE, DropCounter


def test_the_first_drop_is_reported_at_once_then_once_a_minute_with_exact_counts() -> None:
    d = DropCounter(every=60.0)
    assert d.due(0.0) is None  # nothing dropped: nothing to say
    d.add(WRITE, 0.0)
    first = d.due(0.0)
    assert first is not None and first.rows == 1 and first.by_cause == {WRITE: 1}
    reported = [first.rows]
    t = 0.0
    for _ in range(1000):  # 200 s at 5 rows/s, every row dropped
        t += 0.2
        d.add(WRITE, t)
        report = d.due(t)
        if report is not None:
            reported.append(report.rows)
            assert report.seconds <= 60.0
    assert len(reported) == 4  # at 0, 60, 120, 180 s
    rest = d.take(t)
    assert sum(reported) + rest.rows == d.total == 1001


def test_causes_are_counted_apart_and_rows_added_at_once() -> None:
    d = DropCounter(every=60.0)
    d.add(QUEUE, 1.0)
    d.add(WRITE, 2.0, rows=7)
    d.add(WRITE, 3.0, rows=0)
    report = d.take(5.0)
    assert report.by_cause == {QUEUE: 1, WRITE: 7} and report.rows == 8
    assert report.seconds == 4.0  # since the first row it reports
    assert d.total == 8 and d.due(200.0) is None


def test_a_claimed_line_takes_the_count_and_the_minute() -> None:
    d = DropCounter(every=60.0)
    d.add(WRITE, 0.0, rows=3)
    line = d.claim(0.0)
    assert line is not None and line.rows == 3
    d.add(WRITE, 1.0)
    assert d.claim(30.0) is None  # a line 30 s ago: not yet
    assert d.due(59.9) is None
    late = d.due(60.0)
    assert late is not None and late.rows == 1


def test_two_threads_lose_no_count() -> None:
    d = DropCounter(every=60.0)
    seen: list[int] = []

    def drop(cause: str) -> None:
        for i in range(20_000):
            d.add(cause, float(i))
            if (r := d.due(float(i))) is not None:
                seen.append(r.rows)

    threads = [threading.Thread(target=drop, args=(c,)) for c in (QUEUE, WRITE)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert d.total == 40_000
    assert sum(seen) + d.take(1e9).rows == 40_000
