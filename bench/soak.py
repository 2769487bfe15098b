"""Memory and file descriptors of `eccm run` at full rate over a long run.

The daemon (a subprocess) records the ELM327 emulator's car at SAMPLE_INTERVAL=0 with
every supported value logged, a simulated GNSS receiver, the control socket, the web page
and MQTT (a local mosquitto, when installed) on; the emulator and the receiver run in this
process. Every ``--every`` seconds the daemon and any process it started are sampled: RSS
(VmRSS, summed over them), peak RSS (VmHWM, summed: an upper bound of their peak
together), open fds and threads; STATUS over the control socket (a client stays
connected, as a dashboard would) gives the rows written, so a run that was not at full
rate shows. Printed: the table, the peak, and the growth of RSS and fds between minute
``--from`` (default 5) and the end.

With ``--s3`` uploads are on too: a local SeaweedFS (not counted: it is the server) gets
each file as it closes, once a minute.

With ``--old DIR`` (an older source tree, e.g. from `git archive`) runs of it alternate
with this tree's, ``--rounds`` times, so that both see the same machine load.

    .venv/bin/python bench/soak.py [--minutes 30] [--every 30] [--from 5] [--s3]
    .venv/bin/python bench/soak.py --minutes 5 --old /tmp/eccm-old --rounds 2
"""

from __future__ import annotations

import argparse
import contextlib
import getpass
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.control import SECRET, Conn, free_port, wait_for  # noqa: E402
from eccm.sim.car import emulated_car  # noqa: E402
from eccm.sim.gnss import NmeaPty, Route  # noqa: E402
from eccm.sim.s3 import LocalS3  # noqa: E402

PYTHON = str(ROOT / ".venv/bin/python")


@dataclass
class Sample:
    minute: float
    rss: float  # MB, summed over the processes
    peak: float  # MB, VmHWM summed
    fds: int
    threads: int
    processes: int
    rows: int  # STATUS rows_total
    dropped: int  # STATUS rows_dropped
    obd: str
    upload_queue: int  # STATUS upload_queue (files waiting; with --s3)


@dataclass
class Run:
    tree: str
    minutes: float
    exit_code: int | None = None
    numpy: bool = False  # numpy mapped into the daemon
    samples: list[Sample] = field(default_factory=list)


