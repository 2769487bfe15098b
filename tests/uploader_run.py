"""A process that runs one upload with a real Uploader, for the crash tests.

Run as a script with a configuration (JSON object of config.ini keys) it uploads every
closed file once and exits 0 when nothing is left, 1 otherwise. ``--die-at STEP`` (one of
``eccm.upload.steps.STEPS``) gives the Uploader a step hook that SIGKILLs this process the
first time any upload gets to that step, as a power cut would: no cleanup of any kind.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys

from eccm.clock import SystemClock
from eccm.config import parse
from eccm.upload.settings import UploadSettings
from eccm.upload.steps import STEPS
from eccm.upload.uploader import Uploader


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("config", help="JSON object of config.ini keys")
    ap.add_argument("--die-at", default="", choices=("", *STEPS))
    args = ap.parse_args()

    def hook(step: str) -> None:
        if step == args.die_at:
            os.kill(os.getpid(), signal.SIGKILL)

    settings = UploadSettings.from_config(parse(json.loads(args.config)))
    report = Uploader(settings, SystemClock(), step_hook=hook).run_once()
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
