"""NMEA sentences as a receiver sends them, and the replay pivot, for the GNSS tests."""

from __future__ import annotations

import datetime as dt
import functools
import operator

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
