"""GET round-trip time on the control socket, 7 clients at once, while the daemon logs.

Default: the real daemon (`eccm run`, a subprocess) records the ELM327 emulator's car (in a
second subprocess) as fast as the car answers (SAMPLE_INTERVAL=0, every supported value
logged), with the control socket on. This process only runs the clients: each connects,
authenticates with HMAC and sends GETs back to back; every round trip (request written to
reply line read) is timed. Prints p50, p99 and max per command, and the daemon's row rate
during the run (rows_total from STATUS), to show that logging went on at full speed.

With --in-process, a Hub fed by a thread in a tight loop (about as fast as Python can
publish rows) replaces the daemon, server and clients sharing this process: a harsher case,
since they then also share one GIL.

    .venv/bin/python bench/control.py [--clients 7] [--requests 1000] [--rate 0] [--in-process]
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SECRET = "bench-secret-bench-secret-bench-secret-0123"
COMMANDS = ("GET RPM SPEED", "GET")

_EMULATOR = """
import sys, threading
from eccm.sim.car import emulated_car
with emulated_car() as emu:
    print(emu.get_pty(), flush=True)
    threading.Event().wait()
"""


class Conn:
    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.file = self.sock.makefile("rb")
        nonce = self.reply()["nonce"]
        proof = hmac.new(SECRET.encode(), nonce.encode(), hashlib.sha256).hexdigest()
        assert self.ask(f"AUTH HMAC {proof}")["class"] == "AUTH"

    def reply(self) -> dict[str, Any]:
        line = self.file.readline()
        if not line:
            raise ConnectionError("the daemon closed the connection")
        obj: dict[str, Any] = json.loads(line)
        return obj

    def ask(self, line: str) -> dict[str, Any]:
        self.sock.sendall(line.encode() + b"\n")
        return self.reply()

    def close(self) -> None:
        self.file.close()
        self.sock.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(what: str, probe: Callable[[], Any], timeout: float = 90.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            value = probe()
        except OSError:
            value = None
        if value:
            return value
        time.sleep(0.1)
    raise SystemExit(f"bench: timed out waiting for {what}")


@contextmanager
def real_daemon() -> Iterator[int]:
    """The emulator and `eccm run` as subprocesses; yields the socket's port."""
    with tempfile.TemporaryDirectory() as tmp:
        emu = subprocess.Popen(
            [sys.executable, "-c", _EMULATOR], stdout=subprocess.PIPE, text=True, cwd=tmp
        )
        daemon: subprocess.Popen[bytes] | None = None
        try:
            assert emu.stdout is not None
            pty = emu.stdout.readline().strip()
            port = free_port()
            cfg = Path(tmp) / "config.ini"
            cfg.write_text(
                "[DEFAULT]\n"
                "CAR_IDENTIFIER=bench\n"
                f"OBD_INTERFACE={pty}\n"
                f"RECORD_DIRECTORY_LOCATION={tmp}/records\n"
                "SAMPLE_INTERVAL=0\n"
                "OBD_SLOW_COMMANDS=ALL\n"
                "ENABLE_SOCKET_SERVER=yes\n"
                f"SOCKET_SERVER_PORT={port}\n"
                f"SOCKET_SERVER_SECRET={SECRET}\n"
                "LOG_LEVEL=WARNING\n"
            )
            daemon = subprocess.Popen([str(ROOT / ".venv/bin/eccm"), "run", "--config", str(cfg)])

            def rows() -> int:
                c = Conn(port)
                try:
                    return int(c.ask("STATUS").get("rows_total") or 0)
                finally:
                    c.close()

            wait_for("the daemon to log rows", lambda: rows() > 20)
            yield port
        finally:
            if daemon is not None:
                daemon.send_signal(signal.SIGTERM)
                daemon.wait(timeout=30)
            emu.kill()
            emu.wait()


