"""Reports, the logbook, fleet queries and table definitions (SPEC §9).

Read-only tools for a person at a desk, not the logger's path: nothing under eccm/report is
imported by the daemon, and the heavy libraries (matplotlib, duckdb) are imported inside
the functions that need them, from the ``report`` extra.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from eccm.errors import EccmError

INSTALL_HINT = "pip install 'eccm[report]' (in a clone: .venv/bin/pip install -e '.[report]')"


class ReportError(EccmError):
    """A foreseeable problem of a report command: one line for the user."""


def need(module: str, command: str) -> ModuleType:
    """Import a library of the ``report`` extra, or say how to install it."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise ReportError(
            f"eccm {command} needs {module.split('.')[0]}, which comes with the report extra: "
            f"{INSTALL_HINT}"
        ) from None
