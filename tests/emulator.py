"""The ELM327 emulator (package elm327-emulator) as plain helpers for tests.

``emulated_car`` is the project's own (eccm.sim.car, shared with the demo), which also keeps
the emulator from reconfiguring logging and writing elm.log.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import elm.obd_message

from eccm.sim.car import emulated_car

__all__ = ["emulated_car", "stored_dtcs"]


@contextlib.contextmanager
def stored_dtcs(stored: list[str], pending: list[str] | None = None) -> Iterator[None]:
    """Make the emulator report these DTCs (two-byte hex such as "0143") in modes 03/07.

    The emulator's CAN answers leave out the count byte that python-OBD expects after the
    mode byte, so the count goes first (its own "43 00" for no code already has it). The
    emulator's 01 01 then counts one code too many; the MIL is right.
    """

    def listed(codes: list[str]) -> list[str]:
        return [f"{len(codes):02X}", *codes] if codes else []

    msg = elm.obd_message
    before = list(msg.DTC_STORED), list(msg.DTC_PENDING)
    msg.DTC_STORED[:] = listed(stored)
    msg.DTC_PENDING[:] = listed(pending or [])
    try:
        yield
    finally:
        msg.DTC_STORED[:], msg.DTC_PENDING[:] = before