@contextmanager
def in_process() -> Iterator[int]:
    """A Hub fed by a thread in a tight loop, a DaemonBackend and the server, here."""
    from eccm.backend import DaemonBackend
    from eccm.clock import SystemClock
    from eccm.config import parse
    from eccm.control.server import ControlServer
    from eccm.hub import Hub
    from eccm.sample import Layout, Reading
    from eccm.store.budget import DiskSettings

    clock = SystemClock()
    names = ("RPM", "SPEED", "THROTTLE_POS", "ENGINE_LOAD", "MAF", "INTAKE_PRESSURE")
    slow = tuple(f"SLOW_{i:02d}" for i in range(40))
    layout = Layout(names, slow, gps=False)
    hub = Hub(clock, 2.0, layout)

    class Formatter:  # the recorder's share of the work: one row of text per sample
        def on_sample(self, sample: Any) -> None:
            "\t".join(sample.layout.row(sample, "bench"))

        def on_trip_end(self, trip_id: str) -> None:
            pass

        def stop(self) -> None:
            pass

    hub.add_listener(Formatter())
    stop = threading.Event()

    def feed() -> None:
        i = 0
        while not stop.is_set():
            now = clock.monotonic()
            hub.update_values({n: Reading(float(i % 7000), "unit", now) for n in names + slow})
            hub.emit()
            i += 1

    cfg = parse(
        {
            "CAR_IDENTIFIER": "bench",
            "ENABLE_SOCKET_SERVER": "yes",
            "SOCKET_SERVER_SECRET": SECRET,
            "SOCKET_SERVER_MAX_CLIENTS": "16",
        }
    )
    server = ControlServer.from_config(
        cfg, DaemonBackend(disk=DiskSettings.from_config(cfg), hub=hub, link=None), clock, port=0
    )
    server.start()
    feeder = threading.Thread(target=feed, daemon=True)
    feeder.start()
    try:
        yield server.address[1]
    finally:
        stop.set()
        feeder.join()
        server.stop()


def rows_total(port: int) -> int:
    c = Conn(port)
    try:
        return int(c.ask("STATUS").get("rows_total") or 0)
    finally:
        c.close()


def run_clients(
    port: int, clients: int, requests: int, command: str, rate: float = 0.0
) -> list[float]:
    conns = [Conn(port) for _ in range(clients)]
    times: list[list[float]] = [[] for _ in conns]
    go = threading.Barrier(clients)
    errors: list[BaseException] = []

    def client(i: int) -> None:
        c = conns[i]
        try:
            go.wait()
            period = 1.0 / rate if rate else 0.0
            due = time.perf_counter() + period * i / clients  # spread the clients out
            for _ in range(requests):
                if period:
                    time.sleep(max(0.0, due - time.perf_counter()))
                    due += period
                t0 = time.perf_counter()
                reply = c.ask(command)
                times[i].append(time.perf_counter() - t0)
                if reply["class"] != "VALUES":
                    raise RuntimeError(f"unexpected reply: {reply}")
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for c in conns:
        c.close()
    if errors:
        raise SystemExit(f"bench: a client failed: {errors[0]}")
    return [t for per in times for t in per]


def summary(samples: list[float]) -> dict[str, float]:
    q = statistics.quantiles(samples, n=100, method="inclusive")
    return {
        "p50_ms": round(statistics.median(samples) * 1000, 2),
        "p99_ms": round(q[98] * 1000, 2),
        "max_ms": round(max(samples) * 1000, 2),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--clients", type=int, default=7)
    ap.add_argument("--requests", type=int, default=1000, help="per client and command")
    ap.add_argument("--in-process", action="store_true", help="hub fed by a thread, no daemon")
    ap.add_argument(
        "--rate",
        type=float,
        default=0.0,
        help="GETs per second per client (0: back to back, the worst case)",
    )
    args = ap.parse_args()

    source = in_process() if args.in_process else real_daemon()
    with source as port:
        run_clients(port, args.clients, 50, COMMANDS[0])  # warm-up
        rows0, t0 = rows_total(port), time.monotonic()
        time.sleep(3.0)
        idle_rate = (rows_total(port) - rows0) / (time.monotonic() - t0)
        results: dict[str, Any] = {
            "mode": "in-process hub" if args.in_process else "eccm run on the emulator",
            "clients": args.clients,
            "requests_per_client": args.requests,
            "rate_per_client": args.rate or "back to back",
            "cpus": os.cpu_count(),
            "daemon_rows_per_s_without_clients": round(idle_rate, 1),
        }
        for command in COMMANDS:
            rows0, t0 = rows_total(port), time.monotonic()
            samples = run_clients(port, args.clients, args.requests, command, args.rate)
            rows1, t1 = rows_total(port), time.monotonic()
            results[command] = {
                **summary(samples),
                "requests": len(samples),
                "daemon_rows_per_s": round((rows1 - rows0) / (t1 - t0), 1),
            }
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
