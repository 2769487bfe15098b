"""CPU per row of the full-rate path, this tree against another, alternated in one run.

Each measurement is bench/obd_rate.py's ECCM run (the real daemon, recorder included,
every supported value of the emulator's car logged, SAMPLE_INTERVAL=0, one delay per
multi-PID request as a real ECU) in a fresh interpreter, for each ``--delay``; with
``--old`` (an older source tree, e.g. from `git archive`) its runs alternate with this
tree's, so both see the same machine load.

    .venv/bin/python bench/cpu_row.py [--old /tmp/eccm-old] [--rounds 2] [--duration 10]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PYTHON = str(ROOT / ".venv/bin/python")

ONE_RUN = """
import sys, tempfile, logging
from pathlib import Path
sys.path.insert(0, {bench!r})
import obd_rate
logging.basicConfig(level=logging.ERROR)
with tempfile.TemporaryDirectory() as tmp, obd_rate.emulator({delay}, True) as emu:
    run = obd_rate.eccm(emu, {duration}, Path(tmp))
print(run.cpu_per_row_ms, run.rows / {duration})
"""


def one_run(tree: Path, delay: float, duration: float) -> tuple[float, float]:
    code = ONE_RUN.format(bench=str(tree / "bench"), delay=delay, duration=duration)
    out = subprocess.run(
        [PYTHON, "-c", code], cwd=tree, capture_output=True, text=True, check=True
    ).stdout.split()
    return float(out[-2]), float(out[-1])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--old", type=Path, help="an older source tree to compare with")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--duration", type=float, default=10.0)
    ap.add_argument("--delay", type=float, action="append", help="emu.delay (0 and 0.02)")
    args = ap.parse_args()
    delays = args.delay or [0.0, 0.02]
    trees = {"this tree": ROOT, **({"old tree": args.old.resolve()} if args.old else {})}
    results: dict[tuple[str, float], list[tuple[float, float]]] = {}
    for _ in range(args.rounds):
        for delay in delays:
            for name, tree in trees.items():
                results.setdefault((name, delay), []).append(one_run(tree, delay, args.duration))
    print(f"CPU per row, {args.rounds} runs of {args.duration:g} s each, alternated")
    for (name, delay), runs in results.items():
        cpu = [r[0] for r in runs]
        rate = [r[1] for r in runs]
        print(
            f"{name:10} emu.delay={delay * 1000:4g} ms: CPU {statistics.median(cpu):.2f} ms/row "
            f"(range {min(cpu):.2f}-{max(cpu):.2f}), {statistics.median(rate):.0f} rows/s"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
