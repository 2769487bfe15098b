"""Who may connect to the control socket: the connections held, and whom a newcomer displaces
when every slot is taken (:func:`choose_victim`, pure, with unit tests of its own; the web
page's connections follow the same rule, :mod:`eccm.web.gate`)."""

from __future__ import annotations

import socket
import threading
from collections import Counter
from collections.abc import Collection
from dataclasses import dataclass
from typing import Protocol, TypeVar


class Held(Protocol):
    """What :func:`choose_victim` reads of a held connection."""

    @property
    def key(self) -> str: ...
    @property
    def opened(self) -> float: ...
    @property
    def authenticated(self) -> bool: ...


_H = TypeVar("_H", bound=Held)


@dataclass(eq=False)
class Slot:
    """One accepted connection, as admission sees it (guarded by :attr:`Admission.lock`)."""

    sock: socket.socket  # the TLS wrapper once there is one: it owns the descriptor
    key: str  # address_key of the peer
    opened: float  # monotonic
    thread: threading.Thread | None = None
    authenticated: bool = False
    read_only: bool = False  # authenticated with SOCKET_SERVER_READ_SECRET
    evicted: bool = False  # dropped to make room for another address; set once


def choose_victim(slots: Collection[_H], key: str, max_clients: int) -> tuple[bool, _H | None]:
    """Whether a new connection from ``key`` may come in, and whom it displaces.

    When every slot is taken, connections that have not authenticated yet are shared fairly
    between addresses: the newcomer displaces the oldest waiting connection of the address
    holding the most of them, if that address holds at least two more of them than the
    newcomer's does. So connections opened and never authenticated (at most 10 s each, but
    renewed for ever) from one address, or a few, cannot lock the owner out, and a crowd
    from one address cannot evict each other back and forth. Authenticated clients are
    never displaced.
    """
    if len(slots) < max_clients:
        return True, None
    waiting = [s for s in slots if not s.authenticated]
    per_key = Counter(s.key for s in waiting)
    if not per_key:
        return False, None

    def oldest(k: str) -> _H:
        return min((s for s in waiting if s.key == k), key=lambda s: s.opened)

    crowd, count = max(per_key.items(), key=lambda kv: (kv[1], -oldest(kv[0]).opened))
    if count < per_key.get(key, 0) + 2:
        return False, None
    return True, oldest(crowd)


class Admission:
    """The connections the server holds, by id, under one lock."""

    def __init__(self, max_clients: int) -> None:
        self.max_clients = max_clients
        self.lock = threading.Lock()
        self._slots: dict[int, Slot] = {}
        self._next_id = 0

    def __len__(self) -> int:
        with self.lock:
            return len(self._slots)

    def admit(self, slot: Slot) -> tuple[int | None, Slot | None]:
        """The new slot's id (None: refused), and the slot it displaced (marked evicted)."""
        with self.lock:
            admitted, victim = choose_victim(list(self._slots.values()), slot.key, self.max_clients)
            if victim is not None:
                victim.evicted = True
                self._slots = {i: s for i, s in self._slots.items() if s is not victim}
            if not admitted:
                return None, victim
            cid = self._next_id
            self._next_id += 1
            self._slots[cid] = slot
            return cid, victim

    def authenticated(self, slot: Slot, read_only: bool = False) -> bool:
        """The slot's client authenticated: it is never displaced from now on. False
        (nothing changed) for a client of the read secret when such clients hold every
        connection but one already: authenticated clients are never displaced, so the
        last connection is kept for the full secret, or a passenger's or a dashboard's
        watchers could lock the owner out for as long as they liked."""
        with self.lock:
            if read_only and self.max_clients >= 2:
                readers = sum(1 for s in self._slots.values() if s.authenticated and s.read_only)
                if readers >= self.max_clients - 1:
                    return False
            if not slot.evicted:
                slot.authenticated = True
                slot.read_only = read_only
            return True

    def wrapped(self, slot: Slot, sock: socket.socket) -> None:
        """The slot's socket is now ``sock`` (the TLS wrapper owns the descriptor)."""
        with self.lock:
            slot.sock = sock

    def remove(self, cid: int, slot: Slot) -> None:
        with self.lock:
            if self._slots.get(cid) is slot:
                del self._slots[cid]

    def slots(self) -> list[Slot]:
        with self.lock:
            return list(self._slots.values())
