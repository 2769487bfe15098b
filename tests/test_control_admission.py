"""Who may connect when the control socket is full: the pure rule, and its registry."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

from eccm.control.admission import Admission, Slot, choose_victim


@pytest.fixture
def sock() -> Iterator[socket.socket]:
    s = socket.socket()
    yield s
    s.close()


def slots(sock: socket.socket, *spec: tuple[str, float, bool]) -> list[Slot]:
    return [Slot(sock, key, opened, authenticated=auth) for key, opened, auth in spec]


def test_room_left_admits_without_displacing(sock: socket.socket) -> None:
    held = slots(sock, ("a", 1.0, False))
    assert choose_victim(held, "a", 2) == (True, None)


def test_authenticated_clients_are_never_displaced(sock: socket.socket) -> None:
    held = slots(sock, ("a", 1.0, True), ("a", 2.0, True))
    assert choose_victim(held, "b", 2) == (False, None)


def test_a_crowd_of_waiting_connections_yields_its_oldest(sock: socket.socket) -> None:
    held = slots(sock, ("a", 3.0, False), ("a", 1.0, False), ("owner", 0.5, True))
    admitted, victim = choose_victim(held, "owner", 3)
    assert admitted and victim is held[1]


def test_a_crowd_cannot_evict_itself_back_and_forth(sock: socket.socket) -> None:
    held = slots(sock, ("a", 1.0, False), ("a", 2.0, False), ("a", 3.0, False))
    assert choose_victim(held, "a", 3) == (False, None)
    # One more waiting than the newcomer's address is no crowd either.
    held = slots(sock, ("a", 1.0, False), ("b", 2.0, False), ("c", 0.0, True))
    assert choose_victim(held, "b", 3) == (False, None)
    assert choose_victim(held, "d", 3) == (False, None)


def test_between_equal_crowds_the_one_waiting_longest_yields(sock: socket.socket) -> None:
    held = slots(sock, ("a", 5.0, False), ("a", 6.0, False), ("b", 2.0, False), ("b", 9.0, False))
    admitted, victim = choose_victim(held, "c", 4)
    assert admitted and victim is held[2]


def test_admission_removes_and_marks_the_displaced(sock: socket.socket) -> None:
    admission = Admission(2)
    first, second = slots(sock, ("a", 1.0, False), ("a", 2.0, False))
    assert admission.admit(first) == (0, None)
    assert admission.admit(second) == (1, None)
    newcomer = Slot(sock, "owner", 3.0)
    assert admission.admit(newcomer) == (2, first)
    assert first.evicted and len(admission) == 2
    admission.authenticated(first)  # too late: it is gone
    assert not first.authenticated
    admission.authenticated(newcomer)
    assert newcomer.authenticated
    assert admission.admit(Slot(sock, "b", 4.0)) == (None, None)  # one waiting: no crowd
    admission.remove(2, newcomer)
    assert admission.slots() == [second]
    admission.remove(2, newcomer)  # twice is harmless
    assert admission.admit(Slot(sock, "b", 5.0)) == (3, None)
