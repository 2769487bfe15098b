"""The CPU one request costs before ECCM does anything with the answer, per ECU delay.

bench/cpu_row.py measures a whole row (request, decoding, hub, trip computer, recorder).
This measures its floor: the same request of the rows (``010C0D1104100B``, six PIDs) sent
in a loop on python-OBD's open port through :class:`eccm.obd.wire.Wire` (flush, write,
wait for the answer, read it up to the prompt), bare and with the CAN answer parsed into
python-OBD's messages. It shows how much of a row's CPU at a 20 ms ECU is paid only
because the thread sleeps between answers: the same few system calls and lines of Python
cost about three times as much after a 20 ms sleep as in a busy loop.

    .venv/bin/python bench/exchange_floor.py [--duration 8] [--delay 0 --delay 0.02]
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import obd
import obd_rate

from eccm.obd.wire import Wire

REQUEST = b"010C0D1104100B"  # RPM, SPEED, THROTTLE_POS, ENGINE_LOAD, MAF, TIMING_ADVANCE


def connect(port: str) -> obd.OBD:
    """python-OBD on the emulator's port. Its first connection to a newly started emulator
    sometimes fails (the adapter's reset answer comes late): a few tries, as ECCM retries."""
    for _ in range(3):
        conn = obd.OBD(port, protocol="6", fast=False)
        if conn.is_connected():
            return conn
        conn.close()
    raise RuntimeError("python-OBD did not connect to the emulator (3 tries)")


def measure(delay: float, duration: float) -> dict[str, tuple[float, float]]:
    """{"bare": (ms CPU per request, requests/s), "parsed": (...)} at ``delay``."""
    out: dict[str, tuple[float, float]] = {}
    with obd_rate.emulator(delay, True) as emu:
        conn = connect(emu.port)
        try:
            wire = Wire.attach(conn)
            if wire is None:
                raise RuntimeError("the emulator's port is not a local serial port")
            parse = wire.parser()
            for mode in ("bare", "parsed"):
                n = 0
                cpu0, start = time.thread_time(), time.monotonic()
                while time.monotonic() - start < duration:
                    reply = wire.exchange(REQUEST, 3.0)
                    if mode == "parsed":
                        parse(reply.lines)
                    n += 1
                elapsed = time.monotonic() - start
                out[mode] = (1000 * (time.thread_time() - cpu0) / n, n / elapsed)
        finally:
            conn.close()
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--duration", type=float, default=8.0)
    ap.add_argument("--delay", type=float, action="append", help="emu.delay (0 and 0.02)")
    args = ap.parse_args()
    logging.basicConfig(level=logging.ERROR)
    print(f"CPU per request of the rows ({REQUEST.decode()}), {args.duration:g} s each")
    for delay in args.delay or [0.0, 0.02]:
        got = measure(delay, args.duration)
        text = ", ".join(f"{mode} {ms:.3f} ms ({rate:.0f}/s)" for mode, (ms, rate) in got.items())
        print(f"emu.delay={delay * 1000:4g} ms: {text}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
