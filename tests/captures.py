"""Real receiver captures (tests/data/nmea) replayed as if the receiver were sending now.

The captures are years old: their dates would be GPS week rollovers to this release and
their times disagree with the monotonic clock. :func:`epochs` cuts a capture into the
receiver's epochs (a new one where the time of day changes), and :func:`restamp` rewrites
an epoch's times and dates to a given instant, checksums recomputed, everything else (the
order of the sentences, talkers, positions, fields a receiver leaves empty) as recorded.
"""

from __future__ import annotations

import datetime as dt
import functools
import operator
import re
from pathlib import Path

DATA = Path(__file__).parent / "data" / "nmea"

# The sentences that carry a time of day, and the field it is in (after the address).
_TIMED = {"RMC": 0, "GGA": 0, "GNS": 0, "ZDA": 0, "GLL": 4}
_SENTENCE = re.compile(rb"\$([A-Z]{2})([A-Z]{3}),([^*\r\n]*)(\*[0-9A-Fa-f]{2})?")


def stream(name: str) -> bytes:
    """The bytes the receiver sent: the capture without its '#' header lines."""
    lines = (DATA / name).read_bytes().splitlines(keepends=True)
    return b"".join(line for line in lines if not line.startswith(b"#"))


def _time_of(line: bytes) -> str | None:
    m = _SENTENCE.search(line)
    if m is None or m.group(2).decode() not in _TIMED:
        return None
    fields = m.group(3).decode("ascii", "replace").split(",")
    index = _TIMED[m.group(2).decode()]
    value = fields[index] if index < len(fields) else ""
    return value.split(".")[0] or None


def epochs(name: str) -> list[bytes]:
    """The capture cut where the time of day changes: what the receiver sent each second."""
    out: list[bytes] = []
    current: list[bytes] = []
    last: str | None = None
    for line in stream(name).splitlines(keepends=True):
        t = _time_of(line)
        if t is not None and last is not None and t != last and current:
            out.append(b"".join(current))
            current = []
        if t is not None:
            last = t
        current.append(line)
    if current:
        out.append(b"".join(current))
    return out


def _checksum(body: bytes) -> bytes:
    return b"*%02X" % functools.reduce(operator.xor, body, 0)


def _hhmmss(old: str, when: dt.datetime) -> str:
    # Keep the receiver's own number of decimals ("095255.810", "094736", "020935.000").
    decimals = len(old.split(".")[1]) if "." in old else 0
    text = when.strftime("%H%M%S")
    if decimals:
        text += "." + f"{when.microsecond / 1e6:.{decimals}f}"[2:]
    return text


def restamp(epoch: bytes, when: dt.datetime) -> bytes:
    """``epoch`` with every time of day and date set to ``when`` (UTC)."""

    def fix(m: re.Match[bytes]) -> bytes:
        kind = m.group(2).decode()
        if kind not in _TIMED:
            return m.group(0)
        fields = m.group(3).decode("ascii").split(",")
        i = _TIMED[kind]
        if i < len(fields) and fields[i]:
            fields[i] = _hhmmss(fields[i], when)
        if kind == "RMC" and len(fields) > 8 and fields[8]:
            fields[8] = when.strftime("%d%m%y")
        if kind == "ZDA" and len(fields) > 3 and fields[1]:
            fields[1:4] = [when.strftime("%d"), when.strftime("%m"), when.strftime("%Y")]
        body = m.group(1) + m.group(2) + b"," + ",".join(fields).encode("ascii")
        # A sentence sent without a checksum stays without one.
        return b"$" + body + (_checksum(body) if m.group(4) else b"")

    return _SENTENCE.sub(fix, epoch)
