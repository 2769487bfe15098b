"""S3 sync over a link that flaps like a car's cellular modem.

Between ECCM and a real SeaweedFS sits ``FlakyLink``, a TCP proxy that drops connections,
resets them mid-request or just as the answer starts, stalls mid-body, or hangs. At the
end every file must be in the bucket exactly once, verified, under its one key, with
nothing lost locally and a bounded number of log lines.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from eccm.clock import SystemClock
from eccm.config import Config
from eccm.s3client import S3Timeouts
from eccm.s3keys import car_prefix, probe_key
from eccm.s3local import LocalS3
from eccm.uploader import Uploader
from tests import s3server
from tests.s3server import CAR, FlakyLink, get_object, list_objects, make_closed_file, make_config

s3_http = s3server.s3_http


@pytest.fixture
def link(s3_http: LocalS3) -> Iterator[FlakyLink]:
    proxy = FlakyLink((s3_http.host, s3_http.s3_port), seed=7)
    yield proxy
    proxy.close()


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


def test_a_link_that_hangs_after_the_probe_ends_the_run_at_the_first_timeout(
    s3_http: LocalS3, link: FlakyLink, tmp_path: Path
) -> None:
    # Regression: botocore's ReadTimeoutError is also an OSError, and was taken for a
    # local failure to archive each file ("cannot archive it locally"): every file was
    # reported as kept at ERROR level, and each one waited out its own timeout.
    link.healthy()
    cfg = make_config(tmp_path, s3_http, S3_SERVER_ENDPOINT=link.endpoint)
    up = Uploader(cfg, SystemClock(), timeouts=S3Timeouts(connect=2, read=1, attempts=1))
    make_closed_file(tmp_path, seq=1)
    assert up.run_once().uploaded == 1  # the probe is done, conditional create known

    link.hang()
    for seq in range(2, 10):
        make_closed_file(tmp_path, seq=seq)
    report = up.run_once()
    assert report.kept == []
    assert report.error is not None and "did not answer within 1 s" in report.error
    assert "archive" not in report.error
    assert report.remaining == 8 and up.consecutive_failures == 1
