"""python-OBD values → plain cells, through python-OBD's own decoders (no adapter)."""

from __future__ import annotations

import math
import re
from typing import Any

import obd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from obd.protocols.protocol import Message

from eccm.obd.values import (
    ReadingCache,
    describe,
    encoded_text,
    is_loggable,
    is_mode01_value,
    is_readable,
    known_command,
    plain,
    reading_of,
    to_reading,
    unit_text,
    vin_text,
)
from eccm.sample import format_value

# The answer of the emulator's car to 09 02, as python-OBD hands it to decoders (padded
# to the 22 bytes of the VIN command).
EMULATOR_VIN = b"I\x02\x01WP0ZZZ99ZTS390000\x00\x00"


def message(data: bytes) -> Message:
    msg = Message([])
    msg.data = bytearray(data)
    msg.ecu = obd.ECU.ENGINE
    return msg


def decoded(name: str, hex_answer: str) -> Any:
    """A value decoded by python-OBD from an answer such as "41 0C 1A F8"."""
    return obd.commands[name].decode([message(bytes.fromhex(hex_answer))])


@pytest.mark.parametrize(
    ("name", "answer", "value", "unit"),
    [
        ("RPM", "41 0C 1A F8", 1726.0, "revolutions_per_minute"),
        ("SPEED", "41 0D 32", 50.0, "kilometer_per_hour"),
        ("THROTTLE_POS", "41 11 FF", 100.0, "percent"),
        ("COOLANT_TEMP", "41 05 7B", 83, "degree_Celsius"),
        ("MAF", "41 10 01 F4", 5.0, "gps"),
        ("INTAKE_PRESSURE", "41 0B 26", 38, "kilopascal"),
    ],
)
def test_quantities_become_a_number_and_python_obds_unit_name(
    name: str, answer: str, value: float, unit: str
) -> None:
    reading = to_reading(decoded(name, answer), at=12.5)
    assert reading.value == pytest.approx(value)
    assert type(reading.value) in (int, float)
    assert reading.unit == unit
    assert reading.at == 12.5


def test_text_none_and_bytes() -> None:
    assert to_reading("EOBD (Europe)", 0).value == "EOBD (Europe)"
    assert to_reading("EOBD (Europe)", 0).unit is None
    assert to_reading(None, 0).value is None
    assert to_reading(bytearray(b"312J6\x00\x00"), 0).value == "312J6"
    assert to_reading(b"\x00ABC ", 0).value == "ABC"
    assert to_reading("ELM327 v1.5\r\nOK", 0).value == "ELM327 v1.5; OK"
    assert to_reading("", 0).value is None


def test_status_is_a_compact_text() -> None:
    status = decoded("STATUS", "41 01 83 07 A1 00")
    text = to_reading(status, 0).value
    assert text == "MIL=on DTC_count=3 ignition=spark"


def test_tuples_lists_and_dtcs_are_compact_texts() -> None:
    o2 = decoded("O2_SENSORS", "41 13 03")
    assert to_reading(o2, 0).value == "0000 0011"
    dtcs = decoded("GET_DTC", "43 02 01 43 01 96")
    assert to_reading(dtcs, 0).value == "P0143 P0196"
    freeze = decoded("FREEZE_DTC", "41 02 01 43")
    assert to_reading(freeze, 0).value == "P0143"
    fuel = decoded("FUEL_STATUS", "41 03 04 00")
    text = to_reading(fuel, 0).value
    assert isinstance(text, str) and text.startswith("Open loop")


def test_objects_never_leak_a_repr_with_an_address() -> None:
    class Opaque:
        pass

    assert to_reading(Opaque(), 0).value == "Opaque"
    monitor = obd.OBDResponse  # any object whose str() is a default repr would do
    assert "0x" not in str(to_reading(monitor(), 0).value)


nested = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: st.lists(children, max_size=4) | st.tuples(children, children),
    max_leaves=12,
)


@given(nested)
def test_any_decoded_shape_gives_a_plain_cell(value: object) -> None:
    cell = plain(value)
    assert cell is None or isinstance(cell, int | float | str)
    if isinstance(cell, str):
        assert cell != "None"
        assert not re.search(r" at 0x[0-9a-f]+", cell)
        assert cell == cell.strip()
        assert not set(cell) & set("\t\r\n")
    text = format_value(cell)
    assert text != "None"


def test_describe_uses_python_obds_description_and_unit() -> None:
    assert describe(obd.commands.RPM) == ("revolutions_per_minute", "Engine RPM")
    assert describe(obd.commands.COOLANT_TEMP) == ("degree_Celsius", "Engine Coolant Temperature")
    assert describe(obd.commands.FUEL_STATUS) == ("", "Fuel System Status")
    assert describe(obd.commands.ELM_VOLTAGE)[0] == "volt"
    assert describe(obd.commands.FUEL_RATE)[0] == "lph"
    sample = obd.Unit.Quantity(3.0, "volt")
    assert describe(obd.commands.O2_B1S1, sample) == ("volt", "O2: Bank 1 - Sensor 1 Voltage")


def test_known_commands_and_mode01_values() -> None:
    assert known_command("RPM")
    assert not known_command("rpm")
    assert not known_command("NOT_A_COMMAND")
    values = ["RPM", "SPEED", "COOLANT_TEMP", "FUEL_STATUS", "O2_SENSORS", "FUEL_RATE"]
    for name in values:
        assert is_mode01_value(obd.commands[name]), name
    others = [
        "PIDS_A",
        "PIDS_B",
        "STATUS",
        "STATUS_DRIVE_CYCLE",
        "FREEZE_DTC",
        "MAX_VALUES",
        "DTC_RPM",
        "GET_DTC",
        "CLEAR_DTC",
        "VIN",
        "ELM_VOLTAGE",
    ]
    for name in others:
        assert not is_mode01_value(obd.commands[name]), name


