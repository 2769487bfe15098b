"""How often RPM is fresh: ECCM's OBD link against plain python-OBD, on the ELM327 emulator.

Every supported mode 01 value of the emulator's car is logged (OBD_SLOW_COMMANDS=ALL, the
default OBD_FAST_COMMANDS), the ECU answers after ``--delay`` seconds (emu.delay) and rows
are written as fast as the car answers (SAMPLE_INTERVAL=0). In one run, against the same
emulated car:

  (a) a plain python-OBD loop that queries every value in turn;
  (b) python-OBD's Async watching every value (the original ECCM's way; library defaults);
  (c) `eccm` (the real daemon, recorder included): RPM freshness counted in the written
      file, with the emulator as it is;
  (d) the same, with the emulator answering a multi-PID request after one delay;
  (e) as (c), the emulator as it is, with only RPM in the fast tier
      (OBD_FAST_COMMANDS=RPM) and the other values every 5 s (OBD_SLOW_INTERVAL=5).

Why (d): the emulator answers a multi-PID request by answering each PID inside it in
turn, and sleeps emu.delay for each, so a request for six PIDs takes seven delays. A real
ECU answers the whole request after one response time (P2), the extra ISO-TP frames
taking a fraction of a millisecond each on a 500 kbit/s bus. (d) removes the emulator's
inner sleeps and nothing else; (a) and (b) send one PID per request and are the same
either way.

The emulator runs in a child process, so the CPU time measured is ECCM's alone. With
``--cpu-delay`` (default 0) ECCM runs once more against an ECU that answers at once, and
the CPU time per row is printed.

    .venv/bin/python bench/obd_rate.py [--duration 10] [--delay 0.02]
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import logging
import math
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import obd  # noqa: E402

from eccm.app import Daemon  # noqa: E402
from eccm.config import parse  # noqa: E402
from eccm.obd.multipid import MAX_PIDS  # noqa: E402
from eccm.obd.values import is_mode01_value  # noqa: E402

WARM_UP = 2.0  # seconds of rows left out at the start of each run
# python-OBD's close() resets the adapter (ATZ) and goes: the adapter's answer to the reset
# comes a moment later and would confuse the next connection's first command.
SETTLE = 1.5


# -- the emulator, in a child process --------------------------------------------------
def serve_emulator(delay: float, one_delay_per_request: bool) -> None:
    """Child process: run the emulator, print its pty, print its counters at EOF on stdin."""
    from eccm.sim.car import emulated_car

    with emulated_car("car", delay=delay) as emu:
        if one_delay_per_request:
            inner = emu.multi_pid_answer

            def multi_pid_answer(cmd: str, header: str) -> Any:
                # The outer request already slept emu.delay once: the PIDs inside do not.
                saved, emu.delay = emu.delay, 0
                try:
                    return inner(cmd, header)
                finally:
                    emu.delay = saved

            emu.multi_pid_answer = multi_pid_answer
        print(os.path.realpath(emu.get_pty()), flush=True)
        for line in sys.stdin:
            if line.strip() == "counters":
                counters = {k: v for k, v in emu.counters.items() if isinstance(v, int)}
                print(json.dumps(counters), flush=True)


class Emulator:
    def __init__(self, delay: float, one_delay_per_request: bool = False) -> None:
        args = [sys.executable, __file__, "--serve-emulator", str(delay)]
        if one_delay_per_request:
            args.append("--one-delay-per-request")
        self.proc = subprocess.Popen(
            args,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            cwd=tempfile.gettempdir(),
        )
        assert self.proc.stdout is not None and self.proc.stdin is not None
        self.port = self.proc.stdout.readline().strip()
        if not self.port:
            raise RuntimeError("the emulator did not start")

    def counters(self) -> dict[str, int]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write("counters\n")
        self.proc.stdin.flush()
        result: dict[str, int] = json.loads(self.proc.stdout.readline())
        return result

    def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


@contextlib.contextmanager
def emulator(delay: float, one_delay_per_request: bool = False) -> Iterator[Emulator]:
    emu = Emulator(delay, one_delay_per_request)
    try:
        yield emu
    finally:
        emu.close()


def cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


# -- (a) and (b): python-OBD alone ------------------------------------------------------
def logged_values(conn: Any) -> list[Any]:
    """Every supported mode 01 value, as ECCM logs them with OBD_SLOW_COMMANDS=ALL."""
    values = [c for c in conn.supported_commands if is_mode01_value(c)]
    return sorted(values, key=lambda c: c.pid)


def python_obd_loop(port: str, duration: float) -> tuple[float, int]:
    """(a): RPM reads per second of a loop querying every value in turn."""
    conn = obd.OBD(port, protocol="6")
    if not conn.is_connected():
        raise RuntimeError("python-OBD did not connect to the emulator")
    values = logged_values(conn)
    start = time.monotonic()
    rpm = 0
    while time.monotonic() - start < duration:
        for cmd in values:
            response = conn.query(cmd)
            if cmd.name == "RPM" and not response.is_null():
                rpm += 1
    rate = rpm / (time.monotonic() - start)
    conn.close()
    time.sleep(SETTLE)
    return rate, len(values)


def python_obd_async(port: str, duration: float) -> float:
    """(b): RPM values per second delivered by Async watching every value."""
    conn = obd.Async(port, protocol="6")
    if not conn.is_connected():
        raise RuntimeError("python-OBD Async did not connect to the emulator")
    fresh: list[float] = []
    lock = threading.Lock()

    def on_rpm(response: Any) -> None:
        if not response.is_null():
            with lock:
                fresh.append(time.monotonic())

    for cmd in logged_values(conn):
        conn.watch(cmd, callback=on_rpm if cmd.name == "RPM" else None)
    conn.start()
    time.sleep(WARM_UP + duration)
    conn.stop()
    conn.close()
    time.sleep(SETTLE)
    with lock:
        counted = [t for t in fresh if t >= fresh[0] + WARM_UP] if fresh else []
    if len(counted) < 2:
        return 0.0
    return (len(counted) - 1) / (counted[-1] - counted[0])


# -- (c) and (d): ECCM -------------------------------------------------------------------
@dataclass
class EccmRun:
    rpm_hz: float  # rows with a fresh RPM per second in the written file
    rows: int
    values: int  # columns of OBD values in the file
    slow_hz: float  # complete rounds of the slow values per second
    rpm_reads_hz: float  # RPM answers the emulator gave per second (cross-check)
    cpu_per_row_ms: float


def eccm(
    emu: Emulator, duration: float, workdir: Path, tiers: dict[str, str] | None = None
) -> EccmRun:
    records = workdir / f"records-{time.monotonic_ns()}"
    cfg = parse(
        {
            "CAR_IDENTIFIER": "bench",
            "OBD_INTERFACE": emu.port,
            "OBD_PROTOCOL": "6",
            "OBD_SLOW_COMMANDS": "ALL",
            "SAMPLE_INTERVAL": "0",
            "RECORD_DIRECTORY_LOCATION": str(records),
            "FILE_COMPRESSION": "none",
            "FILE_ROTATION_SECONDS": "3600",
            "FILE_ROTATION_MAX_BYTES": str(1 << 30),
            **(tiers or {}),
        }
    )
    daemon = Daemon(cfg)
    daemon.start()
    try:
        deadline = time.monotonic() + 60
        while not daemon.hub.engine_trip:
            if time.monotonic() > deadline:
                raise RuntimeError("ECCM did not connect to the emulator")
            time.sleep(0.05)
        time.sleep(WARM_UP)
        assert daemon.link is not None
        rows0, cpu0, count0, t0 = daemon.hub.rows, cpu(), emu.counters(), time.monotonic()
        time.sleep(duration)
        rows1, cpu1, count1, t1 = daemon.hub.rows, cpu(), emu.counters(), time.monotonic()
        slow_hz = daemon.link.slow_rate
    finally:
        daemon.stop()
    stamps: list[float] = []
    columns = 0
    for path in sorted(records.glob("*.tsv")):
        with path.open(newline="") as f:
            reader = csv.DictReader(f, delimiter="\t")
            columns = len(reader.fieldnames or ()) - 3  # TIME_UTC, CAR_ID, TRIP_ID
            for row in reader:
                if row["RPM"]:
                    stamps.append(datetime.fromisoformat(row["TIME_UTC"]).timestamp())
    stamps.sort()
    counted = [t for t in stamps if t >= stamps[0] + WARM_UP]
    rpm_hz = (len(counted) - 1) / (counted[-1] - counted[0]) if len(counted) > 1 else 0.0
    rows = rows1 - rows0
    return EccmRun(
        rpm_hz=rpm_hz,
        rows=rows,
        values=columns,
        slow_hz=slow_hz,
        rpm_reads_hz=(count1.get("RPM", 0) - count0.get("RPM", 0)) / (t1 - t0),
        cpu_per_row_ms=1000 * (cpu1 - cpu0) / rows if rows else float("nan"),
    )


# (e): what a user of an adapter that is slow with multi-PID requests can do with the
# tiers alone: only RPM in every row, every other value every 5 s.
RPM_ONLY = {"OBD_FAST_COMMANDS": "RPM", "OBD_SLOW_INTERVAL": "5"}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--duration", type=float, default=10.0, help="seconds measured per run")
    ap.add_argument("--delay", type=float, default=0.02, help="ECU answer time (emu.delay)")
    ap.add_argument("--cpu-delay", type=float, default=0.0, help="emu.delay of the CPU run")
    ap.add_argument("--serve-emulator", type=float, help=argparse.SUPPRESS)
    ap.add_argument("--one-delay-per-request", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve_emulator is not None:
        serve_emulator(args.serve_emulator, args.one_delay_per_request)
        return 0
    logging.basicConfig(level=logging.ERROR)
    obd.logger.setLevel(logging.CRITICAL)

    with tempfile.TemporaryDirectory() as tmp:
        with emulator(args.delay) as emu:
            loop_hz, n_values = python_obd_loop(emu.port, args.duration)
            async_hz = python_obd_async(emu.port, args.duration)
            stock = eccm(emu, args.duration, Path(tmp))
            rpm_only = eccm(emu, args.duration, Path(tmp), RPM_ONLY)
        with emulator(args.delay, one_delay_per_request=True) as emu:
            real = eccm(emu, args.duration, Path(tmp))
        with emulator(args.cpu_delay, one_delay_per_request=True) as emu:
            fast = eccm(emu, args.duration, Path(tmp))

    limit = 1 / args.delay if args.delay > 0 else float("inf")
    print(f"ELM327 emulator, car scenario, emu.delay = {args.delay * 1000:g} ms, ")
    print(f"{n_values} mode 01 values logged, SAMPLE_INTERVAL=0, {args.duration:g} s per run")
    print()
    print(f"{'':58} {'RPM fresh':>10} {'vs (b)':>8}")
    table = [
        ("(a) python-OBD, sequential loop over every value", loop_hz),
        ("(b) python-OBD Async watching every value (original)", async_hz),
        ("(c) eccm, emulator as is (k+1 delays per k-PID request)", stock.rpm_hz),
        ("(d) eccm, one delay per request (as a real ECU)", real.rpm_hz),
        ("(e) eccm, emulator as is, fast tier RPM, slow every 5 s", rpm_only.rpm_hz),
    ]
    for label, hz in table:
        ratio = f"{hz / async_hz:.1f}x" if async_hz else "-"
        print(f"{label:58} {hz:8.2f} Hz {ratio:>8}")
    print()
    # The slow values take their own requests: six PIDs each, every OBD_SLOW_INTERVAL (1 s).
    n_fast = len(parse({"CAR_IDENTIFIER": "x"}).obd_fast_commands)
    slow_requests = math.ceil((real.values - n_fast) / MAX_PIDS)
    print(
        f"latency bound: one {args.delay * 1000:g} ms answer per request = {limit:.0f} "
        f"requests/s, so RPM at most {limit:.0f} Hz; (d) reaches {real.rpm_hz / limit:.0%}. "
        f"Less the {slow_requests} requests/s of the slow values: "
        f"{limit - slow_requests:.0f} rows/s, (d) reaches {real.rpm_hz / (limit - slow_requests):.0%}"
    )
    for label, run in (("(c)", stock), ("(d)", real), ("(e)", rpm_only)):
        print(
            f"{label} {run.values} values per row, slow values {run.slow_hz:.2f} rounds/s, "
            f"RPM answers counted by the emulator {run.rpm_reads_hz:.2f}/s, "
            f"CPU {run.cpu_per_row_ms:.2f} ms per row"
        )
    print(
        f"emu.delay = {args.cpu_delay * 1000:g} ms: {fast.rpm_hz:.0f} rows/s, "
        f"CPU {fast.cpu_per_row_ms:.2f} ms per row (ECCM's process: link, hub, recorder)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
