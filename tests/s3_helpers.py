"""Checks on what reached the bucket, and `eccm upload` as a command, for the S3 tests."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from eccm.config import Config
from eccm.sim.s3 import LocalS3
from eccm.store.columns import FILE_NAME as COLUMNS_MEMORY
from eccm.store.instance import LOCK_NAME
from eccm.upload.keys import car_prefix, probe_key
from tests.s3server import CAR, get_object, list_objects
from tests.terminal import ECCM


def bucket_objects(server: LocalS3, cfg: Config) -> dict[str, int]:
    objs = list_objects(server, car_prefix(cfg.s3_key_prefix, CAR))
    objs.pop(probe_key(cfg.s3_key_prefix, CAR), None)
    return objs


def assert_each_file_once(server: LocalS3, cfg: Config, files: dict[str, bytes]) -> None:
    """Every file and its sidecar under exactly one key, byte for byte; nothing else."""
    objs = bucket_objects(server, cfg)
    by_name: dict[str, list[str]] = {}
    for key in objs:
        by_name.setdefault(key.rsplit("/", 1)[1], []).append(key)
    assert {n for n in by_name if not n.endswith(".json")} == set(files)
    for name, content in files.items():
        assert len(by_name[name]) == 1, by_name[name]
        key = by_name[name][0]
        assert by_name.get(name + ".json") == [key + ".json"], "sidecar missing or elsewhere"
        assert get_object(server, key) == content
        side = json.loads(get_object(server, key + ".json"))
        assert side["sha256"] == hashlib.sha256(content).hexdigest()


def write_config(path: Path, values: dict[str, str]) -> Path:
    path.write_text("[DEFAULT]\n" + "".join(f"{k}={v}\n" for k, v in values.items()))
    return path


def upload_cmd(config: Path) -> list[str]:
    return [*ECCM, "upload", "--config", str(config)]  # Ctrl-C works (tests/terminal.py)


def left_behind(records: Path) -> list[str]:
    """Files in the record folder but the daemon's lock and its memory of the car's
    columns (both kept for the next start)."""
    return sorted(
        p.name
        for p in records.iterdir()
        if p.is_file() and p.name not in (LOCK_NAME, COLUMNS_MEMORY)
    )
