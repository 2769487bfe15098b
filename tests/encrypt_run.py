"""Run one sealing pass of crypto/encrypt.py over a folder and SIGKILL this process at a
chosen step (the crash tests of tests/test_encryption.py run it as a subprocess).

    python tests/encrypt_run.py FOLDER RECIPIENT --die-at STEP
"""

from __future__ import annotations

import argparse
import os
import signal
from pathlib import Path

from eccm.crypto.encrypt import Encryptor


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("folder")
    p.add_argument("recipient")
    p.add_argument("--die-at", required=True)
    args = p.parse_args()

    def hook(step: str) -> None:
        if step == args.die_at:
            os.kill(os.getpid(), signal.SIGKILL)

    Encryptor(Path(args.folder), [args.recipient], hook).seal_all()
    raise SystemExit(3)  # the step never came


if __name__ == "__main__":
    main()
