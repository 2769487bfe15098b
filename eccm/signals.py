"""The signals that stop ECCM cleanly (the open file closed, the uploads ended)."""

from __future__ import annotations

import signal


def stop_signals() -> tuple[signal.Signals, ...]:
    """SIGTERM, SIGINT, and SIGHUP (a closed terminal) unless SIGHUP is ignored.

    ``nohup ./start.sh &`` ignores SIGHUP so that logging out does not stop the logger:
    a handler installed over that choice would stop it. Call this before installing any
    handler (what the process inherited is only visible then).
    """
    if signal.getsignal(signal.SIGHUP) is signal.SIG_IGN:
        return (signal.SIGTERM, signal.SIGINT)
    return (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
