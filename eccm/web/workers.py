"""A bounded thread pool for service calls that may block (on the car, on the SD card).

The web server's event loop never waits on the car: a call that may (an on-demand read, a
DTC read or clear, an upload) runs on a worker thread. The pool has a fixed number of
threads and a fixed number of places in its queue; a request beyond them is refused at
once with ``busy`` rather than queued without bound. A slot is given back when the call
ends on its thread, not when the browser that asked goes away: a crowd of requests given
up by their clients cannot pile work up behind the pool's back.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from eccm.service import Busy

_T = TypeVar("_T")


class Workers:
    def __init__(self, name: str, threads: int, waiting: int) -> None:
        self.name = name
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix=f"web-{name}")
        self._slots = threads + waiting
        self._used = 0
        self._lock = threading.Lock()

    @property
    def in_use(self) -> int:
        with self._lock:
            return self._used

    async def run(self, fn: Callable[[], _T]) -> _T:
        with self._lock:
            if self._used >= self._slots:
                raise Busy(f"the web server's {self.name} workers are all taken: ask again", 1.0)
            self._used += 1
        try:
            future = self._pool.submit(fn)
        except RuntimeError:  # shut down
            self._release()
            raise
        future.add_done_callback(lambda _f: self._release())
        return await asyncio.wrap_future(future)

    def _release(self) -> None:
        with self._lock:
            self._used -= 1

    def shutdown(self) -> None:
        """Take no more calls; calls running on the car end by their own timeouts."""
        self._pool.shutdown(wait=False, cancel_futures=True)