def status_kb(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return 0


def family(pid: int) -> list[int]:
    """The process and its descendants (from /proc/PID/task/TID/children)."""
    found, todo = [], [pid]
    while todo:
        p = todo.pop()
        found.append(p)
        for task in Path(f"/proc/{p}/task").glob("*"):
            try:
                todo.extend(int(c) for c in (task / "children").read_text().split())
            except OSError:
                continue
    return found


def measure(pid: int) -> tuple[float, float, int, int, int]:
    """(RSS MB, peak MB, fds, threads, processes) of the process and its descendants."""
    rss = peak = fds = threads = 0
    procs = family(pid)
    for p in procs:
        try:
            rss += status_kb(p, "VmRSS")
            peak += status_kb(p, "VmHWM")
            threads += status_kb(p, "Threads")
            fds += len(os.listdir(f"/proc/{p}/fd"))
        except OSError:  # a child that just ended
            continue
    return rss / 1024, peak / 1024, fds, threads, len(procs)


def maps_numpy(pid: int) -> bool:
    try:
        return "numpy" in Path(f"/proc/{pid}/maps").read_text()
    except OSError:
        return False


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


def config(tmp: Path, pty: str, gnss: str, socket_port: int, mqtt: str, s3: LocalS3 | None) -> Path:
    lines = [
        "[DEFAULT]",
        "CAR_IDENTIFIER=bench",
        f"OBD_INTERFACE={pty}",
        "GPS_POSITION_MONITORING=yes",
        f"GPS_INTERFACE={gnss}",
        f"RECORD_DIRECTORY_LOCATION={tmp / 'records'}",
        "SAMPLE_INTERVAL=0",
        "OBD_SLOW_COMMANDS=ALL",
        "FILE_ROTATION_SECONDS=60",
        "LOG_LEVEL=WARNING",
        "ENABLE_SOCKET_SERVER=yes",
        f"SOCKET_SERVER_PORT={socket_port}",
        f"SOCKET_SERVER_SECRET={SECRET}",
        "ENABLE_WEB_SERVER=yes",
        f"WEB_SERVER_PORT={free_port()}",
    ]
    if mqtt:
        lines.append(f"MQTT_BROKER={mqtt}")
    if s3 is not None:
        lines += [f"{k}={v}" for k, v in s3.config_values().items()]
    cfg = tmp / "config.ini"
    cfg.write_text("\n".join(lines) + "\n")
    return cfg


def one_run(name: str, tree: Path | None, minutes: float, every: float, s3: bool) -> Run:
    run = Run(name, minutes)
    with contextlib.ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        emu = stack.enter_context(emulated_car())
        server = stack.enter_context(LocalS3(tmp / "s3", bucket="soak")) if s3 else None
        broker, url = start_broker(tmp)
        gnss = NmeaPty(Route(), rate_hz=1.0)
        gnss.start()
        port = free_port()
        cfg = config(tmp, os.path.realpath(emu.get_pty()), gnss.path, port, url, server)
        env = dict(os.environ, PYTHONPATH=str(tree)) if tree else None
        proc = subprocess.Popen(
            [PYTHON, "-m", "eccm.cli", "run", "--config", str(cfg)], env=env, cwd=tree
        )
        t0 = time.monotonic()
        conn: Conn | None = None
        try:
            conn = wait_for("the control socket", lambda: Conn(port))
            while (now := time.monotonic() - t0) < minutes * 60:
                time.sleep(min(every, minutes * 60 - now) or 0.01)
                status = conn.ask("STATUS")
                rss, peak, fds, threads, procs = measure(proc.pid)
                run.samples.append(
                    Sample(
                        (time.monotonic() - t0) / 60,
                        rss,
                        peak,
                        fds,
                        threads,
                        procs,
                        int(status.get("rows_total") or 0),
                        int(status.get("rows_dropped") or 0),
                        str(status.get("obd")),
                        int(status.get("upload_queue") or 0),
                    )
                )
            run.numpy = maps_numpy(proc.pid)
        finally:
            if conn is not None:
                conn.close()
            proc.send_signal(signal.SIGTERM)
            run.exit_code = proc.wait(timeout=60)
            gnss.stop()
            if broker is not None:
                broker.terminate()
                broker.wait(10)
    mqtt = ", MQTT" if url else ", no MQTT (mosquitto not installed)"
    run.tree = f"{name}{mqtt}{', S3 uploads' if s3 else ''}"
    return run


def report(run: Run, since: float) -> tuple[float, float, float]:
    """Print the run's table and figures; (peak, growth from ``since``, rows/s)."""
    s = run.samples
    print(
        f"\n{run.tree}: eccm run at SAMPLE_INTERVAL=0, socket and web on, {run.minutes:g} min, "
        f"exit {run.exit_code}, numpy loaded: {'yes' if run.numpy else 'no'}"
    )
    print(
        f"{'minute':>7} {'RSS MB':>8} {'peak MB':>8} {'fds':>5} {'thr':>4} {'rows/s':>7} "
        f"{'to upload':>9}  obd"
    )
    prev_rows, prev_t = 0, 0.0
    for x in s:
        rate = (x.rows - prev_rows) / max(1e-9, (x.minute - prev_t) * 60)
        prev_rows, prev_t = x.rows, x.minute
        print(
            f"{x.minute:7.1f} {x.rss:8.1f} {x.peak:8.1f} {x.fds:5d} {x.threads:4d} "
            f"{rate:7.0f} {x.upload_queue:9d}  {x.obd}{'' if x.processes == 1 else f' ({x.processes} processes)'}"
        )
    window = [x for x in s if x.minute >= since] or s[-1:]
    base, last = window[0], s[-1]
    rows_s = (last.rows - base.rows) / max(1e-9, (last.minute - base.minute) * 60)
    growth = last.rss - base.rss
    print(
        f"peak RSS {max(x.peak for x in s):.1f} MB; from minute {base.minute:.1f} to "
        f"{last.minute:.1f}: RSS {growth:+.1f} MB (lowest {min(x.rss for x in window):.1f}, "
        f"highest {max(x.rss for x in window):.1f}), fds {last.fds - base.fds:+d}, "
        f"{rows_s:.0f} rows/s, rows dropped {last.dropped}, "
        f"samples not connected {sum(x.obd != 'connected' for x in window)}"
    )
    return max(x.peak for x in s), growth, rows_s


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=30.0)
    ap.add_argument("--every", type=float, default=30.0, help="seconds between samples")
    ap.add_argument("--from", dest="since", type=float, default=5.0, help="minute of the base")
    ap.add_argument("--old", type=Path, help="an older source tree to alternate with")
    ap.add_argument("--rounds", type=int, default=1, help="runs of each tree (with --old)")
    ap.add_argument("--s3", action="store_true", help="uploads to a local SeaweedFS too")
    args = ap.parse_args()
    trees: dict[str, Path | None] = {"this tree": None}
    if args.old:
        trees["old tree"] = args.old.resolve()
    results: list[tuple[str, float, float, float]] = []
    for _ in range(args.rounds if args.old else 1):
        for name, tree in trees.items():
            run = one_run(name, tree, args.minutes, args.every, args.s3)
            results.append((name, *report(run, args.since)))
            sys.stdout.flush()
    if args.old:
        print(f"\n{'tree':10} {'peak MB':>8} {'growth MB':>10} {'rows/s':>7}   (alternated)")
        for name, peak, growth, rate in results:
            print(f"{name:10} {peak:8.1f} {growth:+10.1f} {rate:7.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
