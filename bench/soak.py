"""Memory and file descriptors of `eccm run` at full rate over a long run.

The daemon (a subprocess) records the ELM327 emulator's car at SAMPLE_INTERVAL=0 with
every supported value logged, a simulated GNSS receiver, the control socket, the web page
and MQTT (a local mosquitto, when installed) on. Every ``--every`` seconds RSS (VmRSS),
peak RSS (VmHWM) and open fds (/proc/PID/fd) are sampled; the growth between minute
``--from`` (default 5) and the end is printed.

    .venv/bin/python bench/soak.py [--minutes 30] [--every 30] [--from 5]
"""

from __future__ import annotations

import argparse
import getpass
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from eccm.sim.car import emulated_car  # noqa: E402
from eccm.sim.gnss import NmeaPty, Route  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def status_mb(pid: int, key: str) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def start_broker(tmp: Path) -> tuple[subprocess.Popen[bytes] | None, str]:
    binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    if not Path(binary).exists():
        return None, ""
    port = free_port()
    conf = tmp / "mosquitto.conf"
    conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\nuser {getpass.getuser()}\n")
    proc = subprocess.Popen([binary, "-c", str(conf)], stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return proc, f"mqtt://127.0.0.1:{port}"
        time.sleep(0.1)
    proc.kill()
    return None, ""


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=30.0)
    ap.add_argument("--every", type=float, default=30.0, help="seconds between samples")
    ap.add_argument("--from", dest="since", type=float, default=5.0, help="minute of the base")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmpdir, emulated_car() as emu:
        tmp = Path(tmpdir)
        broker, url = start_broker(tmp)
        gnss = NmeaPty(Route(), rate_hz=1.0)
        gnss.start()
        cfg = tmp / "config.ini"
        lines = [
            "[DEFAULT]",
            "CAR_IDENTIFIER=bench",
            f"OBD_INTERFACE={os.path.realpath(emu.get_pty())}",
            "GPS_POSITION_MONITORING=yes",
            f"GPS_INTERFACE={gnss.path}",
            f"RECORD_DIRECTORY_LOCATION={tmp / 'records'}",
            "SAMPLE_INTERVAL=0",
            "OBD_SLOW_COMMANDS=ALL",
            "FILE_ROTATION_SECONDS=60",
            "LOG_LEVEL=WARNING",
            "ENABLE_SOCKET_SERVER=yes",
            f"SOCKET_SERVER_PORT={free_port()}",
            "SOCKET_SERVER_SECRET=bench-secret-bench-secret-0123456789",
            "ENABLE_WEB_SERVER=yes",
            f"WEB_SERVER_PORT={free_port()}",
        ]
        if url:
            lines.append(f"MQTT_BROKER={url}")
        cfg.write_text("\n".join(lines) + "\n")
        proc = subprocess.Popen([str(ROOT / ".venv/bin/eccm"), "run", "--config", str(cfg)])
        samples: list[tuple[float, float, float, int]] = []  # minute, RSS, peak, fds
        t0 = time.monotonic()
        try:
            while (now := time.monotonic() - t0) < args.minutes * 60:
                time.sleep(min(args.every, args.minutes * 60 - now) or 0.01)
                pid = proc.pid
                samples.append(
                    (
                        (time.monotonic() - t0) / 60,
                        status_mb(pid, "VmRSS"),
                        status_mb(pid, "VmHWM"),
                        fds(pid),
                    )
                )
        finally:
            proc.send_signal(signal.SIGTERM)
            code = proc.wait(timeout=30)
            gnss.stop()
            if broker is not None:
                broker.terminate()
                broker.wait(10)
    print(
        f"eccm run at SAMPLE_INTERVAL=0, socket, web{', MQTT' if url else ''} on: "
        f"{args.minutes:g} min, exit {code}"
    )
    print(f"{'minute':>7} {'RSS MB':>8} {'peak MB':>8} {'fds':>5}")
    for minute, rss, peak, n in samples:
        print(f"{minute:7.1f} {rss:8.1f} {peak:8.1f} {n:5d}")
    base = [s for s in samples if s[0] >= args.since] or samples[:1]
    first, last = base[0], samples[-1]
    print(
        f"peak RSS {max(s[2] for s in samples):.1f} MB; from minute {first[0]:.1f} to "
        f"{last[0]:.1f}: RSS {last[1] - first[1]:+.1f} MB, fds {last[3] - first[3]:+d}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
