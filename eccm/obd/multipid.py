"""Several mode 01 PIDs in one request, and the answer cut back into one per PID. Pure.

SAE J1979 lets a tester on CAN (ISO 15765-4) ask for up to six mode 01 PIDs at once
(``010C0D05``). Each ECU answers with one message: ``41``, then for every PID it
supports the PID byte and its data bytes, in a single CAN frame or in several (ISO-TP)
that python-OBD's CAN protocol object already reassembles into one ``Message`` per ECU.
What python-OBD lacks is the cut: here each message becomes one ``Message`` per PID,
shaped exactly like the answer to a single-PID request, so that python-OBD's own
command decoders (``OBDCommand.__call__``) read it. Nothing here decodes a value.

The ELM327 response-count digit is learnt here too (``ResponseCounts``): a request that
ends in one hex digit n makes the adapter return after n lines instead of waiting out its
timeout for ECUs that will never answer.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from obd.protocols.protocol import Message

MAX_PIDS = 6  # SAE J1979: at most six PIDs per mode 01 request
MODE01 = 0x01
MODE01_ANSWER = 0x41
NEGATIVE_ANSWER = 0x7F
_ANSWER_BYTE = bytes((MODE01_ANSWER,))
# ELM327 protocol numbers of ISO 15765-4 (CAN 11/29 bit, 500/250 kbaud). J1939 ("A")
# is not OBD mode 01, and the older protocols (J1850, ISO 9141-2, KWP2000) allow one PID
# per request.
CAN_PROTOCOLS = frozenset({"6", "7", "8", "9"})
MAX_COUNT_DIGIT = 0xF

# Adapter lines (not OBD data) that mean the adapter has lost the car or itself: the
# link starts over. NO DATA, CAN ERROR or BUS INIT errors only mean a silent car.
_ADAPTER_LOST = ("UNABLE TO CONNECT", "LV RESET", "ACT ALERT", "ELM327")


def allows_multi_pid(protocol_id: str | None) -> bool:
    """True for the CAN protocols, where one request may carry several PIDs."""
    return (protocol_id or "").upper() in CAN_PROTOCOLS


def is_pid_value(cmd: Any) -> bool:
    """A mode 01 command with a PID, whose answer can share a request with others."""
    return bool(cmd.mode == MODE01 and cmd.pid is not None and cmd.bytes >= 2 and cmd.pid <= 0xFF)


def pid_request(cmds: Sequence[Any], count: int | None = None) -> bytes:
    """The request for these mode 01 commands (``b"010C0D"``), with the count digit if any."""
    return _pid_request(tuple(cmds), count)


# A row asks the same few groups again and again: each request is built once.
@functools.lru_cache(maxsize=256)
def _pid_request(cmds: tuple[Any, ...], count: int | None) -> bytes:
    if not 1 <= len(cmds) <= MAX_PIDS:
        raise ValueError(f"a mode 01 request carries 1 to {MAX_PIDS} PIDs, not {len(cmds)}")
    if not all(is_pid_value(c) for c in cmds):
        raise ValueError("only mode 01 PIDs can share a request")
    if len({c.pid for c in cmds}) != len(cmds):
        raise ValueError("a PID appears twice in one request")
    text = "01" + "".join(f"{c.pid:02X}" for c in cmds)
    if count is not None:
        if not 1 <= count <= MAX_COUNT_DIGIT:
            raise ValueError(f"the response count is one hex digit, 1 to F, not {count}")
        text += f"{count:X}"
    return text.encode("ascii")


# One ECU's answer to one PID, shaped like its answer to that PID alone: (the ECU, as
# python-OBD's protocol object tagged it; the bytes 41 PID data...; the frames it came in).
Part = tuple[int, bytes, list[Any]]


@dataclass(frozen=True)
class Answer:
    """One request's answer, cut per PID."""

    parts: Mapping[str, list[Part]]  # name → one part per ECU that gave it
    missing: tuple[str, ...]  # names asked that no ECU answered
    frames: int  # lines of OBD data received (what the response-count digit counts)
    adapter_text: tuple[str, ...] = ()  # lines that are not OBD data: NO DATA, ?, ...
    negative: tuple[str, ...] = ()  # negative answers as hex, e.g. "7F 01 12"
    extra: int = 0  # bytes after the last PID that belong to none asked (ignored)

    @functools.cached_property
    def messages(self) -> dict[str, list[Message]]:
        """name → one python-OBD ``Message`` per ECU, as its answer to that PID alone.

        Built when asked: the rows' values come from :class:`eccm.obd.values.ReadingCache`,
        which makes messages only for an answer it has not decoded before.
        """
        return {name: messages_of(parts) for name, parts in self.parts.items()}

    @property
    def complete(self) -> bool:
        return not self.missing

    @property
    def answered(self) -> bool:
        return bool(self.parts)

    @property
    def adapter_lost(self) -> str | None:
        """The adapter's line when it says it lost the car or restarted, else None."""
        for line in self.adapter_text:
            if any(mark in line.upper() for mark in _ADAPTER_LOST):
                return line
        return None

    @property
    def refused(self) -> bool:
        """The adapter did not understand the request ("?")."""
        return any(line.strip() == "?" for line in self.adapter_text)

    def problem(self) -> str | None:
        """Why the answer is not complete, in words for a log line (None when it is)."""
        if self.complete:
            return None
        parts = []
        if self.negative:
            parts.append(f"negative answer {', '.join(self.negative)}")
        if self.adapter_text:
            parts.append(" / ".join(self.adapter_text))
        if self.parts:
            parts.append(f"no value for {', '.join(self.missing)}")
        return "; ".join(parts) or "no answer"


