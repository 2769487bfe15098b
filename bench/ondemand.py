"""Row rate while control-socket clients poll a value read from the car on demand (issue 10 item 1).

Issue 10 item 1: two authenticated clients each looping `GET VIN` (VIN is supported but not
logged, so every GET reads it from the car) took the recorder from 5 rows/s to 0. The fix
(eccm/obd/share.py, eccm/obd/ondemand.py) gives on-demand reads a bounded share of the
adapter's time; a request that cannot have it is answered
`{"class":"ERROR","code":"busy",...,"retry_after":s}` and counted in STATUS `ondemand_busy`.

For each SAMPLE_INTERVAL (default 0.2 and 0) the real daemon (`eccm run`, a subprocess)
records the ELM327 emulator's car (eccm.sim.car, in a second subprocess) with the control
socket on and otherwise default settings (the default fast commands, OBD_SLOW_COMMANDS=ALL:
mode 01 values only, so VIN is not logged). The emulator answers after a realistic ECU
delay, emu.delay = 0.02 s (--delay), once per request as a real ECU does (the stock
emulator sleeps once more for every PID of a multi-PID request; bench/obd_rate.py's
"one delay per request" case). For each number of clients (default 0, 2, 4, 8) this
process opens that many connections, authenticates each with HMAC and lets each loop
`GET VIN` back to back for a window (default 10 s, after 1 s of warm-up). On `busy` a
client waits the reply's retry_after before asking again, as a well-behaved client does;
with --greedy it asks again at once.

Printed per case: rows/s (STATUS rows_total over the window), that rate as a % of the
0-client rate of the same SAMPLE_INTERVAL (the mean if 0 is listed more than once:
--clients 0,8,0,8,0 interleaves quiet and loaded windows against drift), GETs answered
with a value per second, busy replies per second, other errors, and how much STATUS
ondemand_busy grew over the window.
Figures only, no assertions. About 2 minutes with the defaults.

    .venv/bin/python bench/ondemand.py [--intervals 0.2,0] [--clients 0,2,4,8] [--window 10]
        [--delay 0.02] [--greedy]
"""

from __future__ import annotations

import argparse
import os
import shlex
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.control import SECRET, Conn, free_port, wait_for  # noqa: E402

WARM_UP = 1.0  # seconds the clients loop before the window starts
SETTLE = 1.0  # seconds between cases, for the share's debt to be paid back

# The emulator, one delay per request (see the docstring); prints its pty, runs until killed.
_EMULATOR = """
import sys, threading
from eccm.sim.car import emulated_car
with emulated_car("car", delay=float(sys.argv[1])) as emu:
    inner = emu.multi_pid_answer
    def multi_pid_answer(cmd, header):
        saved, emu.delay = emu.delay, 0  # the request already slept emu.delay once
        try:
            return inner(cmd, header)
        finally:
            emu.delay = saved
    emu.multi_pid_answer = multi_pid_answer
    print(emu.get_pty(), flush=True)
    threading.Event().wait()
"""


@contextmanager
def daemon(interval: str, delay: float, max_clients: int) -> Iterator[int]:
    """The emulator and `eccm run` as subprocesses, logging rows; yields the socket's port."""
    with tempfile.TemporaryDirectory() as tmp:
        emu = subprocess.Popen(
            [sys.executable, "-c", _EMULATOR, str(delay)],
            stdout=subprocess.PIPE,
            text=True,
            cwd=tmp,
        )
        proc: subprocess.Popen[bytes] | None = None
        try:
            assert emu.stdout is not None
            pty = emu.stdout.readline().strip()
            if not pty:
                raise SystemExit("bench: the emulator did not start")
            port = free_port()
            cfg = Path(tmp) / "config.ini"
            cfg.write_text(
                "[DEFAULT]\n"
                "CAR_IDENTIFIER=bench\n"
                f"OBD_INTERFACE={pty}\n"
                f"RECORD_DIRECTORY_LOCATION={tmp}/records\n"
                f"SAMPLE_INTERVAL={interval}\n"
                "ENABLE_SOCKET_SERVER=yes\n"
                f"SOCKET_SERVER_PORT={port}\n"
                f"SOCKET_SERVER_SECRET={SECRET}\n"
                f"SOCKET_SERVER_MAX_CLIENTS={max_clients}\n"
                "LOG_LEVEL=WARNING\n"
            )
            proc = subprocess.Popen([str(ROOT / ".venv/bin/eccm"), "run", "--config", str(cfg)])

            def logging_rows() -> bool:
                c = Conn(port)
                try:
                    return int(c.ask("STATUS").get("rows_total") or 0) > 5
                finally:
                    c.close()

            wait_for("the daemon to log rows", logging_rows)
            yield port
        finally:
            if proc is not None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            emu.kill()
            emu.wait()


