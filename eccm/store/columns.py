"""The OBD columns the car gave last time, for the first file of the next trip.

Rows written while the adapter connects (GNSS rows, the first seconds of a drive) cannot
wait for the car to say which commands it supports, so the first file of a trip used to
have the configured fast commands only and the next file every supported one (with
``OBD_SLOW_COMMANDS=ALL``, 18 columns then 51 in the demo). Engines that match columns
by position (Athena, Trino, Spark over CSV) then misread every trip's first file. The
resolved columns are remembered in the record folder (``.eccm-columns.json``) and the
next start opens its first file with them: the same car and configuration give every file
the same columns. The memory is only a hint: it is used only for the same car identifier
and the same command keys, any name in it must be one python-OBD knows, and a file that
is missing, cut short by a power cut or unreadable is ignored (the first file then has
the configured columns, as before). A car that answers differently makes the link's
resolved layout differ, and the recorder starts a new file, as on any change of columns.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from pathlib import Path
from typing import Any

from eccm.obd.names import has_name

log = logging.getLogger(__name__)

FILE_NAME = ".eccm-columns.json"


def _key(car: str, fast_config: tuple[str, ...], slow_config: tuple[str, ...]) -> dict[str, Any]:
    return {"car": car, "fast_config": list(fast_config), "slow_config": list(slow_config)}


def recall(
    folder: Path, car: str, fast_config: tuple[str, ...], slow_config: tuple[str, ...]
) -> tuple[tuple[str, ...], tuple[str, ...]] | None:
    """(fast, slow) the car gave last time under this configuration, or None."""
    try:
        data = json.loads((folder / FILE_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or any(
        data.get(k) != v for k, v in _key(car, fast_config, slow_config).items()
    ):
        return None
    fast, slow = data.get("fast"), data.get("slow")
    names = (
        (fast or []) + (slow or []) if isinstance(fast, list) and isinstance(slow, list) else None
    )
    if names is None or not all(isinstance(n, str) and has_name(n) for n in names):
        return None
    if len(set(names)) != len(names):
        return None
    return tuple(fast), tuple(slow)  # type: ignore[arg-type]


def remember(
    folder: Path,
    car: str,
    fast_config: tuple[str, ...],
    slow_config: tuple[str, ...],
    fast: tuple[str, ...],
    slow: tuple[str, ...],
) -> None:
    """Keep (fast, slow) for the next start; a failure only costs the hint."""
    if recall(folder, car, fast_config, slow_config) == (fast, slow):
        return  # the usual reconnection: nothing to write
    data = {**_key(car, fast_config, slow_config), "fast": list(fast), "slow": list(slow)}
    tmp = folder / f"{FILE_NAME}.tmp"
    try:
        tmp.write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")
        # Renamed whole: a power cut leaves the old memory or the new one (or, on a file
        # system that reorders, an empty file, which recall ignores).
        os.replace(tmp, folder / FILE_NAME)
    except OSError as exc:
        log.debug("cannot remember the car's columns in %s: %s", folder, exc)
        with contextlib.suppress(OSError):
            tmp.unlink()
