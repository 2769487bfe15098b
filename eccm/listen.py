"""The listen queue of ECCM's servers (the control socket, the web page): the system's
longest, so that a burst of connects waits in it instead of having SYNs dropped."""

from __future__ import annotations

import socket


def listen_backlog() -> int:
    """The longest listen queue the system allows (net.core.somaxconn).

    A short queue drops the SYNs of a burst of connects, which the client sends again only
    after a second (found: listen(16) and 200 connects: 11 of them waited 1.02 s; the web
    page had aiohttp's 128, and 71 of 200 connects were dropped). The kernel caps the queue
    at somaxconn whatever we ask; the queue costs memory only for connections actually
    waiting in it.
    """
    try:
        with open("/proc/sys/net/core/somaxconn", encoding="ascii") as f:
            value = int(f.read().strip())
    except (OSError, ValueError):
        return socket.SOMAXCONN
    return max(value, socket.SOMAXCONN)
