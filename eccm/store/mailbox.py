"""The recorder's queue: rows and requests for its writer thread, in order, rows in batches.

A ``queue.Queue`` wakes the writer for every row: at full rate that is hundreds of
thread wake-ups a second, and the wake-up (a futex call and a switch of threads, paid by
the publishing OBD thread) cost more CPU than the row itself. Here a row wakes the
writer only when it is waiting for the first row after a quiet spell; once it writes
rows it takes what gathered and then naps (``nap``) for a fraction of a second, so rows
reach it in batches. Requests (a trip's end, a rotation, stop) wake it at once.
"""

from __future__ import annotations

import collections
import threading
from typing import Generic, TypeVar

T = TypeVar("T")


class Mailbox(Generic[T]):
    """Bounded for rows (``put_row`` refuses one when ``size`` items wait), not for
    requests (``put``), which must never be lost. One thread takes (``get``)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._items: collections.deque[tuple[bool, T]] = collections.deque()  # (request, item)
        self._cond = threading.Condition(threading.Lock())
        self._asleep = False  # the taker waits for any item, a row included
        self._requests = 0  # requests waiting: a nap ends at once

    def __len__(self) -> int:
        return len(self._items)

    def put_row(self, item: T) -> bool:
        """Queue a row; False (not queued) when the box is full. Never waits."""
        with self._cond:
            if len(self._items) >= self.size:
                return False
            self._items.append((False, item))
            if self._asleep:
                self._asleep = False
                self._cond.notify()
        return True

    def put(self, item: T) -> None:
        """Queue a request and wake the taker."""
        with self._cond:
            self._items.append((True, item))
            self._requests += 1
            self._asleep = False
            self._cond.notify()

    def get(self, timeout: float) -> T | None:
        """The next item; waits up to ``timeout`` for one (None: none came)."""
        with self._cond:
            if not self._items:
                self._asleep = True
                self._cond.wait(timeout)
                self._asleep = False
                if not self._items:
                    return None
            request, item = self._items.popleft()
            if request:
                self._requests -= 1
            return item

    def nap(self, seconds: float) -> None:
        """Wait ``seconds`` for rows to gather, or less if a request comes."""
        with self._cond:
            if not self._requests:
                self._cond.wait(seconds)
