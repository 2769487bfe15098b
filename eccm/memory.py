"""The daemon process's memory: settings made once, before `eccm run` imports the rest.

Measured at full rate with the socket, the web page and MQTT on (bench/soak.py), the
process was at 70 MB, of which:

- about 12 MB were numpy, which pint imports whenever it is installed (the report extra
  brings it) although python-OBD's values are plain numbers: the daemon never needs it;
- several MB were glibc's malloc keeping freed memory: one arena per thread (a dozen
  threads) and a threshold for mmap that rises with every large block freed, after which
  large blocks come from the heap and leave it fragmented when freed.

Both are set only for `eccm run`: the report commands use numpy, and a test process
imports what it likes.
"""

from __future__ import annotations

import ctypes
import logging
import os
import sys

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

# Each is set unless the environment already says (the documented glibc variables).
_MALLOPTS = (
    ("MALLOC_ARENA_MAX", M_ARENA_MAX, ARENA_MAX),
    ("MALLOC_MMAP_THRESHOLD_", M_MMAP_THRESHOLD, MMAP_THRESHOLD),
)


def lean_daemon() -> None:
    """Both settings below, for the daemon; call before any thread starts."""
    keep_numpy_out()
    tune_malloc()


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
    try:
        libc = ctypes.CDLL(None)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return []
    if not hasattr(libc, "gnu_get_libc_version"):
        return []  # musl has a mallopt that ignores everything
    made = []
    for env, param, value in _MALLOPTS:
        if env in os.environ:
            continue
        if mallopt(ctypes.c_int(param), ctypes.c_int(value)) == 1:
            made.append(env)
        else:
            log.debug("glibc refused mallopt(%d, %d)", param, value)
    return made