@dataclass
class Clients:
    """Connections looping `GET VIN`; counters are cumulative (take differences)."""

    port: int
    count: int
    greedy: bool
    answered: int = 0  # VALUES replies with a value
    busy: int = 0  # ERROR busy replies
    errors: dict[str, int] = field(default_factory=dict)  # other replies, by code
    _stop: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _threads: list[threading.Thread] = field(default_factory=list)
    _failures: list[BaseException] = field(default_factory=list)

    def _loop(self, conn: Conn) -> None:
        try:
            while not self._stop.is_set():
                reply = conn.ask("GET VIN")
                kind = reply.get("class")
                if kind == "VALUES" and (reply.get("values", {}).get("VIN") or {}).get("value"):
                    with self._lock:
                        self.answered += 1
                elif kind == "ERROR" and reply.get("code") == "busy":
                    with self._lock:
                        self.busy += 1
                    if not self.greedy:
                        self._stop.wait(float(reply.get("retry_after") or 0.1))
                else:
                    code = str(reply.get("code") or kind)
                    with self._lock:
                        self.errors[code] = self.errors.get(code, 0) + 1
                    self._stop.wait(0.1)
        except BaseException as exc:  # reported by stop()
            self._failures.append(exc)
        finally:
            conn.close()

    def snapshot(self) -> tuple[int, int, int]:
        with self._lock:
            return self.answered, self.busy, sum(self.errors.values())

    def __enter__(self) -> Clients:
        conns = [Conn(self.port) for _ in range(self.count)]
        for i, conn in enumerate(conns):
            thread = threading.Thread(target=self._loop, args=(conn,), name=f"client-{i}")
            thread.start()
            self._threads.append(thread)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(60)
        if self._failures:
            raise SystemExit(f"bench: a client failed: {self._failures[0]!r}")


@dataclass
class Case:
    interval: str
    clients: int
    seconds: float
    rows: int
    answered: int
    busy: int
    errors: int
    ondemand_busy: int  # growth of STATUS ondemand_busy over the window

    def rate(self, n: int) -> float:
        return n / self.seconds


def run_case(port: int, status: Conn, interval: str, n: int, window: float, greedy: bool) -> Case:
    with Clients(port, n, greedy) as clients:
        time.sleep(WARM_UP if n else 0.0)
        s0 = status.ask("STATUS")
        c0, t0 = clients.snapshot(), time.monotonic()
        time.sleep(window)  # the measuring window
        s1 = status.ask("STATUS")
        c1, t1 = clients.snapshot(), time.monotonic()
    return Case(
        interval,
        n,
        t1 - t0,
        int(s1["rows_total"]) - int(s0["rows_total"]),
        c1[0] - c0[0],
        c1[1] - c0[1],
        c1[2] - c0[2],
        int(s1.get("ondemand_busy") or 0) - int(s0.get("ondemand_busy") or 0),
    )


def table(cases: list[Case]) -> str:
    head = (
        "SAMPLE_INTERVAL",
        "clients",
        "rows/s",
        "% of 0 clients",
        "GET values/s",
        "busy/s",
        "other errors",
        "ondemand_busy +",
    )
    lines: list[tuple[str, ...]] = [head]
    base: dict[str, float] = {}  # the mean 0-client rate per interval
    for interval in dict.fromkeys(c.interval for c in cases):
        quiet = [c.rate(c.rows) for c in cases if c.interval == interval and c.clients == 0]
        if quiet:
            base[interval] = sum(quiet) / len(quiet)
    for c in cases:
        rows = c.rate(c.rows)
        ref = base.get(c.interval)
        lines.append(
            (
                c.interval,
                str(c.clients),
                f"{rows:.1f}",
                f"{100 * rows / ref:.0f} %" if ref else "-",
                f"{c.rate(c.answered):.2f}",
                f"{c.rate(c.busy):.1f}",
                str(c.errors),
                str(c.ondemand_busy),
            )
        )
    widths = [max(len(line[i]) for line in lines) for i in range(len(head))]

    def fmt(line: tuple[str, ...]) -> str:
        return "| " + " | ".join(v.rjust(w) for v, w in zip(line, widths, strict=True)) + " |"

    rule = "|" + "|".join("-" * (w + 1) + ":" for w in widths) + "|"
    return "\n".join([fmt(lines[0]), rule, *(fmt(line) for line in lines[1:])])


def main() -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--intervals", default="0.2,0", help="SAMPLE_INTERVAL values, comma-separated")
    ap.add_argument("--clients", default="0,2,4,8", help="client counts, comma-separated")
    ap.add_argument("--window", type=float, default=10.0, help="seconds measured per case")
    ap.add_argument("--delay", type=float, default=0.02, help="ECU answer time (emu.delay)")
    ap.add_argument("--greedy", action="store_true", help="on busy, ask again at once")
    args = ap.parse_args()
    intervals = [v.strip() for v in args.intervals.split(",") if v.strip()]
    counts = [int(v) for v in args.clients.split(",") if v.strip()]

    print("$ " + shlex.join(getattr(sys, "orig_argv", [sys.executable, *sys.argv])))
    print(
        f"eccm run on the ELM327 emulator (emu.delay = {args.delay * 1000:g} ms, one delay per "
        f"request), {args.window:g} s per case, clients loop GET VIN "
        f"({'greedy: retry busy at once' if args.greedy else 'wait retry_after on busy'}), "
        f"{os.cpu_count()} CPUs",
        flush=True,
    )
    cases: list[Case] = []
    for interval in intervals:
        with daemon(interval, args.delay, max(8, max(counts, default=0) + 2)) as port:
            status = Conn(port)
            try:
                for i, n in enumerate(counts):
                    if i:
                        time.sleep(SETTLE)
                    case = run_case(port, status, interval, n, args.window, args.greedy)
                    cases.append(case)
                    print(
                        f"  SAMPLE_INTERVAL={interval} clients={n}: "
                        f"{case.rate(case.rows):.1f} rows/s",
                        file=sys.stderr,
                        flush=True,
                    )
            finally:
                status.close()
    print(table(cases))
    return 0


if __name__ == "__main__":
    sys.exit(main())
