"""`eccm` as a user's terminal runs it, Ctrl-C included.

A test runner started in the background by a script (``cmd &`` without job control, as CI
may start it) runs with SIGINT ignored, and every child inherits that; Python then leaves
SIGINT ignored instead of turning it into KeyboardInterrupt, so a test that presses Ctrl-C
on an ``eccm`` command waits forever. ``ECCM`` gives the command the terminal's Ctrl-C back
first (the daemon and the demo install handlers of their own and need none of this).
"""

from __future__ import annotations

import sys

ECCM_CODE = (
    "import signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
    "from eccm.cli import main; sys.exit(main())"
)
ECCM = [sys.executable, "-c", ECCM_CODE]  # + the command's words, as after `eccm`