def test_loggable_and_readable() -> None:
    assert is_loggable(obd.commands.RPM)
    assert is_loggable(obd.commands.DTC_RPM)
    assert is_loggable(obd.commands.ELM_VOLTAGE)
    assert not is_loggable(obd.commands.GET_DTC)
    assert not is_loggable(obd.commands.CLEAR_DTC)
    assert not is_loggable(obd.commands.PIDS_A)
    assert is_readable(obd.commands.VIN)
    assert not is_readable(obd.commands.CLEAR_DTC)


def test_vin_is_read_from_the_answer_bytes() -> None:
    assert vin_text(EMULATOR_VIN) == "WP0ZZZ99ZTS390000"
    # Older protocols pad the front with NULs instead of an item count.
    assert vin_text(b"I\x02\x00\x00\x001G1JC5444R7252367") == "1G1JC5444R7252367"
    assert vin_text(b"I\x02\x01\x00\x00") is None
    assert encoded_text(b"I\x04\x01312J6\x00\x00") == "312J6"


def test_reading_of_a_response_keeps_the_whole_vin() -> None:
    response = obd.commands.VIN([message(EMULATOR_VIN)])
    assert reading_of(response, 1.0).value == "WP0ZZZ99ZTS390000"
    rpm = obd.commands.RPM([message(bytes.fromhex("41 0C 1A F8"))])
    assert reading_of(rpm, 2.0) == to_reading(rpm.value, 2.0)
    assert reading_of(obd.OBDResponse(), 3.0).value is None


def test_non_finite_magnitudes_stay_out_of_cells() -> None:
    reading = to_reading(obd.Unit.Quantity(float("nan"), "volt"), 0)
    assert reading.unit == "volt"
    assert reading.value is None or (isinstance(reading.value, float) and math.isnan(reading.value))
    assert format_value(reading.value) == ""


def _answer(cmd: Any, payload: bytes) -> list[Message]:
    msg = Message([])
    msg.data = bytearray([0x40 | cmd.mode, cmd.pid]) + bytearray(payload)
    msg.ecu = obd.ECU.ENGINE  # python-OBD keeps only the messages of the command's ECU
    return [msg]


CACHED_COMMANDS = [c for mode in (1, 2) for c in obd.commands.modes[mode] if c and is_loggable(c)]


@pytest.mark.parametrize("cmd", CACHED_COMMANDS, ids=lambda c: c.name)
@settings(max_examples=30)
@given(st.data())
def test_a_cached_reading_is_python_obds_decoding(cmd: Any, data: st.DataObject) -> None:
    """Every mode 01/02 value python-OBD decodes (the emulator's PIDs among them), first
    decode and cache hit alike: the same value and unit as python-OBD's own decoding."""
    size = max(0, cmd.bytes - 2)
    payload = data.draw(
        st.one_of(
            st.sampled_from([bytes(size), b"\xff" * size, bytes(range(size))]),
            st.binary(min_size=size, max_size=size),
        )
    )
    cache = ReadingCache(size=8)
    try:
        expected = reading_of(cmd(_answer(cmd, payload)), 1.0)
    except Exception:
        with pytest.raises(Exception):  # noqa: B017 - the decoder's own error, whatever it is
            cache.reading(cmd, _answer(cmd, payload), 1.0)
        return
    first = cache.reading(cmd, _answer(cmd, payload), 1.0)
    again = cache.reading(cmd, _answer(cmd, payload), 2.0)
    assert repr((first.value, first.unit)) == repr((expected.value, expected.unit))
    assert repr((again.value, again.unit, again.at)) == repr((expected.value, expected.unit, 2.0))


def test_the_answers_decode_to_values() -> None:
    """The test above compares values, not two Nones: most commands decode a zero answer."""
    decoded = [reading_of(c(_answer(c, bytes(max(0, c.bytes - 2)))), 0.0) for c in CACHED_COMMANDS]
    assert sum(r.value is not None for r in decoded) > 0.9 * len(CACHED_COMMANDS)


def test_the_cache_keeps_answers_apart_and_stays_bounded() -> None:
    rpm = obd.commands.RPM
    cache = ReadingCache(size=2)
    readings = [cache.reading(rpm, _answer(rpm, bytes([0, n])), 0.0).value for n in range(8)]
    assert readings == [n / 4 for n in range(8)]
    assert len(cache) <= 2


@given(st.floats(allow_nan=True, allow_infinity=True) | st.sampled_from([0.0, -0.0, 0.25]))
def test_a_float_cell_is_the_same_formatted_again(value: float) -> None:
    from eccm.sample import _float_cell

    assert format_value(value) == _float_cell(value)
    assert format_value(value) == _float_cell(value)  # the second time from the cache


def test_zero_and_minus_zero_keep_their_cells() -> None:
    assert [format_value(v) for v in (-0.0, 0.0, -0.0, 0.0)] == ["-0", "0", "-0", "0"]


def test_unit_texts_are_pints_own() -> None:
    """unit_text formats each unit once: the same text as pint formats every time."""
    quantities = []
    for cmd in CACHED_COMMANDS:
        for payload in (bytes(max(0, cmd.bytes - 2)), b"\x7f" * max(0, cmd.bytes - 2)):
            try:
                value = cmd(_answer(cmd, payload)).value
            except Exception:  # a decoder that cannot take this answer
                continue
            if isinstance(value, obd.Unit.Quantity):
                quantities.append(value)
    assert len({str(q.units) for q in quantities}) > 10
    for q in quantities + quantities:  # formatted, then from the cache
        assert unit_text(q) == str(q.units)
