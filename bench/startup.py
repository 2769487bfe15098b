"""Start-up: from `eccm run` to the first row written and to the first engine row.

Starts the real daemon (a subprocess) against the ELM327 emulator and a simulated GNSS
receiver, both in this process, with OBD_PROTOCOL=6 and FILE_FLUSH_INTERVAL=0 (so a row
is on disk as soon as it is written; --flush 1 for ECCM's default) and polls the record
directory. Two set-ups:

  recording   GNSS on, recording, nothing else;
  everything  as recording, plus S3 (an endpoint here that closes every connection it
              accepts, noting the first: when the uploader is up), the control socket and
              the web page: they must not delay the first rows.

The receiver sends an epoch every second whatever the daemon does, as a real one does, so
the first GNSS row also waits for the receiver's next epoch: 0 to 1 s depending on where in
the receiver's second the daemon starts. Round k of the runs starts every set-up at the same
point of that second, (k + 0.5)/runs of it after an epoch (spread over the second, the
same for this tree and --old), and the phases of each run are taken apart:

  GNSS row     process start -> the receiver's port opened (ECCM: interpreter, imports,
               configuration, recovery, the recorder) -> the receiver's next epoch (the
               receiver) -> the row on disk (ECCM: decoding, the first file, the write);
               "ECCM's own part" is the first and the last of these.
  engine row   process start -> the adapter's port opened (ECCM) -> ATZ (ECCM's probe of
               the adapter) -> python-OBD connected (its ATZ wait, protocol, supported PIDs:
               the commands python-OBD alone sends) -> the row on disk (ECCM: what it
               asks besides, the first round, the write).

Times are seen from here: the ports' opening by polling /proc/PID/fd, the adapter's
commands by the emulator, the receiver's epochs as written, rows by polling the file.
For reference, the adapter's own connection time is measured on the same emulator: a
plain python-OBD connect with ECCM's arguments (obd.OBD(port, protocol="6", fast=False,
check_voltage=False)) in a fresh interpreter, from process start, each round. Then one `python -X importtime` run of `eccm run` is summed by top-level
package (the import's own time), split into the imports done before the receiver's port is
opened (what the first row waits for) and the rest until the first engine row. Note that
numpy, which pint imports when it is there, is installed here by the test and report extras
only: a Pi's install (no extra) has none.

    .venv/bin/python bench/startup.py [--runs 3] [--old /tmp/eccm-old] [--phases] [--flush 1]
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
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from eccm.sim.car import emulated_car  # noqa: E402
from eccm.sim.gnss import NmeaPty, Route  # noqa: E402

PYTHON = str(ROOT / ".venv/bin/python")
POLL = 0.002
PERIOD = 1.0  # the simulated receiver's epochs, seconds apart


class TimedReceiver(NmeaPty):
    """The simulated receiver, noting when each epoch was written to the port."""

    def __init__(self) -> None:
        super().__init__(Route(), rate_hz=1.0 / PERIOD)
        self.written: list[float] = []

    def write(self, data: bytes) -> int:
        done = super().write(data)
        self.written.append(time.monotonic())
        return done

    def next_epoch(self, after: float) -> float | None:
        return next((t for t in self.written if t >= after), None)

    def wait_for_phase(self, phase: float) -> None:
        """Return ``phase`` seconds (mod PERIOD) after an epoch was written."""
        while not self.written:
            time.sleep(POLL)
        target = self.written[-1] + phase
        while target < time.monotonic():
            target += PERIOD
        time.sleep(max(0.0, target - time.monotonic()))


class CommandLog:
    """When the emulator received each command (the adapter's side of the connection)."""

    def __init__(self, emu: Any) -> None:
        self.entries: list[tuple[float, str]] = []
        handle = emu.handle_request

        def logged(cmd: str, do_write: bool = False) -> Any:
            self.entries.append((time.monotonic(), cmd.strip().upper()))
            return handle(cmd, do_write)

        emu.handle_request = logged

    def since(self, t0: float) -> list[tuple[float, str]]:
        return [e for e in self.entries if e[0] >= t0]


class S3Stub:
    """An S3 endpoint that accepts connections and closes them: notes the first contact."""

    def __init__(self) -> None:
        self._sock = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._sock.getsockname()[1]
        self.contacts: list[float] = []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            self.contacts.append(time.monotonic())
            conn.close()

    def close(self) -> None:
        self._sock.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def config(
    tmp: Path, port: str, gnss: str, everything: bool, s3_port: int = 9, flush: float = 0.0
) -> tuple[Path, Path]:
    records = tmp / f"records-{time.monotonic_ns()}"
    lines = [
        "[DEFAULT]",
        "CAR_IDENTIFIER=bench",
        f"OBD_INTERFACE={port}",
        "OBD_PROTOCOL=6",
        "GPS_POSITION_MONITORING=yes",
        f"GPS_INTERFACE={gnss}",
        f"RECORD_DIRECTORY_LOCATION={records}",
        f"FILE_FLUSH_INTERVAL={flush:g}",
        "LOG_LEVEL=WARNING",
    ]
    if everything:
        lines += [
            f"S3_SERVER_ENDPOINT=http://127.0.0.1:{s3_port}",
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


def opened(pid: int, wanted: dict[str, float | None]) -> None:
    """Note the time each of ``wanted``'s paths is first found open by process ``pid``."""
    if all(v is not None for v in wanted.values()):
        return
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return
    now = time.monotonic()
    for fd in fds:
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target in wanted and wanted[target] is None:
            wanted[target] = now


@dataclass
class Watch:
    """What one run's polling saw, as time.monotonic()."""

    first: float | None = None  # the first row on disk
    engine: float | None = None  # the first row with RPM on disk
    file: float | None = None  # the first .part file


def first_rows(records: Path, deadline: float, on_poll: Callable[[], None] = lambda: None) -> Watch:
    """Poll the open file until a row with RPM is in it."""
    seen = Watch()
    while time.monotonic() < deadline:
        on_poll()
        for part in records.glob("*.tsv.part"):
            if seen.file is None:
                seen.file = time.monotonic()
            try:
                lines = part.read_text().splitlines()
            except (FileNotFoundError, UnicodeDecodeError):
                continue
            if len(lines) < 2:
                continue
            now = time.monotonic()
            header = lines[0].split("\t")
            rpm_col = header.index("RPM") if "RPM" in header else None
            if seen.first is None:
                seen.first = now
            if rpm_col is not None and any(
                len(cells) > rpm_col and cells[rpm_col]
                for cells in (line.split("\t") for line in lines[1:])
            ):
                seen.engine = now
                return seen
        time.sleep(POLL)
    return seen


@dataclass
class Run:
    """One daemon start, each time in seconds from process start (None: not seen)."""

    first: float
    engine: float
    gnss_open: float | None
    epoch: float | None  # the receiver's first epoch after its port was opened
    obd_open: float | None
    atz: float | None
    connected: float | None  # the last command python-OBD alone sends to connect
    file: float | None
    s3: float | None  # the uploader's first contact with the endpoint


def one_run(
    cfg: Path,
    records: Path,
    ports: tuple[str, str],
    receiver: TimedReceiver,
    commands: CommandLog,
    connect_commands: list[str],
    s3: S3Stub | None,
    tree: str | None = None,
) -> Run:
    args = [PYTHON, "-m", "eccm.cli", "run", "--config", str(cfg)]
    env = dict(os.environ, PYTHONPATH=tree) if tree else None
    s3_before = len(s3.contacts) if s3 else 0
    t0 = time.monotonic()
    proc = subprocess.Popen(args, stderr=subprocess.PIPE, text=True, env=env, cwd=tree)
    wanted: dict[str, float | None] = dict.fromkeys(ports)
    try:
        seen = first_rows(records, t0 + 60, lambda: opened(proc.pid, wanted))
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    if seen.first is None or seen.engine is None:
        sys.stderr.write(err)
        raise RuntimeError(f"no row written in 60 s (first row: {seen.first})")
    gnss_open, obd_open = wanted[ports[0]], wanted[ports[1]]
    sent = commands.since(t0)
    atz = next((i for i, (_, cmd) in enumerate(sent) if cmd == "ATZ"), None)
    connected = None
    if atz is not None and connect_commands:
        tail = [cmd for _, cmd in sent[atz : atz + len(connect_commands)]]
        if tail == connect_commands:
            connected = sent[atz + len(connect_commands) - 1][0]
    epoch = receiver.next_epoch(gnss_open) if gnss_open is not None else None
    contacts = s3.contacts[s3_before:] if s3 else []

    def since(t: float | None) -> float | None:
        return None if t is None else t - t0

    return Run(
        first=seen.first - t0,
        engine=seen.engine - t0,
        gnss_open=since(gnss_open),
        epoch=since(epoch),
        obd_open=since(obd_open),
        atz=since(sent[atz][0] if atz is not None else None),
        connected=since(connected),
        file=since(seen.file),
        s3=since(contacts[0] if contacts else None),
    )


def adapter_connect(port: str, commands: CommandLog) -> tuple[float, float, list[str]]:
    """python-OBD alone, with ECCM's arguments: process start to a connected adapter
    (protocol 6 given), process start to its ATZ, and the commands it sent to connect."""
    code = (
        "import sys, obd, logging; obd.logger.setLevel(logging.CRITICAL); "
        f"c = obd.OBD({port!r}, protocol='6', fast=False, check_voltage=False); "
        "sys.exit(0 if c.is_connected() else 1)"
    )
    t0 = time.monotonic()
    subprocess.run([PYTHON, "-c", code], check=True)
    took = time.monotonic() - t0
    sent = commands.since(t0)
    time.sleep(1.5)  # python-OBD's close resets the adapter; let its answer pass
    first_atz = next(i for i, (_, cmd) in enumerate(sent) if cmd == "ATZ")
    # python-OBD's close sends ATZ too: the connection is what comes before that one.
    last_atz = max(i for i, (_, cmd) in enumerate(sent) if cmd == "ATZ")
    if last_atz == first_atz:
        last_atz = len(sent)
    return took, sent[first_atz][0] - t0, [cmd for _, cmd in sent[first_atz:last_atz]]


def importtime(cfg: Path, records: Path, gnss: str) -> tuple[dict[str, int], dict[str, int]]:
    """Import time by top-level package for one `eccm run`: (before it opened the GNSS
    receiver's port, what its first row waits for; from then until its first engine row).
    stderr is line-buffered: each line is timed here as it comes."""
    args = [PYTHON, "-X", "importtime", "-m", "eccm.cli", "run", "--config", str(cfg)]
    proc = subprocess.Popen(args, stderr=subprocess.PIPE, text=True)
    lines: list[tuple[float, str]] = []

    def read() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            lines.append((time.monotonic(), line))

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    wanted: dict[str, float | None] = {gnss: None}
    try:
        seen = first_rows(records, time.monotonic() + 60, lambda: opened(proc.pid, wanted))
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
        reader.join(10)
    first = wanted[gnss] or float("inf")
    engine = seen.engine if seen.engine is not None else float("inf")
    before: collections.Counter[str] = collections.Counter()
    after: collections.Counter[str] = collections.Counter()
    for at, line in lines:
        if not line.startswith("import time:") or "self [us]" in line or at > engine:
            continue
        self_us, _cumulative, name = line.split(":", 1)[1].split("|")
        top = name.strip().split(".")[0]
        (before if at <= first else after)[top] += int(self_us)
    return dict(before), dict(after)


def span(values: list[float]) -> str:
    return f"median {statistics.median(values):.2f} s (range {min(values):.2f}-{max(values):.2f})"


def report_phases(name: str, runs: list[Run], connect_ms: float) -> None:
    def ms(a: float | None, b: float | None = 0.0) -> str:
        return "   ?  " if a is None or b is None else f"{(a - b) * 1000:6.0f}"

    print(f"{name}: per run, milliseconds")
    print(
        "  GNSS row:   to port open | receiver's epoch | epoch to row on disk | "
        "ECCM's own part | row"
    )
    for r in runs:
        own = None
        if r.gnss_open is not None and r.epoch is not None:
            own = r.gnss_open + (r.first - r.epoch)
        print(
            f"              {ms(r.gnss_open)}    |    {ms(r.epoch, r.gnss_open)}        |"
            f"       {ms(r.first, r.epoch)}         |     {ms(own)}      | {ms(r.first)}"
        )
    print(
        "  engine row: to port open | to ATZ | python-OBD connecting | to row on disk | "
        f"row | row - python-OBD alone ({connect_ms:.0f})"
    )
    for r in runs:
        print(
            f"              {ms(r.obd_open)}    | {ms(r.atz, r.obd_open)} |"
            f"        {ms(r.connected, r.atz)}         |     {ms(r.engine, r.connected)}     |"
            f" {ms(r.engine)} | {r.engine * 1000 - connect_ms:+6.0f}"
        )
    files = [(r.file, r.s3) for r in runs if r.s3 is not None]
    if files:
        print(
            "  first file seen vs the uploader's first contact with S3: "
            + ", ".join(f"{ms(f)} vs {ms(s)}" for f, s in files)
        )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=3, help="runs per set-up (alternated)")
    ap.add_argument(
        "--old",
        help="another ECCM source tree (e.g. `git archive` of an older commit) to run, "
        "alternated with this one, for a before/after in the same run",
    )
    ap.add_argument("--phases", action="store_true", help="print each run's phases")
    ap.add_argument(
        "--flush",
        type=float,
        default=0.0,
        help="FILE_FLUSH_INTERVAL of the runs (default 0: every row synced as written; "
        "1 is ECCM's default, where a row after a file's first waits up to that long)",
    )
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmpdir, emulated_car() as emu:
        tmp = Path(tmpdir)
        commands = CommandLog(emu)
        port = os.path.realpath(emu.get_pty())
        receiver = TimedReceiver()
        receiver.start()
        s3 = S3Stub()
        try:
            setups = ["recording", "everything"]
            if args.old:
                setups += ["old recording", "old everything"]
            results: dict[str, list[Run]] = {name: [] for name in setups}
            connects: list[float] = []
            obd_atz: list[float] = []
            connect_commands: list[str] = []
            for k in range(args.runs):
                took, atz, connect_commands = adapter_connect(port, commands)
                connects.append(took)
                obd_atz.append(atz)
                for name in results:
                    everything = name.endswith("everything")
                    cfg, records = config(tmp, port, receiver.path, everything, s3.port, args.flush)
                    tree = args.old if name.startswith("old") else None
                    receiver.wait_for_phase((k + 0.5) / args.runs * PERIOD)
                    ports = (os.path.realpath(receiver.path), port)
                    results[name].append(
                        one_run(
                            cfg,
                            records,
                            ports,
                            receiver,
                            commands,
                            connect_commands,
                            s3 if everything else None,
                            tree,
                        )
                    )
                    time.sleep(1.5)  # the daemon's stop resets the adapter
            cfg, records = config(tmp, port, receiver.path, False)
            before, after = importtime(cfg, records, os.path.realpath(receiver.path))
        finally:
            receiver.stop()
            s3.close()

    print(
        f"ELM327 emulator (OBD_PROTOCOL=6), simulated GNSS at 1 Hz, {args.runs} runs each, "
        f"started at phases spread over the receiver's second, FILE_FLUSH_INTERVAL={args.flush:g}"
    )
    print(
        f"python-OBD alone, process start to connected adapter: {span(connects)}; "
        f"to its ATZ: {span(obd_atz)}"
    )
    for name, runs in results.items():
        own = [
            r.gnss_open + (r.first - r.epoch)
            for r in runs
            if r.gnss_open is not None and r.epoch is not None
        ]
        print(f"{name:14} first row written:  {span([r.first for r in runs])}", end="")
        print(f"; ECCM's own part {span(own)}" if own else "")
        print(f"{name:14} first engine row:   {span([r.engine for r in runs])}", end="")
        print(
            f"; minus python-OBD alone: {span([r.engine - c for r, c in zip(runs, connects, strict=True)])}"
        )
    if args.phases:
        connect_ms = statistics.median(connects) * 1000
        for name, runs in results.items():
            print()
            report_phases(name, runs, connect_ms)
    print()
    print("python -X importtime, `eccm run` (recording), by package (self times):")
    print(f"  {'':24} {'to GNSS open':>12} {'then to engine row':>19}")
    for pkg in sorted(
        set(before) | set(after), key=lambda p: -(before.get(p, 0) + after.get(p, 0))
    )[:15]:
        print(f"  {pkg:24} {before.get(pkg, 0) / 1000:9.1f} ms {after.get(pkg, 0) / 1000:16.1f} ms")
    total_before, total_after = sum(before.values()), sum(after.values())
    print(f"  {'total':24} {total_before / 1000:9.1f} ms {total_after / 1000:16.1f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
