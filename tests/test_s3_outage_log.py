"""A car whose S3 server is unreachable for hours must not write a line per retry.

Retries after failures come at most FAILURE_BACKOFF_CAP (5 min) apart, so a server down
for a day is tried about 300 times: on an SD card the same WARNING each time is noise
that buries the lines that matter. The server here is a real SeaweedFS behind a link
that is down; the uploader's clock is a FakeClock moved by the retry interval.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from eccm.clock import FakeClock
from eccm.sim.s3 import LocalS3
from eccm.upload.outcome import LOGGER_NAME
from eccm.upload.s3client import S3Timeouts
from eccm.upload.schedule import FAILURE_BACKOFF_CAP
from eccm.upload.uploader import Uploader
from tests.s3server import FlakyLink, make_closed_file, make_config

QUICK = S3Timeouts(connect=2, read=2, attempts=1)
HOURS = 6


def test_hours_of_an_unreachable_server_log_a_line_an_hour_not_one_per_retry(
    s3_http: LocalS3, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    link = FlakyLink((s3_http.host, s3_http.s3_port))
    link.down()
    try:
        cfg = make_config(tmp_path, s3_http, S3_SERVER_ENDPOINT=link.endpoint)
        make_closed_file(tmp_path, seq=1)
        clock = FakeClock()
        up = Uploader.from_config(cfg, clock, timeouts=QUICK)
        runs = int(HOURS * 3600 / FAILURE_BACKOFF_CAP)  # the fewest runs the schedule makes
        with caplog.at_level(logging.INFO, logger=LOGGER_NAME):
            for _ in range(runs):
                report = up.run_once()
                assert report.error is not None and report.remaining == 1
                clock.advance(FAILURE_BACKOFF_CAP)
        loud = [r for r in caplog.records if r.levelno >= logging.WARNING]
        # Said at once, then reminded once an hour: 7 lines in 6 hours (it was 72, one
        # per run: 150-300 s apart, and the same failure was only quiet for 60 s).
        assert 1 <= len(loud) <= HOURS + 1, [r.getMessage() for r in loud]

        # Back online: the good run is news, and so is the next failure.
        link.healthy()
        caplog.clear()
        with caplog.at_level(logging.INFO, logger=LOGGER_NAME):
            assert up.run_once().uploaded == 1
            link.down()
            make_closed_file(tmp_path, seq=2)
            clock.advance(60)
            up.run_once()
        assert [r.levelno for r in caplog.records if r.levelno >= logging.WARNING] == [
            logging.WARNING
        ]
    finally:
        link.close()
