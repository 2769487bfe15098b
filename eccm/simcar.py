"""A simulated car: the ELM327 emulator (package elm327-emulator) on a pseudo-terminal.

Used by the demo, the benchmarks and the tests. The emulator is an optional dependency
(the `demo` and `test` extras), so it is imported only when a car is asked for.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from eccm.errors import EccmError


def quiet_emulator_logging() -> None:
    """Stop the emulator from reconfiguring the root logger and writing ./elm.log.

    By default each emulator thread loads its own logging configuration (DEBUG to stdout
    and elm.log in the current directory); an incremental configuration changes nothing.
    """
    if "ELM_LOG_CFG" in os.environ:
        return
    path = Path(tempfile.gettempdir()) / f"eccm-elm-logging-{os.getpid()}.yaml"
    path.write_text("version: 1\nincremental: true\n", encoding="utf-8")
    os.environ["ELM_LOG_CFG"] = str(path)


@contextlib.contextmanager
def emulated_car(scenario: str = "car", delay: float | None = None) -> Iterator[Any]:
    """A running emulator; its pseudo-terminal is ``emu.get_pty()``."""
    quiet_emulator_logging()
    try:
        from elm import Elm
    except ImportError as exc:
        raise EccmError(
            "the ELM327 emulator is not installed: run ./start.sh --demo, "
            "or .venv/bin/pip install -e '.[demo]'"
        ) from exc
    emu = Elm(batch_mode=True)
    emu.scenario = scenario
    emu.set_sorted_obd_msg()
    if delay is not None:
        emu.delay = delay
    # Opened before the emulator's thread starts, which would otherwise race to open one.
    emu.get_pty()
    with emu:
        yield emu
