"""The ELM327 emulator (package elm327-emulator) as plain helpers for tests.

Importing this module points the emulator's logging set-up at a configuration that changes
nothing: by default each emulator thread reconfigures the root logger (DEBUG, stdout) and
writes elm.log into the current directory.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import elm.obd_message
from elm import Elm

_QUIET = Path(tempfile.gettempdir()) / f"eccm-elm-logging-{os.getpid()}.yaml"
_QUIET.write_text("version: 1\nincremental: true\n", encoding="utf-8")
os.environ["ELM_LOG_CFG"] = str(_QUIET)


@contextlib.contextmanager
def emulated_car(scenario: str = "car") -> Iterator[Any]:
    """A running emulator; its pseudo-terminal is ``emu.get_pty()``."""
    emu = Elm(batch_mode=True)
    emu.scenario = scenario
    emu.set_sorted_obd_msg()
    # Opened before the emulator's thread starts, which would otherwise race to open one.
    emu.get_pty()
    with emu:
        yield emu


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


def wait_until(predicate: Callable[[], Any], timeout: float = 30.0, what: str = "") -> Any:
    """Poll ``predicate`` until it returns something true; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what or predicate}")
        time.sleep(0.02)
