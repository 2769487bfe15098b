"""The configuration keys the recorder uses, taken from ``Config`` in one place.

The recorder, its rotating writer and its file writer see these and nothing else of the
50-odd keys of config.ini (the disk budget has its own, ``budget.DiskSettings``). Built
once from the validated :class:`eccm.config.Config`: every value is typed and checked
there, and the defaults are config.py's alone (no field has one here).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from eccm.config import Config


@dataclass(frozen=True)
class RecordSettings:
    """What the recording of data files is configured with (the keys' names in the comments)."""

    recording: bool  # FILE_RECORDING; False: rows are not written
    record_dir: Path  # RECORD_DIRECTORY_LOCATION
    car: str  # CAR_IDENTIFIER
    ext: str  # MONITORING_FILE_EXTENSION
    separator: str  # MONITORING_FILE_SEPARATION_CHARACTER, or the extension's own
    compression: str  # FILE_COMPRESSION
    rotation_seconds: float  # FILE_ROTATION_SECONDS
    rotation_max_bytes: int  # FILE_ROTATION_MAX_BYTES
    flush_interval: float  # FILE_FLUSH_INTERVAL

    @classmethod
    def from_config(cls, cfg: Config) -> RecordSettings:
        return cls(
            recording=cfg.file_recording,
            record_dir=cfg.record_dir,
            car=cfg.car_identifier,
            ext=cfg.monitoring_file_extension,
            separator=cfg.separator,
            compression=cfg.file_compression,
            rotation_seconds=cfg.file_rotation_seconds,
            rotation_max_bytes=cfg.file_rotation_max_bytes,
            flush_interval=cfg.file_flush_interval,
        )
