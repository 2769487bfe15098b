"""CPU and memory of `eccm run` while it records the emulator's car.

Runs the daemon as a subprocess for DURATION seconds at SAMPLE_INTERVAL=0.2 with every
supported value of the ELM327 emulator's car logged (OBD_SLOW_COMMANDS=ALL) and a simulated
GNSS receiver, then prints CPU seconds (user + system, from /proc), CPU as % of one core and
peak RSS (VmHWM). The emulator and the receiver run in this process, so they are not counted.

    .venv/bin/python bench/record.py [--duration 60] [--sample-interval 0.2]
"""

from __future__ import annotations

import argparse
import json
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


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--duration", type=float, default=60.0)
    ap.add_argument("--sample-interval", type=float, default=0.2)
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp, emulated_car() as emu:
        port = emu.get_pty()
        records = Path(tmp) / "records"
        gnss = NmeaPty(Route(), rate_hz=1.0)
        gnss.start()
        cfg = Path(tmp) / "config.ini"
        cfg.write_text(
            "[DEFAULT]\n"
            "CAR_IDENTIFIER=bench\n"
            f"OBD_INTERFACE={port}\n"
            "GPS_POSITION_MONITORING=yes\n"
            f"GPS_INTERFACE={gnss.path}\n"
            f"RECORD_DIRECTORY_LOCATION={records}\n"
            f"SAMPLE_INTERVAL={args.sample_interval}\n"
            "OBD_SLOW_COMMANDS=ALL\n"
            "LOG_LEVEL=WARNING\n"
        )
        proc = subprocess.Popen([str(ROOT / ".venv/bin/eccm"), "run", "--config", str(cfg)])
        try:
            # Measure steady state: start counting once the first row is on disk.
            deadline = time.monotonic() + 60
            while not any(records.glob("*.part")) and time.monotonic() < deadline:
                time.sleep(0.2)
            cpu0, t0 = cpu_seconds(proc.pid), time.monotonic()
            time.sleep(args.duration)
            cpu1, t1 = cpu_seconds(proc.pid), time.monotonic()
            rss = peak_rss_mb(proc.pid)
        finally:
            proc.send_signal(signal.SIGTERM)
            code = proc.wait(timeout=30)
            gnss.stop()
        rows = 0
        for f in records.glob("*.json"):
            rows += json.loads(f.read_text())["rows"]
        cpu = cpu1 - cpu0
        wall = t1 - t0
        print(
            json.dumps(
                {
                    "duration_s": round(wall, 1),
                    "sample_interval": args.sample_interval,
                    "rows": rows,
                    "cpu_s": round(cpu, 2),
                    "cpu_pct_of_one_core": round(100 * cpu / wall, 2),
                    "peak_rss_mb": round(rss, 1),
                    "exit_code": code,
                }
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
