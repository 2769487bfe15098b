"""The rows' mode 01 requests on python-OBD's open port, without python-OBD's per-request cost.

python-OBD's ``query`` is correct but costs about a tenth of a millisecond of CPU per
request at full rate, most of a row: it formats log lines that are not logged, reads the
port one pyserial ``read`` per burst (a select, a Timeout object and a size check each,
first one byte, then what is waiting), strips NULs with a regular expression, waits for
the output to drain (tcdrain) and checks every character of every line for hex. For the
requests of every row (several mode 01 PIDs at once) :class:`Wire` does the same exchange
on python-OBD's already open port: write the request, read in blocks until the prompt
``>``, cut the lines exactly as python-OBD does (:func:`lines_of`), and parse them into
python-OBD's messages as its protocol object does, with the ECU map it built at
connection (:mod:`eccm.obd.can`). Everything else (connecting, discovery, DTCs, on-demand reads,
the adapter's own commands) goes through python-OBD's ``query``.

The exchange keeps the link's guards: a line silent for ``silence`` seconds ends the
read (a hung adapter, or one pulled out of the OBD socket, is found within seconds), and
a port that fails (a USB adapter unplugged: select says readable, read says nothing, or
EIO) is reported as the adapter gone, as python-OBD reports it.
"""

from __future__ import annotations

import logging
import os
import select
import termios
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import serial
from obd.protocols.protocol import Message
from obd.utils import OBDStatus

from eccm.obd.can import parser_for

log = logging.getLogger(__name__)

PROMPT = b">"
READ_SIZE = 4096  # an answer of six PIDs on CAN is about a hundred bytes


@dataclass(frozen=True)
class Reply:
    """What came back for one request."""

    lines: list[str]  # the adapter's lines, as python-OBD's ELM327 reader gives them
    gone: str | None = None  # the port failed: the adapter is gone (why)


def lines_of(buffer: bytes) -> list[str]:
    """The lines of an adapter's answer, exactly as python-OBD's ``ELM327.__read`` cuts
    them: NULs dropped, a final prompt dropped, split at CR and LF, empty pieces left out
    before each is stripped (so a piece of spaces becomes an empty line, as there)."""
    buffer = buffer.replace(b"\x00", b"")
    if buffer.endswith(PROMPT):
        buffer = buffer[:-1]
    text = buffer.decode("utf-8", "ignore")
    return [piece.strip() for piece in text.replace("\n", "\r").split("\r") if piece]


class Wire:
    """Requests on python-OBD's open port (see the module docstring).

    Built by :meth:`attach`, which gives None for a connection that is not python-OBD's
    ELM327 on a local serial port (the caller then uses ``query``).
    """

    def __init__(self, conn: Any, interface: Any, port: Any, fd: int) -> None:
        self._conn = conn
        self._interface = interface
        self._port = port
        self._fd = fd
        self._poll = select.poll()
        self._poll.register(fd, select.POLLIN)
        self._protocol: Any = interface._ELM327__protocol
        self._parser = parser_for(self._protocol)

    @classmethod
    def attach(cls, conn: Any) -> Wire | None:
        """A Wire on ``conn``'s port, or None when the port is not a local serial one."""
        interface = getattr(conn, "interface", None)
        port = getattr(interface, "_ELM327__port", None)
        # serial_for_url may give a socket or an RFC 2217 port: those stay with python-OBD.
        if not isinstance(port, serial.Serial) or not port.is_open:
            return None
        try:
            fd = port.fileno()
        except (AttributeError, serial.SerialException, OSError):
            return None
        if not isinstance(fd, int):
            return None
        return cls(conn, interface, port, fd)

    def usable(self, header: bytes) -> bool:
        """The request may go on the wire: python-OBD still holds the same open port, is
        connected, not in low power, and the adapter is set to send to ``header``."""
        interface = self._interface
        return bool(
            self._conn.interface is interface
            and interface._ELM327__port is self._port
            and self._port.is_open
            and interface._ELM327__status != OBDStatus.NOT_CONNECTED
            and not interface._ELM327__low_power
            and self._conn._OBD__last_header == header
        )

    def parser(self) -> Callable[[Sequence[str]], list[Message]]:
        """Lines into python-OBD messages, as this connection's protocol object makes them
        (:func:`eccm.obd.can.parse` on CAN, the object itself on the older protocols)."""
        protocol = self._interface._ELM327__protocol
        if protocol is not self._protocol:
            self._protocol = protocol
            self._parser = parser_for(protocol)
        return self._parser

    def exchange(self, request: bytes, silence: float) -> Reply:
        """Send ``request`` and read the answer up to the prompt, or until the line was
        silent for ``silence`` seconds."""
        fd = self._fd
        try:
            # What is left of an earlier answer (cut short by a silence) must not be
            # taken for this one's (python-OBD flushes the input the same way).
            termios.tcflush(fd, termios.TCIFLUSH)
            self._write(request + b"\r", silence)
        except (OSError, termios.error) as exc:  # termios.error is not an OSError
            return Reply([], f"device disconnected while writing ({exc})")
        buffer = b""
        wait_ms = max(1, int(silence * 1000))
        poll = self._poll.poll
        while True:
            if not poll(wait_ms):
                break  # silent for `silence`: what came so far is the answer
            try:
                chunk = os.read(fd, READ_SIZE)
            except BlockingIOError:
                continue
            except OSError as exc:
                return Reply(lines_of(buffer), f"device disconnected while reading ({exc})")
            if not chunk:
                # Linux reports a vanished USB serial device as always readable with
                # nothing to read (pyserial says so in the same words).
                return Reply(lines_of(buffer), "device disconnected while reading")
            buffer += chunk
            if PROMPT in chunk:
                break
        return Reply(lines_of(buffer))

    def _write(self, data: bytes, silence: float) -> None:
        fd = self._fd
        while data:
            try:
                written = os.write(fd, data)
            except BlockingIOError:
                written = 0
            data = data[written:]
            if data:
                _, ready, _ = select.select([], [fd], [], silence)
                if not ready:
                    raise OSError("the port took no output for a while")
