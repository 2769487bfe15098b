"""CPU per row of the full-rate path, this tree against another, alternated in one run.

Each measurement is bench/obd_rate.py's ECCM run (the real daemon, recorder included,
every supported value of the emulator's car logged, SAMPLE_INTERVAL=0, one delay per
multi-PID request as a real ECU) in a fresh interpreter, for each ``--delay``; with
``--old`` (an older source tree, e.g. from `git archive`) its runs alternate with this
tree's, so both see the same machine load. Each line also splits the CPU by thread: the
OBD link's (requests, decoding, the hub and the trip computer, which it calls), the
recorder's writer, and the rest.

    .venv/bin/python bench/cpu_row.py [--old /tmp/eccm-old] [--rounds 2] [--duration 10]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PYTHON = str(ROOT / ".venv/bin/python")

# obd_rate measures the process's CPU with obd_rate.cpu() at the start and the end of its
# window: wrapped here, the same two calls also take each thread's CPU (Linux /proc), for
# the share of the OBD link's thread (requests, decoding, the hub and its listeners but
# the recorder) and of the recorder's writer thread.
ONE_RUN = """
import json, os, sys, tempfile, threading, logging
from pathlib import Path
sys.path.insert(0, {bench!r})
import obd_rate
logging.basicConfig(level=logging.ERROR)
snapshots = []
process_cpu = obd_rate.cpu

def threads_cpu():
    names = {{t.native_id: t.name for t in threading.enumerate()}}
    out = {{}}
    for tid in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{{tid}}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        name = names.get(int(tid), "other")
        out[name] = out.get(name, 0.0) + (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return out

def cpu():
    snapshots.append(threads_cpu())
    return process_cpu()

obd_rate.cpu = cpu
with tempfile.TemporaryDirectory() as tmp, obd_rate.emulator({delay}, True) as emu:
    run = obd_rate.eccm(emu, {duration}, Path(tmp))
first, last = snapshots[0], snapshots[-1]
threads = {{n: 1000 * (last[n] - first.get(n, 0.0)) / run.rows for n in last}}
print(json.dumps([run.cpu_per_row_ms, run.rows / {duration}, threads]))
"""
THREADS = {"eccm-obd": "link", "eccm-recorder": "recorder"}


def one_run(tree: Path, delay: float, duration: float) -> tuple[float, float, dict[str, float]]:
    code = ONE_RUN.format(bench=str(tree / "bench"), delay=delay, duration=duration)
    out = subprocess.run(
        [PYTHON, "-c", code], cwd=tree, capture_output=True, text=True, check=True
    ).stdout.splitlines()
    cpu, rate, threads = json.loads(out[-1])
    shares = {label: 0.0 for label in [*THREADS.values(), "other"]}
    for name, ms in threads.items():
        shares[THREADS.get(name, "other")] += ms
    return float(cpu), float(rate), shares


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--old", type=Path, help="an older source tree to compare with")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--duration", type=float, default=10.0)
    ap.add_argument("--delay", type=float, action="append", help="emu.delay (0 and 0.02)")
    args = ap.parse_args()
    delays = args.delay or [0.0, 0.02]
    trees = {"this tree": ROOT, **({"old tree": args.old.resolve()} if args.old else {})}
    results: dict[tuple[str, float], list[tuple[float, float, dict[str, float]]]] = {}
    for _ in range(args.rounds):
        for delay in delays:
            for name, tree in trees.items():
                results.setdefault((name, delay), []).append(one_run(tree, delay, args.duration))
    print(f"CPU per row, {args.rounds} runs of {args.duration:g} s each, alternated")
    for (name, delay), runs in results.items():
        cpu = [r[0] for r in runs]
        rate = [r[1] for r in runs]
        shares = ", ".join(
            f"{label} {statistics.median(r[2][label] for r in runs):.2f}" for label in runs[0][2]
        )
        print(
            f"{name:10} emu.delay={delay * 1000:4g} ms: CPU {statistics.median(cpu):.2f} ms/row "
            f"(range {min(cpu):.2f}-{max(cpu):.2f}), {statistics.median(rate):.0f} rows/s; "
            f"by thread (ms/row, 10 ms ticks): {shares}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