def messages_of(parts: Sequence[Part]) -> list[Message]:
    """python-OBD messages of the parts of one PID (one per ECU)."""
    out = []
    for ecu, data, frames in parts:
        message = Message(frames)
        message.ecu = ecu
        message.data = bytearray(data)
        out.append(message)
    return out


@dataclass(frozen=True)
class Cut:
    """How to cut an answer to some PIDs: PID → (name, data bytes), names in order."""

    sizes: Mapping[int, tuple[str, int]]
    names: tuple[str, ...]


@functools.lru_cache(maxsize=256)
def _cut(cmds: tuple[Any, ...]) -> Cut:
    # python-OBD counts the mode and PID bytes in a command's size.
    return Cut({c.pid: (c.name, c.bytes - 2) for c in cmds}, tuple(c.name for c in cmds))


def cut_for(cmds: Sequence[Any]) -> Cut:
    """The cut of an answer to ``cmds`` (made once per distinct group)."""
    return _cut(tuple(cmds))


def split_answer(messages: Iterable[Message], cmds: Sequence[Any] | Cut) -> Answer:
    """Cut the messages python-OBD parsed from one mode 01 answer into one list per PID.

    Every message (one per ECU) is walked PID by PID using python-OBD's data length of
    each command asked; a PID byte that was not asked, or data cut short, ends the walk:
    what was read before stands, the rest of that message is ignored. An ECU that
    repeats a PID in its message is read once.
    """
    cut = cmds if isinstance(cmds, Cut) else cut_for(cmds)
    sizes = cut.sizes
    out: dict[str, list[Part]] = {}
    texts: list[str] = []
    negative: list[str] = []
    frames = 0
    extra = 0
    for message in messages:
        data = bytes(message.data)
        if not data:
            text = message.raw().strip()
            if text:
                texts.append(text)
            continue
        frames += len(message.frames)
        if data[0] == NEGATIVE_ANSWER:
            negative.append(data[:3].hex(" ").upper())
            continue
        if data[0] != MODE01_ANSWER:
            extra += len(data)
            continue
        seen: set[int] = set()
        pos = 1
        end = len(data)
        while pos < end:
            pid = data[pos]
            known = sizes.get(pid)
            if known is None or pid in seen:
                break
            name, size = known
            stop = pos + 1 + size
            if stop > end:
                break
            seen.add(pid)
            part = (message.ecu, _ANSWER_BYTE + data[pos:stop], message.frames)
            got = out.get(name)
            if got is None:
                out[name] = [part]
            else:
                got.append(part)
            pos = stop
        extra += end - pos
    missing = tuple(name for name in cut.names if name not in out)
    return Answer(out, missing, frames, tuple(texts), tuple(negative), extra)


def decode(answer: Answer, cmds: Sequence[Any]) -> dict[str, Any]:
    """name → python-OBD OBDResponse, decoded by the command's own decoder.

    Names without a value are left out. A decoder may raise on odd data: the caller
    decides what an undecodable value is.
    """
    messages = answer.messages
    return {c.name: c(messages[c.name]) for c in cmds if c.name in messages}


class ResponseCounts:
    """The ELM327 response-count digit for each request, learnt from complete answers.

    Without it the adapter waits out its timeout after the last answer, in case another
    ECU answers too; with it, it returns at once after that many lines. The digit is the
    most lines a complete answer brought so far (ECUs that answer only sometimes are
    waited for), learnt from a request without the digit and used from the next one on.
    A request whose counted form the adapter refuses or that then comes back incomplete
    is never counted again. An adapter that answers "?" to the digit after one PID (older
    than v1.3, or a clone that does not know it) has ``enabled`` turned off by the reader:
    no request is counted any more.
    """

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled
        # Off once the adapter said "?" to a counted request for several PIDs: its parser
        # takes the digit after one PID only (the ELM327 emulator is such an adapter).
        self.several_pids = True
        self._lines: dict[bytes, int] = {}
        self._refused: set[bytes] = set()

    def digit(self, request: bytes) -> int | None:
        """The digit to append to ``request`` (None: send it as it is)."""
        if not self.enabled or request in self._refused:
            return None
        if len(request) > 4 and not self.several_pids:
            return None
        lines = self._lines.get(request)
        if lines is None or not 1 <= lines <= MAX_COUNT_DIGIT:
            return None
        return lines

    def learn(self, request: bytes, lines: int) -> None:
        """A complete answer to ``request`` came in ``lines`` lines."""
        if lines > self._lines.get(request, 0):
            self._lines[request] = lines

    def refuse(self, request: bytes) -> bool:
        """Never count ``request`` again; True the first time (for a log line)."""
        if request in self._refused:
            return False
        self._refused.add(request)
        return True

    def refused(self) -> frozenset[bytes]:
        return frozenset(self._refused)
