"""A simulated NMEA receiver on a pseudo-terminal, for the demo and end-to-end tests.

The simulated car drives a circle around a start point at constant speed. Where it is at any
moment is a pure function of time (:meth:`Route.position_at`), so a test can check a logged
row's GPS_TIME_UTC, latitude and longitude against what the receiver sent.

``python -m eccm.sim.gnss`` prints the pseudo-terminal's path and runs until killed.
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import math
import os
import random
import signal
import threading
import time
import tty
from collections.abc import Sequence
from dataclasses import dataclass
from types import FrameType, TracebackType

import pynmea2

from eccm.clock import Clock, SystemClock

log = logging.getLogger(__name__)

EARTH_RADIUS = 6_371_008.8  # metres, mean radius: plenty for a simulated drive
KNOT = 1852.0 / 3600.0  # m/s


@dataclass(frozen=True)
class Route:
    """A clockwise circle of ``radius`` metres around (``latitude``, ``longitude``),
    driven at ``speed`` m/s. Where the car is depends only on the time."""

    latitude: float = 48.8584
    longitude: float = 2.2945
    radius: float = 300.0
    speed: float = 13.9  # m/s, 50 km/h
    altitude: float = 35.0
    satellites: int = 9
    hdop: float = 0.9

    def _bearing(self, epoch: float) -> float:
        """Radians, clockwise from north, of the car as seen from the centre."""
        period = 2 * math.pi * self.radius / self.speed
        # Reducing the epoch first keeps float precision at ~1.7e9 s.
        return 2 * math.pi * (epoch % period) / period

    def position_at(self, epoch: float) -> tuple[float, float]:
        """(latitude, longitude) in degrees at ``epoch`` (seconds since the epoch)."""
        b = self._bearing(epoch)
        north = self.radius * math.cos(b)
        east = self.radius * math.sin(b)
        lat = self.latitude + math.degrees(north / EARTH_RADIUS)
        lon = self.longitude + math.degrees(
            east / (EARTH_RADIUS * math.cos(math.radians(self.latitude)))
        )
        return lat, lon

    def track_at(self, epoch: float) -> float:
        """Course over ground in degrees true: tangent to the circle, clockwise."""
        return (math.degrees(self._bearing(epoch)) + 90.0) % 360.0


def sentence_time(epoch: float) -> float:
    """The epoch as the receiver reports it: NMEA times have centisecond resolution."""
    return round(epoch, 2)


def sentences_at(
    route: Route, epoch: float, *, fix: bool = True, vtg: bool = True, talker: str = "GP"
) -> list[str]:
    """RMC, GGA (and VTG) for ``epoch``, checksummed by pynmea2, without line endings.

    Positions are those of :meth:`Route.position_at` at :func:`sentence_time` ``(epoch)``.
    """
    t = sentence_time(epoch)
    when = dt.datetime.fromtimestamp(t, dt.UTC)
    hhmmss = f"{when:%H%M%S}.{min(99, round(when.microsecond / 10_000)):02d}"
    ddmmyy = f"{when:%d%m%y}"
    if fix:
        lat, lon = route.position_at(t)
        lat_s, lat_h = _dm(lat, 2), "N" if lat >= 0 else "S"
        lon_s, lon_h = _dm(lon, 3), "E" if lon >= 0 else "W"
        knots = f"{route.speed / KNOT:.3f}"
        kmh = f"{route.speed * 3.6:.3f}"
        track = f"{route.track_at(t):.2f}"
        rmc = [hhmmss, "A", lat_s, lat_h, lon_s, lon_h, knots, track, ddmmyy, "", "", "A"]
        gga = [
            hhmmss,
            *(lat_s, lat_h, lon_s, lon_h),
            "1",
            f"{route.satellites:02d}",
            f"{route.hdop:.1f}",
            f"{route.altitude:.1f}",
            "M",
            "47.0",
            "M",
            "",
            "",
        ]
        vtg_fields = [track, "T", "", "M", knots, "N", kmh, "K", "A"]
    else:
        rmc = [hhmmss, "V", "", "", "", "", "", "", ddmmyy, "", "", "N"]
        gga = [hhmmss, "", "", "", "", "0", "00", "", "", "M", "", "M", "", ""]
        vtg_fields = ["", "T", "", "M", "", "N", "", "K", "N"]
    out = [
        pynmea2.RMC(talker, "RMC", rmc).render(),
    ]
    if vtg:
        out.append(pynmea2.VTG(talker, "VTG", vtg_fields).render())
    out.append(pynmea2.GGA(talker, "GGA", gga).render())
    return out


def _dm(degrees: float, width: int) -> str:
    # NMEA's dddmm.mmmmm; pynmea2 parses it (dm_to_sd) but has no formatter.
    total = round(abs(degrees) * 60.0, 5)
    whole = int(total // 60)
    minutes = total - whole * 60
    return f"{whole:0{width}d}{minutes:08.5f}"


def garbage(rng: random.Random) -> bytes:
    """What a real line carries now and then: binary noise and a sentence with a bad checksum."""
    noise = bytes(rng.randrange(0x80, 0x100) for _ in range(rng.randrange(8, 64)))
    broken = "$GPGGA,000000.00,0000.00000,N,00000.00000,E,1,04,9.9,0.0,M,,M,,*00"
    return noise + b"\r\n" + broken.encode() + b"\r\n"


class NmeaPty:
    """A receiver on a pseudo-terminal: open :attr:`path` like a serial device.

    ``no_fix_periods`` are (start, end) seconds after :meth:`start` during which the
    receiver reports no fix (status V, quality 0); :attr:`fix_available` can also be
    switched at any time. ``garbage_every`` = N writes noise after every N-th epoch.
    :meth:`stop` closes the pseudo-terminal, which a reader sees as an unplugged device.
    """

    def __init__(
        self,
        route: Route | None = None,
        rate_hz: float = 1.0,
        clock: Clock | None = None,
        *,
        vtg: bool = True,
        talker: str = "GP",
        no_fix_periods: Sequence[tuple[float, float]] = (),
        garbage_every: int = 0,
        seed: int = 0,
    ) -> None:
        if rate_hz <= 0:
            raise ValueError("rate_hz must be > 0")
        self.route = route or Route()
        self.rate_hz = rate_hz
        self.fix_available = True
        self._clock: Clock = clock or SystemClock()
        self._vtg = vtg
        self._talker = talker
        self._no_fix = tuple(no_fix_periods)
        self._garbage_every = garbage_every
        self._rng = random.Random(seed)
        self._master, self._slave = os.openpty()
        # Raw mode: no echo, no CR/LF translation, so the reader gets the bytes written.
        tty.setraw(self._slave)
        # A real receiver does not wait for its reader: when nobody reads, bytes are lost.
        os.set_blocking(self._master, False)
        self.path: str = os.ttyname(self._slave)
        self.epochs = 0  # epochs written
        self.dropped = 0  # bytes lost because nobody read them
        self.last_epoch: float | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._started_at = 0.0
        self._closed = False
        self._lock = threading.Lock()

    def __enter__(self) -> NmeaPty:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError("NmeaPty already started")
        self._started_at = time.monotonic()
        self._thread = threading.Thread(target=self._run, name="nmea-pty", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop writing and close the pseudo-terminal (the device disappears)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(2.0)
        with self._lock:
            if not self._closed:
                self._closed = True
                os.close(self._master)
                os.close(self._slave)

    def write(self, data: bytes) -> int:
        """Write raw bytes as the receiver would (e.g. a capture); returns bytes written."""
        with self._lock:
            if self._closed:
                return 0
            done = 0
            while done < len(data):
                try:
                    done += os.write(self._master, data[done:])
                except BlockingIOError:
                    break
                except OSError as e:  # EIO once the slave side is gone
                    log.debug("NMEA simulator: write failed: %s", e)
                    break
            self.dropped += len(data) - done
            return done

    def has_fix(self, since_start: float) -> bool:
        if not self.fix_available:
            return False
        return not any(a <= since_start < b for a, b in self._no_fix)

    def _run(self) -> None:
        period = 1.0 / self.rate_hz
        next_tick = time.monotonic()
        while not self._stop.is_set():
            epoch = self._clock.time()
            fix = self.has_fix(time.monotonic() - self._started_at)
            lines = sentences_at(self.route, epoch, fix=fix, vtg=self._vtg, talker=self._talker)
            payload = "".join(line + "\r\n" for line in lines).encode("ascii")
            self.epochs += 1
            if self._garbage_every and self.epochs % self._garbage_every == 0:
                payload += garbage(self._rng)
            self.write(payload)
            self.last_epoch = sentence_time(epoch)
            next_tick += period
            now = time.monotonic()
            if next_tick < now:  # fell behind (loaded machine): skip, do not burst
                next_tick = now
            self._stop.wait(next_tick - now)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m eccm.sim.gnss",
        description="Simulated NMEA receiver on a pseudo-terminal (prints its path).",
    )
    d = Route()
    parser.add_argument("--lat", type=float, default=d.latitude, help="centre latitude")
    parser.add_argument("--lon", type=float, default=d.longitude, help="centre longitude")
    parser.add_argument("--radius", type=float, default=d.radius, help="metres")
    parser.add_argument("--speed", type=float, default=d.speed, help="m/s")
    parser.add_argument("--rate", type=float, default=1.0, help="epochs per second")
    parser.add_argument("--garbage-every", type=int, default=0, help="noise every N epochs")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    route = Route(latitude=args.lat, longitude=args.lon, radius=args.radius, speed=args.speed)
    done = threading.Event()

    def _quit(signum: int, frame: FrameType | None) -> None:
        done.set()

    signal.signal(signal.SIGINT, _quit)
    signal.signal(signal.SIGTERM, _quit)
    with NmeaPty(route, rate_hz=args.rate, garbage_every=args.garbage_every) as pty:
        print(pty.path, flush=True)
        while not done.wait(1.0):
            pass
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
