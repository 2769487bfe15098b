"""A process that records rows with a real Recorder, for the crash tests.

Run as a script it writes ``--rows`` deterministic rows (0 = until killed), then stops the
recorder and prints its status as JSON. ``--die-at STEP`` makes it SIGKILL itself at that
step of the close sequence; ``--fsize N`` limits the size of any file it writes
(RLIMIT_FSIZE), which makes writes fail like a full disk. The tests import ``LAYOUT``,
``sample`` and ``expected_row`` to know what every row must be.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from pathlib import Path

from eccm.clock import Clock, FakeClock, SystemClock
from eccm.config import Config, parse
from eccm.sample import Layout, Reading, Sample, trip_id_for
from eccm.store.recorder import Recorder

T0 = 1_700_000_000.0
TRIP = trip_id_for(T0)
CAR = "crash-car"
LAYOUT = Layout(
    fast=("RPM", "SPEED"),
    slow=("FUEL_STATUS", "COOLANT_TEMP"),
    gps=False,
    info={
        "RPM": ("revolutions_per_minute", "Engine RPM"),
        "SPEED": ("kilometer_per_hour", "Vehicle Speed"),
        "FUEL_STATUS": ("", "Fuel System Status"),
        "COOLANT_TEMP": ("degree_Celsius", "Engine Coolant Temperature"),
    },
)


def sample(i: int) -> Sample:
    values = {
        "RPM": Reading(800.0 + i * 0.25, "revolutions_per_minute", 0.0),
        "SPEED": Reading(i % 120, "kilometer_per_hour", 0.0),
        "FUEL_STATUS": Reading(None if i % 3 else "Closed loop", None, 0.0),
        "COOLANT_TEMP": Reading(None if i % 5 == 4 else 80 + i % 10, "degree_Celsius", 0.0),
    }
    return Sample(
        time=T0 + i * 0.2,
        trip_id=TRIP,
        values=values,
        fix=None,
        layout=LAYOUT,
        time_source="system",
    )


def expected_row(i: int) -> list[str]:
    return LAYOUT.row(sample(i), CAR)


def config(directory: Path, **overrides: str) -> Config:
    raw = {
        "CAR_IDENTIFIER": CAR,
        "RECORD_DIRECTORY_LOCATION": str(directory),
        "FILE_ROTATION_SECONDS": "86400",
        "FILE_ROTATION_MAX_BYTES": str(1 << 40),
        "FILE_FLUSH_INTERVAL": "3600",
        "FILE_COMPRESSION": "gzip",
    }
    raw.update(overrides)
    return parse(raw)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("directory", type=Path)
    ap.add_argument("--rows", type=int, default=0)
    ap.add_argument("--ext", default=".tsv")
    ap.add_argument("--compression", default="gzip")
    ap.add_argument("--flush", default="3600")
    ap.add_argument("--die-at", default="")
    ap.add_argument("--fsize", type=int, default=0)
    args = ap.parse_args()
    cfg = config(
        args.directory,
        MONITORING_FILE_EXTENSION=args.ext,
        FILE_COMPRESSION=args.compression,
        FILE_FLUSH_INTERVAL=args.flush,
    )

    def hook(step: str) -> None:
        if step == args.die_at:
            os.kill(os.getpid(), signal.SIGKILL)

    # With a file size limit the clock is fake, so the retry backoff passes in rows, not
    # in seconds of wall time.
    clock: Clock = FakeClock() if args.fsize else SystemClock()
    rec = Recorder.from_config(
        cfg, clock, facts=lambda: {"vin": "VF1TEST0000000001"}, step_hook=hook
    )
    rec.start()
    if args.fsize:
        import resource

        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG instead of death
        resource.setrlimit(resource.RLIMIT_FSIZE, (args.fsize, args.fsize))
    i = 0
    while args.rows == 0 or i < args.rows:
        # Throttle, never drop: the crash tests check that every row is there. With the
        # fake clock, keep in step with the writer, or its retry time would never come.
        while rec.queued > (0 if args.fsize else 500):
            time.sleep(0.0005)
        rec.on_sample(sample(i))
        i += 1
        if isinstance(clock, FakeClock):
            clock.advance(0.05)
    rec.stop()
    status = {
        "rows_written": rec.rows_written,
        "rows_dropped": rec.rows_dropped,
        "files_closed": rec.files_closed,
        "last_error": rec.last_error,
    }
    sys.stdout.write(json.dumps(status) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
