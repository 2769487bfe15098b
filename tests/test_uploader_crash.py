"""SIGKILL at any point of an upload: no file lost, no second copy, no unverified delete.

The uploader runs in a subprocess (tests/uploader_run.py) whose step hook SIGKILLs it at a
named point, as a power cut would; then a normal run must finish the job.
"""

from __future__ import annotations

import hashlib
import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from eccm import config as eccm_config
from eccm.clock import SystemClock
from eccm.sim.s3 import LocalS3
from eccm.upload.keys import car_prefix, probe_key
from eccm.upload.steps import (
    AFTER_DELETE_DATA,
    AFTER_PUT,
    BEFORE_DELETE,
    BEFORE_PUT,
    DURING_PUT,
    STEPS,
)
from eccm.upload.uploader import Uploader
from tests.s3server import CAR, config_values, get_object, list_objects, make_closed_file

ROOT = Path(__file__).resolve().parent.parent
RUNNER = Path(__file__).with_name("uploader_run.py")


def run_and_kill(values: dict[str, str], point: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(RUNNER), json.dumps(values), "--die-at", point],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


CASES = [
    (BEFORE_PUT, "http", False),
    (DURING_PUT, "https", False),  # over https the body is read once: while sending
    (AFTER_PUT, "http", False),
    (BEFORE_DELETE, "http", False),
    (AFTER_DELETE_DATA, "http", False),
    (AFTER_DELETE_DATA, "http", True),
]


def test_every_step_of_the_uploader_has_its_crash_test() -> None:
    assert {point for point, _scheme, _keep in CASES} == set(STEPS)


@pytest.mark.parametrize(("point", "scheme", "keep"), CASES)
def test_sigkill_during_an_upload_loses_nothing_and_duplicates_nothing(
    request: pytest.FixtureRequest, tmp_path: Path, point: str, scheme: str, keep: bool
) -> None:
    server: LocalS3 = request.getfixturevalue(f"s3_{scheme}")
    record = tmp_path / "rec"
    values = config_values(record, server, S3_DELETE_AFTER_UPLOAD="no" if keep else "yes")
    cfg = eccm_config.parse(values)
    files = [make_closed_file(record, seq=i, rows=2000) for i in (1, 2)]
    content = {f.name: f.read_bytes() for f in files}
    sidecars = {f.name: (record / (f.name + ".json")).read_bytes() for f in files}
    keys = {f.name: f"{cfg.s3_key_prefix}/car={CAR}/date=2026-11-22/{f.name}" for f in files}
    expected = set(keys.values()) | {k + ".json" for k in keys.values()}

    def remote() -> dict[str, int]:
        objs = list_objects(server, car_prefix(cfg.s3_key_prefix, CAR))
        objs.pop(probe_key(cfg.s3_key_prefix, CAR), None)
        return objs

    proc = run_and_kill(values, point)
    assert proc.returncode == -signal.SIGKILL, proc.stderr

    # Right after the crash: nothing under another key, no local delete unverified.
    after_crash = remote()
    assert set(after_crash) <= expected
    for name, data in content.items():
        local = [record / name, record / "uploaded" / name]
        if not any(p.exists() for p in local):
            assert get_object(server, keys[name]) == data
    # Files go up a few at a time: the process dies where the first of them gets to.
    data_up = [n for n in content if keys[n] in after_crash]
    sidecars_up = [n for n in content if keys[n] + ".json" in after_crash]
    if point == BEFORE_PUT:
        assert data_up == []
    if point == DURING_PUT:
        assert len(data_up) < len(content)  # the interrupted PUT left no object
    if point == AFTER_PUT:
        assert data_up and sidecars_up == []
    if point == BEFORE_DELETE:
        assert all((record / n).exists() for n in content)
    if point == AFTER_DELETE_DATA:
        gone = [n for n in content if not (record / n).exists()]
        assert gone  # a second worker may have got as far in the same instant
        for n in gone:
            assert (record / (n + ".json")).exists()  # the sidecar waits to be finished

    # The next run (the car boots again) finishes the job.
    up = Uploader.from_config(cfg, SystemClock())
    report = up.run_once()
    assert report.ok, report
    objs = remote()
    assert set(objs) == expected
    for name, data in content.items():
        assert get_object(server, keys[name]) == data
        assert get_object(server, keys[name] + ".json") == sidecars[name]
        head = server.client().head_object(Bucket=server.bucket, Key=keys[name])
        assert head["Metadata"]["sha256"] == hashlib.sha256(data).hexdigest()
    top = sorted(p.name for p in record.iterdir() if p.is_file())
    assert top == []
    if keep:
        archived = sorted(p.name for p in (record / "uploaded").iterdir())
        assert archived == sorted([*content, *(n + ".json" for n in content)])
