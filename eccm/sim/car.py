"""A simulated car: the ELM327 emulator (package elm327-emulator) on a pseudo-terminal.

Used by the demo, the benchmarks and the tests. The emulator is an optional dependency
(the `demo` and `test` extras), so it is imported only when a car is asked for.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from eccm.errors import EccmError


class _EmulatorChatter(logging.Filter):
    """Drops the emulator's INFO and DEBUG lines, which it logs on the root logger.

    Lines such as "Unknown ELM command: '010C0D1104100B3'" describe the simulated adapter
    answering ECCM's probes, not a problem; a demo user would take them for errors.
    """

    def __init__(self, package_dir: str) -> None:
        super().__init__()
        self._prefix = os.path.join(package_dir, "")

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.WARNING or not record.pathname.startswith(self._prefix)


def quiet_emulator_logging() -> None:
    """Stop the emulator from reconfiguring the root logger, writing ./elm.log and
    chattering on the root logger.

    By default each emulator thread loads its own logging configuration (DEBUG to stdout
    and elm.log in the current directory); an incremental configuration changes nothing.
    """
    root = logging.getLogger()
    spec = importlib.util.find_spec("elm")
    locations = spec.submodule_search_locations if spec is not None else None
    if locations and not any(isinstance(f, _EmulatorChatter) for f in root.filters):
        root.addFilter(_EmulatorChatter(next(iter(locations))))
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
