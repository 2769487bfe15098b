"""The web page's live delay and the daemon's CPU cost of two open dashboards.

The real daemon (`eccm run`, a subprocess) records the ELM327 emulator's car (a second
subprocess) at SAMPLE_INTERVAL=0.2 (5 rows a second) with its web page on; this process
drives Debian's chromium (headless, through chromium-driver) and measures, in one run:

- **CPU**: the daemon's user+system time (/proc/<pid>/stat) over ``--seconds`` with no
  browser, then over ``--seconds`` with two browsers logged in on the Live page; the
  difference is what the page costs, in % of one core.
- **Delay**: from a value leaving the OBD link to its display in the browser. The LIVE
  message carries each value's age (``age_ms``) at the message's ``time``, so the reading's
  publication time is ``time - age_ms`` on the daemon's clock; the page records, for each
  new reading it draws, the wall clock after the frame that shows it (``window.eccmLive``,
  requestAnimationFrame). Browser and daemon run on this one machine, so one clock.
  The delay includes the WATCH interval's wait (a value waits up to 0.2 s for its message).

    .venv/bin/python bench/web.py [--seconds 30]
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.control import free_port, wait_for  # noqa: E402
from tests.browser_helpers import browser_missing, chromium, login  # noqa: E402

SECRET = "bench-secret-bench-secret-bench-secret-0123"
FAST = ("RPM", "SPEED", "ENGINE_LOAD", "THROTTLE_POS")

_EMULATOR = """
import threading
from eccm.sim.car import emulated_car
with emulated_car() as emu:
    print(emu.get_pty(), flush=True)
    threading.Event().wait()
"""


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process ``pid`` (all its threads)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15)
    return ticks / os.sysconf("SC_CLK_TCK")


def cpu_share(pid: int, seconds: float) -> float:
    """The share of one core process ``pid`` used over the next ``seconds``, in %."""
    c0, t0 = cpu_seconds(pid), time.monotonic()
    time.sleep(seconds)
    return 100.0 * (cpu_seconds(pid) - c0) / (time.monotonic() - t0)


@contextmanager
def daemon() -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    """The emulator and `eccm run` with its web page; yields the daemon and its URL."""
    with tempfile.TemporaryDirectory() as tmp:
        emu = subprocess.Popen(
            [sys.executable, "-c", _EMULATOR], stdout=subprocess.PIPE, text=True, cwd=tmp
        )
        proc: subprocess.Popen[bytes] | None = None
        try:
            assert emu.stdout is not None
            pty = emu.stdout.readline().strip()
            port = free_port()
            cfg = Path(tmp) / "config.ini"
            cfg.write_text(
                "[DEFAULT]\n"
                "CAR_IDENTIFIER=bench\n"
                f"OBD_INTERFACE={pty}\n"
                f"RECORD_DIRECTORY_LOCATION={tmp}/records\n"
                f"OBD_FAST_COMMANDS={','.join(FAST)}\n"
                "OBD_SLOW_COMMANDS=COOLANT_TEMP\n"
                "SAMPLE_INTERVAL=0.2\n"
                f"SOCKET_SERVER_SECRET={SECRET}\n"
                "ENABLE_WEB_SERVER=yes\n"
                f"WEB_SERVER_PORT={port}\n"
                "LOG_LEVEL=WARNING\n"
            )
            proc = subprocess.Popen([str(ROOT / ".venv/bin/eccm"), "run", "--config", str(cfg)])
            url = f"http://127.0.0.1:{port}"

            def up() -> bool:
                with urllib.request.urlopen(url + "/", timeout=5) as r:
                    return bool(r.status == 200)

            wait_for("the web page", up)
            yield proc, url
        finally:
            if proc is not None:
                proc.send_signal(signal.SIGTERM)
                proc.wait(timeout=30)
            emu.kill()
            emu.wait()


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=30.0, help="length of each CPU window")
    args = parser.parse_args()
    missing = browser_missing()
    if missing:
        raise SystemExit(f"bench: {missing}")
    with daemon() as (proc, url):
        time.sleep(5)  # the link settles (first rows, supported values)
        idle = cpu_share(proc.pid, args.seconds)
        with ExitStack() as stack:
            browsers: list[Any] = [stack.enter_context(chromium()) for _ in range(2)]
            for b in browsers:
                login(b, url, SECRET)
            wait_for("live updates", lambda: all(_shown(b) > 25 for b in browsers))
            for b in browsers:
                b.execute_script("window.eccmLive.delays.length = 0")
            watched = cpu_share(proc.pid, args.seconds)
            delays = [
                d[1]
                for b in browsers
                for d in b.execute_script("return window.eccmLive.delays")
                if d[0] in FAST
            ]
            rates = [b.execute_script("return window.eccmLive.shown") for b in browsers]
    rpm = len(delays)
    print(f"web bench: daemon at 5 rows/s, {args.seconds:g} s per CPU window, 2 browsers")
    print(f"  daemon CPU, no browser:    {idle:5.1f} % of one core")
    print(f"  daemon CPU, two browsers:  {watched:5.1f} % of one core")
    print(f"  added by the page:         {watched - idle:5.1f} % of one core")
    print(
        f"  link -> display delay ({rpm} readings of {', '.join(FAST)}): "
        f"p50 {statistics.median(delays):.0f} ms, p99 {percentile(delays, 99):.0f} ms, "
        f"max {max(delays):.0f} ms"
    )
    print(f"  readings drawn per browser: {rates}")
    return 0


def _shown(browser: Any) -> int:
    return int(browser.execute_script("return window.eccmLive ? window.eccmLive.shown : 0"))


if __name__ == "__main__":
    raise SystemExit(main())
