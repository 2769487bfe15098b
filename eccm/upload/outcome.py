"""What a run did, what it means for the run and the user, and how loudly to say it.

Pure: no I/O, no thread; the time is the injected clock's monotonic time, passed in.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from eccm.store.budget import MIB, DiskReport
from eccm.upload.s3client import Failure

# Every line the upload logs carries this logger name, whichever module of the package
# writes it: users filter and grep their logs by it.
LOGGER_NAME = "eccm.upload.uploader"

# The same failure again within this many seconds is logged at DEBUG: a car offline for a
# day retries every few minutes (the backoff reaches 5 minutes) and must not fill its log
# with one sentence; once an hour a reminder says it goes on. A shorter window (it was a
# minute) is shorter than the backoff itself, and every retry was logged again.
QUIET_REPEAT = 3600.0


class FileKept(Exception):
    """A problem of one file: it stays local, the run goes on with the others."""


@dataclass
class UploadReport:
    uploaded: int = 0  # files now verified in the bucket (sent now, or found there)
    already_present: int = 0  # of which the bucket already held (a retry after a crash)
    bytes_sent: int = 0
    kept: list[str] = field(default_factory=list)  # files kept for a reason of their own
    remaining: int = 0  # closed files still waiting after the run
    error: str | None = None  # why the run stopped, as logged
    interrupted: bool = False  # out of time (the bounded last attempt at stop)
    disk: DiskReport | None = None
    # The cars of the files verified: each file goes under the car= of its own name, which
    # is another car than CAR_IDENTIFIER's for files written before it was changed.
    cars: set[str] = field(default_factory=set)

    @property
    def ok(self) -> bool:
        return self.error is None and not self.kept and self.remaining == 0

    def verified(self, sent: Sequence[int]) -> None:
        """One file is verified in the bucket; ``sent``: the sizes of its objects that this
        run sent (none: the bucket held them all, a retry after a crash)."""
        self.uploaded += 1
        self.bytes_sent += sum(sent)
        if not sent:
            self.already_present += 1

    def problem(self) -> str | None:
        """The one sentence for the log and STATUS: why the run stopped, or what it kept."""
        if self.error is not None:
            return self.error
        if not self.kept:
            return None
        more = f" (and {len(self.kept) - 1} more)" if len(self.kept) > 1 else ""
        return f"{len(self.kept)} file(s) not uploaded: {self.kept[0]}{more}"


def aborts_run(failure: Failure) -> bool:
    """Does a file's failure end the run? The network's and the configuration's do (the
    next file would meet them too); a plain refusal of this file (e.g. too large for the
    server) keeps this file only."""
    return failure.kind != "other" or failure.transient


# Times in a message (a wrong clock's failure names the device's and the server's) move
# on between two runs: the same problem all the same.
_TIMES = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?Z")
_TRANSIENT = "\0transient"  # the key of every transient failure (no message is this)


@dataclass
class OutcomeLog:
    """How loudly each run's problem is logged: once, then quiet while it repeats, with a
    reminder every ``quiet_repeat`` seconds, and one line when uploads work again.

    ``loud=False``: the caller reports the outcome itself (`eccm upload` prints it), so the
    log's copy goes to DEBUG instead of interleaving with the progress bar.
    """

    loud: bool = True
    quiet_repeat: float = QUIET_REPEAT
    _last: tuple[str, float] | None = None
    # The failing streak: monotonic time of its first failed run, and its failed runs.
    _since: float | None = None
    _failed_runs: int = 0

    def entry(self, message: str | None, *, transient: bool, now: float) -> tuple[int, str] | None:
        """The level and text of the log line for a run that ended at monotonic ``now``
        with ``message`` (None: a good run); None: nothing to log."""
        if message is None:
            since, runs = self._since, self._failed_runs
            self._last, self._since, self._failed_runs = None, None, 0
            if since is None:
                return None
            text = f"uploads work again after {runs} failed run(s) in {_duration(now - since)}"
            return (logging.INFO if self.loud else logging.DEBUG), text
        if self._since is None:
            self._since = now
        self._failed_runs += 1
        if not self.loud:
            return logging.DEBUG, message
        level = logging.WARNING if transient else logging.ERROR
        last = self._last
        # The network's failures are one problem however they are worded: a link that is
        # down answers "connection reset" at one retry and "did not answer within 10 s" or
        # "dropped before the answer" at the next (a 503 now and then is the same).
        same = _TRANSIENT if transient else _TIMES.sub("", message)
        if last is not None and last[0] == same:
            if now - last[1] < self.quiet_repeat:
                return logging.DEBUG, message
            self._last = (same, now)
            return level, (
                f"{message} (still failing: {self._failed_runs} failed run(s) in "
                f"{_duration(now - self._since)}; next reminder in {_duration(self.quiet_repeat)})"
            )
        self._last = (same, now)
        return level, message


def _duration(seconds: float) -> str:
    seconds = max(0, round(seconds))
    if seconds < 120:
        return f"{seconds} s"
    if seconds < 7200:
        return f"{seconds // 60} min"
    return f"{seconds / 3600:.1f} h"


def human(size: int) -> str:
    return f"{size / MIB:.1f} MB" if size >= MIB else f"{size / 1024:.0f} kB"
