"""python-OBD's parsing of ISO 15765-4 (CAN) answers, restated for the rows' requests.

python-OBD's protocol objects turn the adapter's lines into ``Message`` objects: frames
grouped by the ECU that sent them, ISO-TP multi-frame answers reassembled, each message
tagged with the ECU of python-OBD's map. Its generic code checks every character of a
line for hex in a list comprehension, goes through several layers per frame and logs as
it goes: after the serial port, the largest cost of a request (about a tenth of a row).
:func:`parse` does the same steps in the same order with the same outcome, rule for rule
(the comments name python-OBD's), for the CAN protocols only; the rows of other protocols
keep python-OBD's own object. tests/test_obd_can.py compares the two on generated
answers (single and multi-frame, several ECUs, lost, repeated and odd frames, adapter
text) and on the emulator's answers to every PID it supports.
"""

from __future__ import annotations

import itertools
import re
from binascii import unhexlify
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from obd.protocols.protocol import ECU, Frame, Message
from obd.protocols.protocol_can import CANProtocol

_SF, _FF, _CF = CANProtocol.FRAME_TYPE_SF, CANProtocol.FRAME_TYPE_FF, CANProtocol.FRAME_TYPE_CF
# python-OBD's isHex: every character one of string.hexdigits (an empty line too).
_HEX = re.compile(r"[0-9a-fA-F]*")
_TESTER = 0xF1  # python-OBD's made-up id of the tester on 11-bit CAN


def parser_for(protocol: Any) -> Callable[[Sequence[str]], list[Message]]:
    """:func:`parse` bound to a python-OBD CAN protocol object, else the object itself."""
    id_bits = getattr(protocol, "id_bits", None)
    if isinstance(protocol, CANProtocol) and id_bits in (11, 29):
        ecu_map = protocol.ecu_map

        def parse_lines(lines: Sequence[str]) -> list[Message]:
            return parse(lines, id_bits, ecu_map)

        return parse_lines
    return protocol  # type: ignore[no-any-return]


def parse(lines: Sequence[str], id_bits: int, ecu_map: Mapping[int, int]) -> list[Message]:
    """What python-OBD's CAN protocol object with ``id_bits`` and ``ecu_map`` returns."""
    by_ecu: dict[int, list[Frame]] = {}
    text: list[str] = []
    for line in lines:
        raw = line.replace(" ", "")
        if _HEX.fullmatch(raw) is None:
            text.append(line)  # the original line, spaces and all
            continue
        frame = _frame(raw, id_bits)
        if frame is not None:
            got = by_ecu.get(frame.tx_id)
            if got is None:
                by_ecu[frame.tx_id] = [frame]
            else:
                got.append(frame)
    messages = []
    for tx_id in sorted(by_ecu):
        message = Message(by_ecu[tx_id])
        if _assemble(message):
            message.ecu = ecu_map.get(tx_id, ECU.UNKNOWN)
            messages.append(message)
    for line in text:
        messages.append(Message([Frame(line)]))
    return messages


def _frame(raw: str, id_bits: int) -> Frame | None:
    """CANProtocol.parse_frame: None where it drops the frame."""
    padded = "00000" + raw if id_bits == 11 else raw  # 11-bit headers padded to 32 bits
    if len(padded) & 1:
        return None  # odd
    data = unhexlify(padded)
    if not 6 <= len(data) <= 12:
        return None  # too short for a PCI byte and one more, or too long
    pci = data[4]
    kind = pci & 0xF0
    seq_index = 0
    if kind == _SF:
        data_len: int | None = pci & 0x0F
        if data_len == 0:
            return None
    elif kind == _FF:
        data_len = ((pci & 0x0F) << 8) + data[5]
        if data_len == 0:
            return None
    elif kind == _CF:
        data_len = None
        seq_index = pci & 0x0F
    else:
        return None  # unknown PCI frame type
    # Every attribute Frame.__init__ sets, each set once (the frame is kept).
    frame = Frame.__new__(Frame)
    frame.raw = raw
    frame.data = bytearray(data[4:])
    frame.type = kind
    frame.seq_index = seq_index
    frame.data_len = data_len
    if id_bits == 11:
        frame.priority = data[2] & 0x0F
        frame.addr_mode = mode = data[3] & 0xF0
        if mode == 0xD0:
            frame.rx_id = data[3] & 0x0F
            frame.tx_id = _TESTER
        elif data[3] & 0x08:
            frame.rx_id = _TESTER
            frame.tx_id = data[3] & 0x07
        else:
            frame.tx_id = _TESTER
            frame.rx_id = data[3] & 0x07
    else:
        frame.priority = data[0]
        frame.addr_mode = data[1]
        frame.rx_id = data[2]
        frame.tx_id = data[3]
    return frame


def _assemble(message: Message) -> bool:
    """CANProtocol.parse_message: False where it gives the message up."""
    frames = message.frames
    if len(frames) == 1:
        frame = frames[0]
        if frame.type != _SF:
            return False  # a lone frame that is not a single frame
        message.data = frame.data[1 : 1 + frame.data_len]
    else:
        ff = [f for f in frames if f.type == _FF]
        cf = [f for f in frames if f.type == _CF]  # single frames among them are dropped
        if len(ff) != 1 or not cf:
            return False
        # Full sequence numbers from the low four bits, each from the one before (as
        # python-OBD does, in place).
        for prev, curr in itertools.pairwise(cf):
            seq = (prev.seq_index & ~0x0F) + curr.seq_index
            if seq < prev.seq_index - 7:
                seq += 0x10
            curr.seq_index = seq
        cf = sorted(cf, key=lambda f: f.seq_index)
        if [f.seq_index for f in cf] != list(range(1, len(cf) + 1)):
            return False  # python-OBD's contiguous(indices, 1, len(cf)): a frame missing
        data = ff[0].data[2:]
        for f in cf:
            data += f.data[1:]
        message.data = data[: ff[0].data_len]
    data = message.data
    if data[0] == 0x43:
        # Mode 03 answers are cut to their DTC count (python-OBD does it here too).
        message.data = data[: data[1] * 2 + 2]
    return True
