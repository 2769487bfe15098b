"""A parked car: `eccm run`'s CPU with the engine off and no GNSS fix, and how often it
talks to the adapter.

The ELM327 emulator runs its "engineoff" scenario (the adapter answers, the car does not:
0100 gets UNABLE TO CONNECT, then NO DATA) and the simulated receiver sends its sentences
without a fix, as in a garage. The daemon (a subprocess, default keys but those) runs for
a warm-up, then CPU (user + system, from /proc) and the emulator's request counters are
taken over MINUTES; the emulator and the receiver run in this process, so they are not
counted.

    .venv/bin/python bench/idle.py [--minutes 5] [--warm-up 30]
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from eccm.sim.car import emulated_car  # noqa: E402
from eccm.sim.gnss import NmeaPty, Route  # noqa: E402

CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime + stime


def counters(emu: object) -> dict[str, int]:
    raw = getattr(emu, "counters", {})
    return {str(k): v for k, v in raw.items() if isinstance(v, int) and not isinstance(v, bool)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=5.0, help="minutes measured")
    ap.add_argument("--warm-up", type=float, default=30.0, help="seconds left out first")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp, emulated_car("engineoff") as emu:
        port = os.path.realpath(emu.get_pty())
        gnss = NmeaPty(Route(), rate_hz=1.0)
        gnss.fix_available = False
        gnss.start()
        records = Path(tmp) / "records"
        cfg = Path(tmp) / "config.ini"
        cfg.write_text(
            "[DEFAULT]\n"
            "CAR_IDENTIFIER=bench\n"
            f"OBD_INTERFACE={port}\n"
            "GPS_POSITION_MONITORING=yes\n"
            f"GPS_INTERFACE={gnss.path}\n"
            f"RECORD_DIRECTORY_LOCATION={records}\n"
            "LOG_LEVEL=WARNING\n"
        )
        proc = subprocess.Popen([str(ROOT / ".venv/bin/eccm"), "run", "--config", str(cfg)])
        try:
            time.sleep(args.warm_up)
            cpu0, t0, c0 = cpu_seconds(proc.pid), time.monotonic(), counters(emu)
            time.sleep(args.minutes * 60)
            cpu1, t1, c1 = cpu_seconds(proc.pid), time.monotonic(), counters(emu)
        finally:
            proc.send_signal(signal.SIGTERM)
            code = proc.wait(timeout=30)
            gnss.stop()
        rows = sum(1 for _ in records.glob("*.tsv*"))
    wall = t1 - t0
    per_min = {k: (c1.get(k, 0) - c0.get(k, 0)) * 60 / wall for k in c1}
    asked = {k: v for k, v in sorted(per_min.items(), key=lambda kv: -kv[1]) if v > 0}
    print(
        f"parked car (emulator 'engineoff', GNSS without fix), {wall / 60:.1f} min measured "
        f"after {args.warm_up:g} s: CPU {cpu1 - cpu0:.2f} s = "
        f"{100 * (cpu1 - cpu0) / wall:.3f} % of one core; data files {rows}; exit {code}"
    )
    print("requests to the adapter per minute (emulator counters):")
    for name, rate in list(asked.items())[:12]:
        print(f"  {name:28} {rate:6.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
