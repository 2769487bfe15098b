"""Importing python-OBD with pint's cache of its unit definitions.

python-OBD builds a pint UnitRegistry when it is imported (obd.UnitsAndScaling), and pint
parses its definition files to build one: about 0.3 s of the 0.7 s python-OBD's import
takes on the development machine, seconds on a Pi, at every start and before the OBD link
can open the adapter. pint can keep the parsed definitions in a cache folder, under names
that hash the files, pint's version and Python's (a changed file or an upgrade is parsed
anew); python-OBD never asks for it. :func:`import_python_obd` imports python-OBD with that
cache on. The registry is pint's, built from the same definitions, with the same units and
factors (tests/test_obd_importing.py compares every unit and every command's decoding).

pint writes its cache files without a temporary file: a power cut while it writes them
(the first start only) can leave one cut short. A cache pint cannot read is removed and
the definitions are parsed as python-OBD does, so the next start writes it again.
"""

from __future__ import annotations

import logging
import shutil
import sys
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


def default_cache() -> Path:
    """Where ECCM keeps pint's cache: the user's cache folder (~/.cache/eccm/pint)."""
    import platformdirs  # pint's own dependency, imported by pint anyway

    return platformdirs.user_cache_path("eccm", appauthor=False) / "pint"


def import_python_obd(cache: Path | None = None) -> None:
    """Import python-OBD (a no-op once it is) with pint's definition cache in ``cache``
    (default: :func:`default_cache`)."""
    if "obd" in sys.modules:
        return
    import pint

    folder = cache if cache is not None else default_cache()
    plain = pint.UnitRegistry

    def cached(*args: Any, **kwargs: Any) -> Any:
        try:
            return plain(*args, **{**kwargs, "cache_folder": folder})
        except Exception as exc:  # a cache cut short by a power cut, a folder not writable
            log.info("pint's cache in %s is not usable (%s): parsing its definitions", folder, exc)
            shutil.rmtree(folder, ignore_errors=True)
            return plain(*args, **kwargs)

    # Only while python-OBD's module runs: it is the one caller, at its import.
    pint.UnitRegistry = cached  # type: ignore[misc,assignment]
    try:
        import obd  # noqa: F401
    finally:
        pint.UnitRegistry = plain  # type: ignore[misc]
