"""A Pi left on in a car for weeks, in accelerated form: `eccm run` under repeated faults.

The daemon (a subprocess, INFO logging to a file, as journald would keep it) records the
ELM327 emulator's car behind a symlink, a simulated receiver behind another symlink, with
the control socket, the web page, MQTT (a local mosquitto) and S3 uploads (a local
SeaweedFS) on. Then, phase after phase, one fault is repeated ``--cycles`` times: the
adapter unplugged and plugged back (a new emulator), the receiver's pty closed and a new
one opened, the broker stopped and started, web and WebSocket clients that connect and
vanish, control-socket clients that connect and never speak, S3 stopped. After each cycle
the daemon's fds, threads, RSS, the log lines it wrote and the files of the record folder
that are not closed data files (.tmp, .part, empty) are printed, and CPU over the last
idle seconds.

    .venv/bin/python bench/faults.py [--cycles 20] [--phases obd,gnss,mqtt,web,control,s3]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.control import SECRET, free_port  # noqa: E402
from bench.soak import measure, start_broker  # noqa: E402
from eccm.sim.car import emulated_car  # noqa: E402
from eccm.sim.gnss import NmeaPty, Route  # noqa: E402
from eccm.sim.s3 import LocalS3  # noqa: E402

PYTHON = str(ROOT / ".venv/bin/python")
CLK_TCK = os.sysconf("SC_CLK_TCK")
TMPFS_MB = 0  # --tmpfs


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def point(link: Path, target: str) -> None:
    tmp = link.with_name(link.name + ".new")
    tmp.symlink_to(target)
    os.replace(tmp, link)


def leftovers(records: Path) -> list[str]:
    odd = []
    for p in records.rglob("*"):
        if p.is_file() and (
            p.suffix in (".tmp", ".part") or p.stat().st_size == 0 or ".tmp" in p.name
        ):
            odd.append(p.name)
    return sorted(odd)


class Bench:
    def __init__(self, tmp: Path, stack: contextlib.ExitStack) -> None:
        self.tmp = tmp
        self.records = tmp / "records"
        if TMPFS_MB:
            # A small file system of its own (root only), so that a phase can fill it.
            fs = tmp / "fs"
            fs.mkdir()
            subprocess.run(
                ["mount", "-t", "tmpfs", "-o", f"size={TMPFS_MB}m", "tmpfs", fs], check=True
            )
            stack.callback(subprocess.run, ["umount", "-l", str(fs)], check=False)
            self.records = fs / "records"
        self.obd = tmp / "obd"
        self.gps = tmp / "gps"
        self.log = tmp / "daemon.log"
        self.stack = stack
        self.emu_cm: Any = emulated_car()
        point(self.obd, self.emu_cm.__enter__().get_pty())
        self.gnss = NmeaPty(Route(), rate_hz=1.0)
        self.gnss.start()
        point(self.gps, self.gnss.path)
        self.s3 = stack.enter_context(LocalS3(tmp / "s3", bucket="faults"))
        self.broker, self.mqtt = start_broker(tmp)
        self.mqtt_port = int(self.mqtt.rsplit(":", 1)[1]) if self.mqtt else 0
        self.socket_port = free_port()
        self.web_port = free_port()
        lines = [
            "[DEFAULT]",
            "CAR_IDENTIFIER=faults",
            f"OBD_INTERFACE={self.obd}",
            "OBD_PROTOCOL=6",
            "OBD_RECONNECT_MAX_INTERVAL=1",
            "GPS_POSITION_MONITORING=yes",
            f"GPS_INTERFACE={self.gps}",
            f"RECORD_DIRECTORY_LOCATION={self.records}",
            "SAMPLE_INTERVAL=0.2",
            "FILE_ROTATION_SECONDS=30",
            "LOG_LEVEL=INFO",
            "ENABLE_SOCKET_SERVER=yes",
            f"SOCKET_SERVER_PORT={self.socket_port}",
            f"SOCKET_SERVER_SECRET={SECRET}",
            "ENABLE_WEB_SERVER=yes",
            f"WEB_SERVER_PORT={self.web_port}",
            "S3_SYNC_INTERVAL=10",
            "S3_SYNC_JITTER=0",
            *(f"{k}={v}" for k, v in self.s3.config_values().items()),
        ]
        if self.mqtt:
            lines.append(f"MQTT_BROKER={self.mqtt}")
            lines.append("MQTT_INTERVAL=1")
        cfg = tmp / "config.ini"
        cfg.write_text("\n".join(lines) + "\n")
        out = self.log.open("wb")
        self.proc = subprocess.Popen(
            [PYTHON, "-m", "eccm.cli", "run", "--config", str(cfg)],
            stdout=out,
            stderr=subprocess.STDOUT,
        )

    def lines(self) -> int:
        return self.log.read_bytes().count(b"\n")

    def row(self, label: str, idle: float) -> None:
        c0 = cpu_seconds(self.proc.pid)
        time.sleep(idle)
        cpu = (cpu_seconds(self.proc.pid) - c0) / idle * 100
        rss, _peak, fds, threads, _procs = measure(self.proc.pid)
        odd = leftovers(self.records)
        print(
            f"{label:12} fds {fds:4d} thr {threads:3d} rss {rss:6.1f} log {self.lines():6d} "
            f"cpu {cpu:5.1f}% odd {len(odd)} {odd[-3:] if odd else ''}",
            flush=True,
        )

    # --- faults ---------------------------------------------------------------------
    def obd_cycle(self, down: float) -> None:
        self.obd.unlink()
        self.emu_cm.__exit__(None, None, None)
        time.sleep(down)
        self.emu_cm = emulated_car()
        point(self.obd, self.emu_cm.__enter__().get_pty())

    def gnss_cycle(self, down: float) -> None:
        self.gps.unlink()
        self.gnss.stop()
        time.sleep(down)
        self.gnss = NmeaPty(Route(), rate_hz=1.0)
        self.gnss.start()
        point(self.gps, self.gnss.path)

    def mqtt_cycle(self, down: float) -> None:
        if self.broker is None:
            return
        self.broker.terminate()
        self.broker.wait(10)
        time.sleep(down)
        conf = self.tmp / "mosquitto.conf"
        self.broker = subprocess.Popen(
            ["/usr/sbin/mosquitto", "-c", str(conf)], stderr=subprocess.DEVNULL
        )

    def web_cycle(self, down: float) -> None:
        socks = []
        for i in range(10):
            s = socket.create_connection(("127.0.0.1", self.web_port))
            if i % 3 == 0:
                s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n")  # never finished
            elif i % 3 == 1:
                s.sendall(
                    b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade"
                    b"\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                    b"Sec-WebSocket-Version: 13\r\n\r\n"
                )
            socks.append(s)
        time.sleep(down)
        for s in socks:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
            s.close()

    def control_cycle(self, down: float) -> None:
        socks = [socket.create_connection(("127.0.0.1", self.socket_port)) for _ in range(10)]
        time.sleep(down)
        for s in socks:
            s.close()

    def s3_cycle(self, down: float) -> None:
        self.s3.stop()
        time.sleep(down)
        self.s3.start()

    def outage_cycle(self, down: float) -> None:
        """Everything gone at once for ``down`` seconds (a parked car, no network)."""
        self.obd.unlink()
        self.emu_cm.__exit__(None, None, None)
        self.gps.unlink()
        self.gnss.stop()
        if self.broker is not None:
            self.broker.terminate()
            self.broker.wait(10)
        self.s3.stop()
        t0 = time.monotonic()
        while time.monotonic() - t0 < down:
            self.row(f"out {time.monotonic() - t0:5.0f}s", min(10.0, down))
        self.emu_cm = emulated_car()
        point(self.obd, self.emu_cm.__enter__().get_pty())
        self.gnss = NmeaPty(Route(), rate_hz=1.0)
        self.gnss.start()
        point(self.gps, self.gnss.path)
        self.broker = subprocess.Popen(
            ["/usr/sbin/mosquitto", "-c", str(self.tmp / "mosquitto.conf")],
            stderr=subprocess.DEVNULL,
        )
        self.s3.start()

    def disk_cycle(self, down: float) -> None:
        """The record folder's file system full for ``down`` seconds (needs --tmpfs)."""
        filler = self.records.parent / "filler"
        with filler.open("wb") as f, contextlib.suppress(OSError):
            while True:
                f.write(b"\0" * 65536)
        t0 = time.monotonic()
        while time.monotonic() - t0 < down:
            self.row(f"full {time.monotonic() - t0:4.0f}s", min(10.0, down))
        filler.unlink()

    def close(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(60)
        self.gnss.stop()
        self.emu_cm.__exit__(None, None, None)
        if self.broker is not None:
            self.broker.terminate()


@contextlib.contextmanager
def bench() -> Iterator[Bench]:
    with contextlib.ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        b = Bench(tmp, stack)
        try:
            yield b
        finally:
            b.close()
            keep = Path("/tmp/faults-daemon.log")
            keep.write_bytes(b.log.read_bytes())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cycles", type=int, default=20)
    ap.add_argument("--down", type=float, default=3.0, help="seconds a fault lasts")
    ap.add_argument("--idle", type=float, default=3.0, help="seconds measured after a cycle")
    ap.add_argument("--warm-up", type=float, default=15.0)
    ap.add_argument("--phases", default="obd,gnss,mqtt,web,control,s3")
    ap.add_argument("--tmpfs", type=int, default=0, help="MB of a tmpfs record folder (root)")
    args = ap.parse_args()
    global TMPFS_MB
    TMPFS_MB = args.tmpfs
    with bench() as b:
        time.sleep(args.warm_up)
        b.row("start", args.idle)
        for phase in args.phases.split(","):
            cycle: Callable[[float], None] = getattr(b, f"{phase}_cycle")
            for i in range(args.cycles):
                cycle(args.down)
                b.row(f"{phase} {i + 1}", args.idle)
    return 0


if __name__ == "__main__":
    sys.exit(main())
