"""Start-up: from `eccm run` to the first row written and to the first engine row.

Starts the real daemon (a subprocess) against the ELM327 emulator and a simulated GNSS
receiver, both in this process, with OBD_PROTOCOL=6 and FILE_FLUSH_INTERVAL=0 (so a row
is on disk as soon as it is written), and polls the record directory. Two set-ups:

  recording   GNSS on, recording, nothing else;
  everything  as recording, plus S3 (an endpoint that does not answer), the control
              socket and the web page: they must not delay the first row.

For reference, the adapter's own connection time is measured on the same emulator: a
plain python-OBD connect (obd.OBD(port, protocol="6")) in a fresh interpreter, from
process start. Then one `python -X importtime` run of `eccm run` is summed by top-level
package (cumulative microseconds of the imports the daemon did before its first row).

    .venv/bin/python bench/startup.py [--runs 3] [--old /tmp/eccm-old]
"""

from __future__ import annotations

import argparse
import collections
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from eccm.sim.car import emulated_car  # noqa: E402
from eccm.sim.gnss import NmeaPty, Route  # noqa: E402

PYTHON = str(ROOT / ".venv/bin/python")
POLL = 0.002


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def config(tmp: Path, port: str, gnss: str, everything: bool) -> tuple[Path, Path]:
    records = tmp / f"records-{time.monotonic_ns()}"
    lines = [
        "[DEFAULT]",
        "CAR_IDENTIFIER=bench",
        f"OBD_INTERFACE={port}",
        "OBD_PROTOCOL=6",
        "GPS_POSITION_MONITORING=yes",
        f"GPS_INTERFACE={gnss}",
        f"RECORD_DIRECTORY_LOCATION={records}",
        "FILE_FLUSH_INTERVAL=0",
        "LOG_LEVEL=WARNING",
    ]
    if everything:
        lines += [
            "S3_SERVER_ENDPOINT=http://127.0.0.1:9",
            "S3_SERVER_BUCKET=bench",
            "S3_SERVER_AK=a",
            "S3_SERVER_SK=b",
            "ENABLE_SOCKET_SERVER=yes",
            "SOCKET_SERVER_BIND=127.0.0.1",
            f"SOCKET_SERVER_PORT={free_port()}",
            "SOCKET_SERVER_SECRET=bench-secret-bench-secret-0123456789",
            "ENABLE_WEB_SERVER=yes",
            "WEB_SERVER_BIND=127.0.0.1",
            f"WEB_SERVER_PORT={free_port()}",
        ]
    path = tmp / f"config-{time.monotonic_ns()}.ini"
    path.write_text("\n".join(lines) + "\n")
    return path, records


def first_rows(records: Path, deadline: float) -> tuple[float | None, float | None]:
    """Poll the open file: (first row, first row with RPM), as time.monotonic()."""
    first: float | None = None
    rpm_col: int | None = None
    while time.monotonic() < deadline:
        for part in records.glob("*.part"):
            try:
                lines = part.read_text().splitlines()
            except (FileNotFoundError, UnicodeDecodeError):
                continue
            if len(lines) < 2:
                continue
            now = time.monotonic()
            header = lines[0].split("\t")
            rpm_col = header.index("RPM") if "RPM" in header else None
            if first is None:
                first = now
            if rpm_col is not None and any(
                len(cells) > rpm_col and cells[rpm_col]
                for cells in (line.split("\t") for line in lines[1:])
            ):
                return first, now
        time.sleep(POLL)
    return first, None


def one_run(cfg: Path, records: Path, tree: str | None = None) -> tuple[float, float]:
    args = [PYTHON, "-m", "eccm.cli", "run", "--config", str(cfg)]
    env = dict(os.environ, PYTHONPATH=tree) if tree else None
    t0 = time.monotonic()
    proc = subprocess.Popen(args, stderr=subprocess.PIPE, text=True, env=env, cwd=tree)
    try:
        first, engine = first_rows(records, t0 + 60)
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    if first is None or engine is None:
        sys.stderr.write(err)
        raise RuntimeError(f"no row written in 60 s (first row: {first})")
    return first - t0, engine - t0


def adapter_connect(port: str) -> float:
    """python-OBD alone: process start to a connected adapter (protocol 6 given)."""
    code = (
        "import sys, obd, logging; obd.logger.setLevel(logging.CRITICAL); "
        f"c = obd.OBD({port!r}, protocol='6'); sys.exit(0 if c.is_connected() else 1)"
    )
    t0 = time.monotonic()
    subprocess.run([PYTHON, "-c", code], check=True)
    took = time.monotonic() - t0
    time.sleep(1.5)  # python-OBD's close resets the adapter; let its answer pass
    return took


def importtime(cfg: Path, records: Path) -> dict[str, int]:
    """Cumulative import time by top-level package, for one `eccm run` to its first row."""
    args = [PYTHON, "-X", "importtime", "-m", "eccm.cli", "run", "--config", str(cfg)]
    proc = subprocess.Popen(args, stderr=subprocess.PIPE, text=True)
    try:
        first_rows(records, time.monotonic() + 60)
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    totals: collections.Counter[str] = collections.Counter()
    for line in err.splitlines():
        if not line.startswith("import time:") or "self [us]" in line:
            continue
        self_us, _cumulative, name = line.split(":", 1)[1].split("|")
        top = name.strip().split(".")[0]
        totals[top] += int(self_us)
    return dict(totals)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=3, help="runs per set-up (alternated)")
    ap.add_argument(
        "--old",
        help="another ECCM source tree (e.g. `git archive` of an older commit) to run, "
        "alternated with this one, for a before/after in the same run",
    )
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmpdir, emulated_car() as emu:
        tmp = Path(tmpdir)
        port = os.path.realpath(emu.get_pty())
        gnss = NmeaPty(Route(), rate_hz=1.0)
        gnss.start()
        try:
            setups = ["recording", "everything"]
            if args.old:
                setups += ["old recording", "old everything"]
            results: dict[str, list[tuple[float, float]]] = {name: [] for name in setups}
            connects: list[float] = []
            for _ in range(args.runs):
                connects.append(adapter_connect(port))
                for name in results:
                    cfg, records = config(tmp, port, gnss.path, name.endswith("everything"))
                    tree = args.old if name.startswith("old") else None
                    results[name].append(one_run(cfg, records, tree))
                    time.sleep(1.5)  # the daemon's stop resets the adapter
            cfg, records = config(tmp, port, gnss.path, False)
            totals = importtime(cfg, records)
        finally:
            gnss.stop()

    def span(values: list[float]) -> str:
        return (
            f"median {statistics.median(values):.2f} s (range {min(values):.2f}-{max(values):.2f})"
        )

    print(f"ELM327 emulator (OBD_PROTOCOL=6), simulated GNSS at 1 Hz, {args.runs} runs each")
    print(f"python-OBD alone, process start to connected adapter: {span(connects)}")
    for name, runs in results.items():
        print(f"{name:14} first row written:  {span([r[0] for r in runs])}")
        print(f"{name:14} first engine row:   {span([r[1] for r in runs])}")
    print()
    print("python -X importtime, `eccm run` (recording) to its first row, by package:")
    total = sum(totals.values())
    for pkg, us in sorted(totals.items(), key=lambda kv: -kv[1])[:15]:
        print(f"  {pkg:24} {us / 1000:8.1f} ms")
    print(f"  {'total':24} {total / 1000:8.1f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
