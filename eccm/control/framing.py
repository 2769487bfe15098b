"""Lines out of a byte stream, with the control socket's limits (SPEC §5).

Hand-written rather than taken from a library: it is a few lines, and the limits (256 bytes
before AUTH, 1024 after, judged on the bytes as they arrive so that 4 MiB without a newline
is never buffered) are the point of it. pyserial's ``LineReader`` is the shape: framing
apart from whatever reads the socket and from what a line means.
"""

from __future__ import annotations

import enum

_TLS_RECORD = b"\x16\x03"  # a TLS handshake record: a TLS client on the plain-text port


class Framing(enum.Enum):
    """Input that can never become a line: the connection ends after saying so."""

    TOO_LONG = "too long"
    TLS = "TLS"


class LineReader:
    """Bytes in (:meth:`feed`), lines out (:meth:`next_line`), LF or CRLF."""

    def __init__(self) -> None:
        self._buf = bytearray()
        self.eof = False  # the peer closed its side
        self._started = False  # a first line was taken: TLS is no longer sniffed

    def feed(self, data: bytes) -> None:
        """Bytes from the peer; ``b""`` means the peer closed its side."""
        if data:
            self._buf += data
        else:
            self.eof = True

    def clear(self) -> None:
        self._buf.clear()

    def wants(self, limit: int) -> bool:
        """Whether more bytes could be of use now: not once a line is complete (it is
        handled first), nor past the limit (the line is too long whatever follows)."""
        return not self.eof and b"\n" not in self._buf and len(self._buf) <= limit + 1

    def next_line(self, limit: int) -> bytes | Framing | None:
        """The next line without its LF or CRLF, a :class:`Framing` error, or None until
        more bytes (or the end) come."""
        if not self._started and self._buf[:2] == _TLS_RECORD:
            return Framing.TLS
        nl = self._buf.find(b"\n")
        if nl < 0:
            # +1: the CR of a CRLF may be all that is missing.
            return Framing.TOO_LONG if len(self._buf) > limit + 1 else None
        line = bytes(self._buf[:nl])
        del self._buf[: nl + 1]
        if line.endswith(b"\r"):
            line = line[:-1]
        if len(line) > limit:
            return Framing.TOO_LONG
        self._started = True
        return line
