"""NMEA sentences as a receiver sends them, the replay pivot, and ready-made fixes, for the
GNSS tests."""

from __future__ import annotations

import datetime as dt
import functools
import operator

from eccm.clock import FakeClock
from eccm.gnss.fix import Fix

# The captures (2007-2019) and the sentences of the decoder tests (2004, 1999) predate this
# release, so the decoder would take them for GPS week rollovers: they are replayed with a
# pivot of their time, as gpsd's regression tests replay theirs (test_gnss_rollover tests
# the pivot). Before every capture's date, and within one rollover period (DATE_HORIZON) of
# the latest.
REPLAY_PIVOT = dt.date(2000, 1, 1)


def sentence(body: str) -> bytes:
    """``$body*CS`` with the NMEA checksum: the XOR of every character between '$' and '*'."""
    checksum = functools.reduce(operator.xor, body.encode("ascii"), 0)
    return f"${body}*{checksum:02X}\r\n".encode("ascii")


def rmc(when: dt.datetime) -> bytes:
    return sentence(
        f"GPRMC,{when:%H%M%S}.00,A,4807.038,N,01131.000,E,022.4,084.4,{when:%d%m%y},,,A"
    )


def gga(when: dt.datetime) -> bytes:
    return sentence(f"GPGGA,{when:%H%M%S}.00,4807.038,N,01131.000,E,1,08,0.9,545.4,M,46.9,M,,")


def epoch(when: dt.datetime) -> bytes:
    """What a receiver sends for one second: its RMC (with the date) and its GGA."""
    return rmc(when) + gga(when)


def good_fix(clock: FakeClock, gnss_time: float, latency: float = 0.0) -> Fix:
    """A valid fix at ``gnss_time``, read ``latency`` seconds after the instant it describes."""
    return Fix(
        time_utc=gnss_time - latency,
        latitude=45.0,
        longitude=7.0,
        altitude=300.0,
        speed=12.0,
        track=90.0,
        quality=1,
        satellites=9,
        hdop=0.8,
        received=clock.monotonic(),
        received_wall=clock.time(),
    )
