"""When the uploader runs next: a pure value on the injected clock's monotonic time.

The uploader thread only asks ``wait(now)`` and sleeps on its wake event for that long; every
decision (run at start, every S3_SYNC_INTERVAL plus 0..S3_SYNC_JITTER after a good run,
capped exponential backoff after failures, a wake-up when a file closes) is made here, so
it is tested on a fake clock without a thread. Monotonic time only: the wall clock of a Pi
steps (NTP, GNSS) and must neither postpone nor hurry an upload.

Immutable like urllib3's ``Retry``: each event returns a new schedule, and the uploader
swaps its reference under a lock.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from eccm.backoff import Backoff

FAILURE_BACKOFF_CAP = 300.0  # seconds: retries after a failure never wait longer


def failure_backoff(interval: float) -> Backoff:
    return Backoff(base=min(interval, FAILURE_BACKOFF_CAP), factor=2.0, cap=FAILURE_BACKOFF_CAP)


def next_delay(interval: float, jitter: float, backoff: Backoff, draw: float) -> float:
    """Seconds until the next run; ``draw`` in [0, 1).

    After a success: S3_SYNC_INTERVAL plus 0..S3_SYNC_JITTER. After failures: the backoff
    (up to 5 minutes), spread over its upper half; Backoff's own jitter is clamped by its
    cap, which would put a fleet retrying at the cap back in lockstep.
    """
    if backoff.attempt == 0:
        return interval + jitter * draw
    return backoff.delay() * (0.5 + 0.5 * draw)


@dataclass(frozen=True)
class UploadSchedule:
    """The next run's monotonic due time and the failures that led to it.

    ``due`` starts at the monotonic time of ``starting``: the thread uploads at once.
    """

    interval: float  # S3_SYNC_INTERVAL
    jitter: float  # S3_SYNC_JITTER
    due: float = 0.0
    backoff: Backoff = field(default_factory=Backoff)

    @classmethod
    def starting(cls, interval: float, jitter: float, now: float) -> UploadSchedule:
        return cls(interval, jitter, due=now, backoff=failure_backoff(interval))

    @property
    def consecutive_failures(self) -> int:
        """Failed runs since the last good one (0 when the last run went through)."""
        return self.backoff.attempt

    def wait(self, now: float) -> float:
        """Seconds from ``now`` until the next run (0 when it is due)."""
        return max(0.0, self.due - now)

    def is_due(self, now: float) -> bool:
        return now >= self.due

    def recorded(self, *, failed: bool) -> UploadSchedule:
        """A run ended (the thread's or ``run_once``'s): its result feeds the backoff."""
        return replace(self, backoff=self.backoff.failed() if failed else self.backoff.succeeded())

    def planned(self, now: float, draw: float) -> UploadSchedule:
        """The thread's run ended at ``now`` (its result already ``recorded``): the next one
        after the interval, or the backoff; ``draw`` in [0, 1) spreads a fleet."""
        delay = next_delay(self.interval, self.jitter, self.backoff, draw)
        return replace(self, due=now + delay)

    def woken(self, now: float) -> UploadSchedule:
        """A file closed, or somebody asked for an upload: run now."""
        return replace(self, due=min(self.due, now))

    def crashed(self, now: float) -> UploadSchedule:
        """The run itself failed unexpectedly (a bug): try again after the longest wait,
        so that a bug does not spin."""
        return replace(self, due=now + FAILURE_BACKOFF_CAP)
