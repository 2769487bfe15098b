"""python-OBD values → plain cells (numbers or text), units and descriptions. Pure.

python-OBD decodes answers into pint Quantities, strings, bytearrays, tuples and a few
objects of its own (Status, BitArray, Monitor). Files and the socket want a plain number
with its unit kept apart, or a short text: never a Quantity, a Python ``None`` or a repr.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Sequence
from typing import Any

import obd
from obd import decoders
from obd.OBDResponse import Status
from obd.protocols.protocol import Message

from eccm.obd.multipid import Part, messages_of
from eccm.sample import Plain, Reading

# Decoders of mode 01 PIDs that do not give a value worth a column: the support bitmaps,
# the monitor status (read by the DTC request instead), the freeze-frame DTC, and the
# PIDs python-OBD does not decode at all.
_NOT_VALUES = (decoders.pid, decoders.status, decoders.single_dtc, decoders.drop)

# Units python-OBD does not let us find by decoding a zero answer (its decoder reads the
# adapter's raw text, not OBD bytes).
_KNOWN_UNITS = {"ELM_VOLTAGE": "volt"}

_ADDRESS_REPR = re.compile(r" at 0x[0-9a-fA-F]+")
_DTC_CODE = re.compile(r"[PCBU][0-9A-F]{4}")


def known_command(name: str) -> bool:
    """True when python-OBD has a command of this name (e.g. RPM)."""
    return bool(obd.commands.has_name(name))


def is_mode01_value(cmd: Any) -> bool:
    """A mode 01 PID that reads a value (not a support bitmap, STATUS or FREEZE_DTC)."""
    return bool(cmd.mode == 1 and cmd.decode not in _NOT_VALUES)


def is_loggable(cmd: Any) -> bool:
    """May be a column: a mode 01 value, its mode 02 freeze-frame twin, or the adapter voltage."""
    if cmd.name in _KNOWN_UNITS:
        return True
    return bool(cmd.mode in (1, 2) and cmd.decode not in _NOT_VALUES)


def is_readable(cmd: Any) -> bool:
    """May be read on demand: anything but the one python-OBD command that changes the car."""
    return bool(cmd.mode != 4)


def _pid_order(cmd: Any) -> tuple[int, int, str]:
    return (cmd.mode if cmd.mode is not None else 99, cmd.pid or 0, cmd.name)


def pid_order(cmds: Sequence[Any]) -> list[Any]:
    """Commands sorted by mode and PID (the order a scan tool lists them)."""
    return sorted(cmds, key=_pid_order)


@functools.lru_cache(maxsize=512)
def _unit_of(cmd: Any) -> str:
    if cmd.name in _KNOWN_UNITS:
        return _KNOWN_UNITS[cmd.name]
    if cmd.mode is None:
        return ""
    # A zero answer of the right length through python-OBD's own decoder gives the unit
    # it will use for real answers, without a table of our own to keep in step.
    head = bytearray([(cmd.mode | 0x40) & 0xFF])
    if cmd.pid is not None:
        head.append(cmd.pid & 0xFF)
    msg = Message([])
    msg.data = head + bytearray(max(0, cmd.bytes - len(head)))
    try:
        value = cmd.decode([msg])
    except Exception:  # a decoder that cannot take a zero answer: unit unknown
        return ""
    return str(value.units) if isinstance(value, obd.Unit.Quantity) else ""


def describe(cmd: Any, sample: object = None) -> tuple[str, str]:
    """(unit, description) of a python-OBD command; the unit is "" for text values.

    ``sample`` is a decoded value when one is at hand: its unit wins.
    """
    if isinstance(sample, obd.Unit.Quantity):
        return str(sample.units), str(cmd.desc)
    return _unit_of(cmd), str(cmd.desc)


def to_reading(value: object, at: float) -> Reading:
    """A python-OBD value as a Reading: a number with its unit apart, or text, or None."""
    if isinstance(value, obd.Unit.Quantity):
        return Reading(_number(value.magnitude), unit_text(value), at)
    return Reading(plain(value), None, at)


# Unit texts by pint's unit container: formatting a unit ("revolutions_per_minute") costs
# pint more than decoding the value, and a handful of units cover every command.
_UNIT_TEXTS: dict[object, str] = {}


def unit_text(quantity: Any) -> str:
    """``str(quantity.units)``, formatted once per unit."""
    key = getattr(quantity, "_units", None)
    if key is None:
        return str(quantity.units)
    try:
        return _UNIT_TEXTS[key]
    except KeyError:
        if len(_UNIT_TEXTS) >= 256:  # python-OBD has a few dozen units: never in practice
            _UNIT_TEXTS.clear()
        text = _UNIT_TEXTS[key] = str(quantity.units)
        return text
    except TypeError:  # not hashable after all: no cache
        return str(quantity.units)


def reading_of(response: Any, at: float) -> Reading:
    """The Reading of a python-OBD OBDResponse (fixes python-OBD's encoded strings)."""
    cmd = response.command
    if cmd is not None and response.messages and _is_encoded_string(cmd):
        text = encoded_text(bytes(response.messages[0].data))
        if cmd.name == "VIN":
            text = vin_text(bytes(response.messages[0].data))
        return Reading(text, None, at)
    return to_reading(response.value, at)


def _is_encoded_string(cmd: Any) -> bool:
    decode = cmd.decode
    return isinstance(decode, functools.partial) and decode.func is decoders.decode_encoded_string


def encoded_text(data: bytes) -> str | None:
    """The text of a mode 09 string answer (VIN, calibration id) from its message bytes.

    python-OBD strips the characters '0', '1', '2', 'x' and '\\' from both ends of such
    strings (it passes them to bytes.strip as a set), which cuts "...390000" to "...39":
    the bytes are read here instead. The mode, PID and item-count bytes and the NUL
    padding are not text.
    """
    body = data[2:]
    text = "".join(chr(b) for b in body if 0x20 < b < 0x7F)
    return text or None


def vin_text(data: bytes) -> str | None:
    """The 17-character VIN from the bytes of a mode 09 PID 02 answer, or None."""
    text = encoded_text(data)
    if text is None:
        return None
    alnum = "".join(c for c in text if c.isalnum()).upper()
    return alnum[-17:] if alnum else None


def _number(magnitude: object) -> Plain:
    if isinstance(magnitude, bool):
        return int(magnitude)
    if isinstance(magnitude, int | float):
        return magnitude
    try:
        number = float(magnitude)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return plain(magnitude)
    return number if math.isfinite(number) else None


def plain(value: object) -> Plain:
    """Anything python-OBD decodes → a number, a short text or None."""
    if value is None:
        return None
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float):
        return value
    if isinstance(value, obd.Unit.Quantity):
        return _number(value.magnitude)
    text = _text(value)
    # python-OBD's str() of an empty answer is "None": never a cell.
    return None if not text or text == "None" else text


