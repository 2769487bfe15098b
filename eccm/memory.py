"""The daemon process's memory: settings made once, before `eccm run` imports the rest.

Measured at full rate with the socket, the web page and MQTT on (bench/soak.py), the
process was at 70 MB, of which:

- about 12 MB were numpy, which pint imports whenever it is installed (the report extra
  brings it) although python-OBD's values are plain numbers: the daemon never needs it;
- several MB were glibc's malloc keeping freed memory: one arena per thread (a dozen
  threads) and a threshold for mmap that rises with every large block freed, after which
  large blocks come from the heap and leave it fragmented when freed.

Even so the heap's free space grew by some 0.1 MB a minute at full rate (free pieces
between blocks still in use, which glibc gives back only when asked): a thread asks it,
``malloc_trim``, once a minute.

All of it is only for `eccm run`: the report commands use numpy, and a test process
imports what it likes.
"""

from __future__ import annotations

import ctypes
import logging
import os
import sys
import threading

log = logging.getLogger(__name__)

# glibc's mallopt parameters (malloc.h).
M_MMAP_THRESHOLD = -3
M_ARENA_MAX = -8

# Two arenas: threads that allocate at the same moment seldom wait for each other (the
# GIL serialises most of it anyway), and a dozen threads no longer keep a dozen heaps.
ARENA_MAX = 2
# glibc's initial threshold, kept fixed (glibc raises it to the size of every mapped block
# freed, up to 32 MiB): blocks from 128 KiB up (a summary being written, a file read in
# chunks) are mapped and given back whole when freed, instead of fragmenting the heap.
# Setting it also keeps the trim threshold at its 128 KiB: free heap tops are given back.
MMAP_THRESHOLD = 128 * 1024

# How often the heap's free pages are given back to the system (malloc_trim): it walks
# the heap (a millisecond or two for ECCM's), and the heap grows slowly.
TRIM_EVERY = 60.0

# Each is set unless the environment already says (the documented glibc variables).
_MALLOPTS = (
    ("MALLOC_ARENA_MAX", M_ARENA_MAX, ARENA_MAX),
    ("MALLOC_MMAP_THRESHOLD_", M_MMAP_THRESHOLD, MMAP_THRESHOLD),
)


def lean_daemon() -> None:
    """The settings below, for the daemon; call before any other thread starts."""
    keep_numpy_out()
    tune_malloc()
    if _glibc() is not None:
        HeapTrimmer(TRIM_EVERY).start()


def keep_numpy_out() -> bool:
    """Make ``import numpy`` fail in this process, so that pint runs without it (its
    documented fallback: plain numbers only, which is all python-OBD decodes). Returns
    whether it did: not when numpy is imported already."""
    if "numpy" in sys.modules:
        return False
    # A None entry is the import system's way to say "not available" (ImportError).
    sys.modules["numpy"] = None  # type: ignore[assignment]
    return True


def tune_malloc() -> list[str]:
    """glibc's malloc: ARENA_MAX arenas and a fixed mmap threshold, each unless its
    environment variable is set; nothing on another C library. Returns the names of the
    variables whose setting was made. Before threads start: the arena limit applies to
    arenas not yet made."""
    libc = _glibc()
    if libc is None:
        return []
    mallopt = libc.mallopt
    made = []
    for env, param, value in _MALLOPTS:
        if env in os.environ:
            continue
        if mallopt(ctypes.c_int(param), ctypes.c_int(value)) == 1:
            made.append(env)
        else:
            log.debug("glibc refused mallopt(%d, %d)", param, value)
    return made


def trim_heap() -> bool:
    """Give the heap's free pages back to the system (glibc's malloc_trim); whether glibc
    gave any back."""
    libc = _glibc()
    return bool(libc is not None and libc.malloc_trim(ctypes.c_size_t(0)))


class HeapTrimmer:
    """A daemon thread calling :func:`trim_heap` every ``every`` seconds."""

    def __init__(self, every: float) -> None:
        self.every = every
        self.trims = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="eccm-heap-trim", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            trim_heap()
            self.trims += 1


def _glibc() -> ctypes.CDLL | None:
    """The C library when it is glibc (musl has a mallopt that ignores everything, and no
    malloc_trim), else None."""
    try:
        libc = ctypes.CDLL(None)
    except OSError:
        return None
    if not all(hasattr(libc, f) for f in ("gnu_get_libc_version", "mallopt", "malloc_trim")):
        return None
    return libc
