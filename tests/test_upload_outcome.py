"""The run's report, which failures end a run, and how loudly the outcome is logged.

Pure: a fake clock, no thread, no server.
"""

from __future__ import annotations

import logging

import pytest

from eccm.clock import FakeClock
from eccm.store.budget import MIB
from eccm.upload.outcome import QUIET_REPEAT, OutcomeLog, UploadReport, aborts_run, human
from eccm.upload.s3client import Failure
from eccm.upload.schedule import FAILURE_BACKOFF_CAP


def test_a_verified_file_counts_what_was_sent_and_a_found_one_counts_as_already_there() -> None:
    report = UploadReport()
    report.verified([1000, 200])  # data object and sidecar sent now
    report.verified([])  # both already in the bucket (a retry after a crash)
    report.verified([200])  # data found there, sidecar sent now
    assert (report.uploaded, report.already_present, report.bytes_sent) == (3, 1, 1400)


def test_a_report_is_ok_only_with_no_error_nothing_kept_and_nothing_waiting() -> None:
    assert UploadReport().ok
    assert not UploadReport(error="offline").ok
    assert not UploadReport(kept=["a: kept"]).ok
    assert not UploadReport(remaining=1).ok


def test_the_problem_is_the_error_else_the_kept_files_in_one_sentence() -> None:
    assert UploadReport().problem() is None
    assert UploadReport(kept=["a: bad"]).problem() == "1 file(s) not uploaded: a: bad"
    three = UploadReport(kept=["a: bad", "b: bad", "c: bad"])
    assert three.problem() == "3 file(s) not uploaded: a: bad (and 2 more)"
    assert UploadReport(error="offline", kept=["a: bad"]).problem() == "offline"


@pytest.mark.parametrize(
    ("kind", "transient", "ends_the_run"),
    [
        ("offline", True, True),  # the next file would meet it too
        ("timeout", True, True),
        ("credentials", False, True),
        ("access", False, True),
        ("clock", False, True),
        ("other", True, True),  # an unknown transient error: retried at the next run
        ("other", False, False),  # an answer about this file only (too large, say)
    ],
)
def test_the_network_and_the_configuration_end_a_run_a_refused_file_does_not(
    kind: str, transient: bool, ends_the_run: bool
) -> None:
    assert aborts_run(Failure(kind, transient, "m")) is ends_the_run


def test_a_failure_is_logged_once_then_quietly_while_it_repeats() -> None:
    clock = FakeClock()
    outcome = OutcomeLog()

    def level(message: str | None, transient: bool = True) -> int | None:
        line = outcome.entry(message, transient=transient, now=clock.monotonic())
        return None if line is None else line[0]

    assert level("offline") == logging.WARNING
    clock.advance(QUIET_REPEAT / 2)
    assert level("offline") == logging.DEBUG
    # The quiet time runs from the loud line, not from the last repeat.
    clock.advance(QUIET_REPEAT / 2)
    assert level("offline") == logging.WARNING
    # Another problem is news at once; a lasting one needs a person: ERROR.
    assert level("bucket missing", transient=False) == logging.ERROR
    assert level("offline") == logging.WARNING


def test_a_failure_retried_at_the_longest_backoff_is_not_logged_at_every_retry() -> None:
    # Regression: the quiet time was one minute, shorter than the backoff (up to 5 min):
    # a car offline overnight logged the same WARNING every few minutes.
    clock = FakeClock()
    outcome = OutcomeLog()
    lines = []
    for _ in range(12 * 3):  # three hours of retries every 5 minutes
        line = outcome.entry("offline", transient=True, now=clock.monotonic())
        assert line is not None
        if line[0] > logging.DEBUG:
            lines.append(line[1])
        clock.advance(FAILURE_BACKOFF_CAP)
    assert lines[0] == "offline"
    # One reminder an hour, which says how long it has lasted.
    assert len(lines) == 3
    assert lines[1] == (
        "offline (still failing: 13 failed run(s) in 60 min; next reminder in 60 min)"
    )


def test_a_good_run_after_failures_says_so_once_and_the_next_failure_is_news() -> None:
    clock = FakeClock()
    outcome = OutcomeLog()
    assert outcome.entry("offline", transient=True, now=clock.monotonic()) == (
        logging.WARNING,
        "offline",
    )
    clock.advance(300)
    assert outcome.entry("offline", transient=True, now=clock.monotonic()) == (
        logging.DEBUG,
        "offline",
    )
    clock.advance(300)
    assert outcome.entry(None, transient=False, now=clock.monotonic()) == (
        logging.INFO,
        "uploads work again after 2 failed run(s) in 10 min",
    )
    assert outcome.entry(None, transient=False, now=clock.monotonic()) is None
    clock.advance(1)
    line = outcome.entry("offline", transient=True, now=clock.monotonic())
    assert line == (logging.WARNING, "offline")


def test_a_caller_that_prints_the_outcome_gets_the_log_copy_at_debug() -> None:
    outcome = OutcomeLog(loud=False)
    for now in (0.0, 1000.0):
        line = outcome.entry("bucket missing", transient=False, now=now)
        assert line is not None and line[0] == logging.DEBUG
    line = outcome.entry(None, transient=False, now=2000.0)
    assert line is not None and line[0] == logging.DEBUG


def test_sizes_read_as_kilobytes_or_megabytes() -> None:
    assert human(1536) == "2 kB"
    assert human(3 * MIB) == "3.0 MB"