def _text(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int | float):
        return repr(value) if isinstance(value, float) else str(value)
    if isinstance(value, obd.Unit.Quantity):
        return f"{value.magnitude} {value.units}"
    if isinstance(value, bytes | bytearray):
        return _one_line(bytes(value).replace(b"\x00", b"").decode("utf-8", "replace"))
    if isinstance(value, str):
        return _one_line(value.replace("\x00", ""))
    if isinstance(value, obd.OBDResponse):
        return _text(value.value)
    if isinstance(value, Status):
        return _status_text(value)
    if isinstance(value, tuple | list):
        return _sequence_text(value)
    text = str(value)
    if _ADDRESS_REPR.search(text):
        return type(value).__name__
    return _one_line(text)


def _one_line(text: str) -> str:
    # A cell is one line of a data file and may sit between tabs: an adapter's multi-line
    # answer becomes "a; b", and runs of white space one space.
    lines = (" ".join(line.split()) for line in text.splitlines())
    return "; ".join(line for line in lines if line)


def _status_text(status: Any) -> str:
    mil = "on" if getattr(status, "MIL", False) else "off"
    count = getattr(status, "DTC_count", 0)
    ignition = getattr(status, "ignition_type", "") or "unknown"
    return f"MIL={mil} DTC_count={count} ignition={ignition}"


def _sequence_text(items: Sequence[object]) -> str:
    # A DTC is (code, description): the code is what a cell needs.
    if len(items) == 2 and isinstance(items[0], str) and _DTC_CODE.fullmatch(items[0]):
        return items[0]
    # Flags (o2 sensors present, one tuple per bank) read best as bits.
    if items and all(isinstance(i, bool) for i in items):
        return "".join("1" if i else "0" for i in items)
    parts = [t for t in (_text(i) for i in items) if t]
    joiner = "; " if any(" " in p for p in parts) else " "
    return joiner.join(parts)


# Distinct answers a ReadingCache keeps before it starts again: RPM alone has 65,536
# possible answers, a parked value one; two thousand cover most of a drive's values.
CACHE_SIZE = 2048


class ReadingCache:
    """The Reading of an answer, decoded by python-OBD once per distinct answer.

    python-OBD's decoders are the source of truth (units, scaling), but each decode
    builds pint Quantities and formats their units: most of the CPU of a row. A decoder's
    result depends only on the command and the bytes of its messages (and the ECU that
    sent them), so the same answer is decoded once and its value and unit reused.
    tests/test_obd_values.py checks, over every mode 01 value, that a cached reading is
    the one python-OBD's decoding gives; tests/test_obd_can.py checks the rows' path
    (``reading_of_parts``) on the emulator's answers to every PID its car supports.
    """

    def __init__(self, size: int = CACHE_SIZE) -> None:
        self.size = size
        self._known: dict[tuple[Any, ...], tuple[Plain, str | None]] = {}

    def __len__(self) -> int:
        return len(self._known)

    def reading(self, cmd: Any, messages: Sequence[Message], at: float) -> Reading:
        """What ``reading_of(cmd(messages), at)`` gives; a decoder's error is raised."""
        key = (cmd.name, tuple((m.ecu, bytes(m.data)) for m in messages))
        known = self._known.get(key)
        if known is None:
            return self._decode(key, cmd, list(messages), at)
        return Reading(known[0], known[1], at)

    def reading_of_parts(self, cmd: Any, parts: Sequence[Part], at: float) -> Reading:
        """The same for the parts of a cut answer (``multipid.split_answer``): their
        messages are made only for an answer not decoded before."""
        if len(parts) == 1:
            part = parts[0]
            key: tuple[Any, ...] = (cmd.name, ((part[0], part[1]),))
        else:
            key = (cmd.name, tuple((ecu, data) for ecu, data, _frames in parts))
        known = self._known.get(key)
        if known is None:
            return self._decode(key, cmd, messages_of(parts), at)
        return Reading(known[0], known[1], at)

    def _decode(
        self, key: tuple[Any, ...], cmd: Any, messages: list[Message], at: float
    ) -> Reading:
        fresh = reading_of(cmd(messages), at)
        if len(self._known) >= self.size:
            self._known.clear()
        self._known[key] = (fresh.value, fresh.unit)
        return fresh
