"""Multi-PID requests and answers (pure): recorded and hand-written answers, python-OBD's
own protocol objects to parse them and its own decoders to read the values."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import obd
import pytest
from obd.protocols import ECU, ISO_15765_4_11bit_500k, ISO_15765_4_29bit_500k

from eccm.obd.multipid import (
    MAX_PIDS,
    ResponseCounts,
    allows_multi_pid,
    decode,
    is_pid_value,
    pid_request,
    split_answer,
)

DATA = Path(__file__).parent / "data" / "obd"
C = obd.commands


def records(name: str) -> dict[str, dict[str, Any]]:
    doc = json.loads((DATA / name).read_text())
    return {r["id"]: r for r in doc["records"]}


EMULATOR = records("can_answers.json")
J1979 = records("j1979_answers.json")


def protocol(record: dict[str, Any] | None = None) -> Any:
    if record is not None and record.get("protocol") == "7":
        return ISO_15765_4_29bit_500k(record["lines_0100"])
    return ISO_15765_4_11bit_500k(EMULATOR["0100"]["lines"])


def parse(record: dict[str, Any]) -> list[Any]:
    """The messages python-OBD makes of the recorded lines."""
    return protocol(record)(record["lines"])


def commands(record: dict[str, Any]) -> list[Any]:
    """The python-OBD commands of a recorded mode 01 request."""
    hexes = record["request"][2:]
    return [C[1][int(hexes[i : i + 2], 16)] for i in range(0, len(hexes) - 1, 2)]


def single(cmd: Any, data: str) -> Any:
    """python-OBD's own decoding of a single-PID answer carrying these data bytes."""
    payload = bytes([0x41, cmd.pid]) + bytes.fromhex(data)
    line = f"7E8{len(payload):02X}{payload.hex().upper()}"
    return cmd(protocol()([line])).value


def values(record: dict[str, Any]) -> dict[str, Any]:
    cmds = commands(record)
    return {n: r.value for n, r in decode(split_answer(parse(record), cmds), cmds).items()}


# -- requests ----------------------------------------------------------------------------
def test_a_request_names_up_to_six_pids_and_may_carry_the_count_digit() -> None:
    assert pid_request([C.RPM]) == b"010C"
    assert pid_request([C.RPM, C.SPEED, C.ENGINE_LOAD, C.COOLANT_TEMP]) == b"010C0D0405"
    assert pid_request([C.RPM, C.SPEED], count=3) == b"010C0D3"
    assert pid_request([C.RPM], count=12) == b"010CC"
    six = [C.RPM, C.SPEED, C.COOLANT_TEMP, C.THROTTLE_POS, C.INTAKE_TEMP, C.ENGINE_LOAD]
    assert len(six) == MAX_PIDS
    assert pid_request(six) == b"010C0D05110F04"


@pytest.mark.parametrize(
    ("cmds", "count"),
    [
        ([], None),
        (
            [C.RPM, C.SPEED, C.COOLANT_TEMP, C.THROTTLE_POS, C.INTAKE_TEMP, C.MAF, C.FUEL_LEVEL],
            None,
        ),
        ([C.RPM, C.GET_DTC], None),  # mode 03 cannot share a mode 01 request
        ([C.RPM, C.ELM_VOLTAGE], None),  # an adapter command is no PID
        ([C.RPM, C.RPM], None),
        ([C.RPM], 0),
        ([C.RPM], 16),
    ],
)
def test_requests_the_car_cannot_take_are_refused(cmds: list[Any], count: int | None) -> None:
    with pytest.raises(ValueError):
        pid_request(cmds, count)


def test_mode01_values_share_requests_and_only_on_can() -> None:
    assert is_pid_value(C.RPM) and is_pid_value(C.FUEL_STATUS)
    assert not is_pid_value(C.GET_DTC) and not is_pid_value(C.ELM_VOLTAGE)
    assert not is_pid_value(C.VIN) and not is_pid_value(C.DTC_RPM)  # modes 09 and 02
    assert all(allows_multi_pid(p) for p in "6789")
    assert not any(allows_multi_pid(p) for p in ("1", "2", "3", "4", "5", "A", "", None))


# -- recorded answers (ELM327 emulator) -------------------------------------------------
def test_single_frame_answer_is_cut_per_pid_and_read_by_python_obds_decoders() -> None:
    record = EMULATOR["two_pids_single_frame"]  # 7E8 06 41 0C 14 5F 0D 0A
    answer = split_answer(parse(record), commands(record))
    assert answer.complete and answer.frames == 1 and answer.extra == 0
    (rpm,) = answer.messages["RPM"]
    assert bytes(rpm.data) == bytes.fromhex("410C145F")
    assert rpm.ecu == ECU.ENGINE
    got = values(record)
    assert got["RPM"] == single(C.RPM, "145F") == obd.Unit.Quantity(1303.75, "rpm")
    assert got["SPEED"] == single(C.SPEED, "0A") == obd.Unit.Quantity(10, "kph")


@pytest.mark.parametrize("record_id", ["six_pids_multi_frame", "six_pids_multi_frame_no_spaces"])
def test_multi_frame_answer_is_reassembled_by_python_obd_and_cut_per_pid(record_id: str) -> None:
    record = EMULATOR[record_id]
    cmds = commands(record)
    messages = parse(record)
    assert len(messages) == 1 and len(messages[0].frames) == 3
    answer = split_answer(messages, cmds)
    assert answer.complete
    assert answer.frames == 3  # the lines the response-count digit counts
    data = bytes(messages[0].data)[1:]  # PID, value, PID, value...
    pos = 0
    for cmd in cmds:
        size = cmd.bytes - 2
        assert data[pos] == cmd.pid
        expected = single(cmd, data[pos + 1 : pos + 1 + size].hex())
        assert decode(answer, [cmd])[cmd.name].value == expected, cmd.name
        pos += 1 + size


def test_known_values_of_the_recorded_multi_frame_answer() -> None:
    got = values(EMULATOR["six_pids_multi_frame"])
    # 41 | 0C 00 00 | 0D 37 | 05 5F | 11 2B | 0F 39 | 04 FF
    assert got["RPM"].magnitude == 0
    assert got["SPEED"].magnitude == 55
    assert got["COOLANT_TEMP"].magnitude == 95 - 40
    assert got["THROTTLE_POS"].magnitude == pytest.approx(43 * 100 / 255)
    assert got["INTAKE_TEMP"].magnitude == 57 - 40
    assert got["ENGINE_LOAD"].magnitude == pytest.approx(100.0)


def test_a_pid_missing_from_the_answer_is_reported_missing() -> None:
    record = EMULATOR["pid_not_supported"]  # 010C5E: only RPM comes back
    answer = split_answer(parse(record), commands(record))
    assert answer.missing == ("FUEL_RATE",)
    assert not answer.complete and answer.answered
    assert "no value for FUEL_RATE" in (answer.problem() or "")
    assert set(decode(answer, commands(record))) == {"RPM"}


def test_no_data_is_an_unanswered_request_not_a_lost_adapter() -> None:
    for record in (EMULATOR["no_data"], EMULATOR["seven_pids"]):
        answer = split_answer(parse(record), commands(record)[:MAX_PIDS])
        assert not answer.answered and answer.frames == 0
        assert answer.adapter_text == ("NO DATA",)
        assert answer.problem() == "NO DATA"
        assert answer.adapter_lost is None and not answer.refused


def test_a_refused_count_digit_is_told_apart() -> None:
    record = EMULATOR["count_digit_on_several_pids"]
    answer = split_answer(parse(record), [C.RPM, C.SPEED])
    assert answer.refused and not answer.answered


def test_negative_answers_carry_no_value() -> None:
    record = EMULATOR["negative_single"]  # 7E8 03 7F 01 12
    answer = split_answer(parse(record), [C.RPM])
    assert answer.negative == ("7F 01 12",)
    assert answer.missing == ("RPM",)
    assert answer.problem() == "negative answer 7F 01 12"
    inside = EMULATOR["negative_inside_several"]
    answer = split_answer(parse(inside), commands(inside))
    assert answer.missing == ("RPM",)
    assert set(answer.messages) == {"SPEED"}


def test_bytes_after_the_last_pid_asked_are_ignored() -> None:
    record = EMULATOR["two_ecus_emulator_quirk"]  # 41 0C 3B 2E 04 00 | 41 04 00
    answer = split_answer(parse(record), commands(record))
    assert answer.complete
    assert answer.extra == 3
    assert values(record)["ENGINE_LOAD"].magnitude == 0


def test_two_ecus_answering_one_pid_give_two_messages_like_python_obd() -> None:
    record = EMULATOR["two_ecus_single"]
    messages = parse(record)
    answer = split_answer(messages, [C.ENGINE_LOAD])
    assert [m.tx_id for m in answer.messages["ENGINE_LOAD"]] == [m.tx_id for m in messages]
    assert decode(answer, [C.ENGINE_LOAD])["ENGINE_LOAD"].value == C.ENGINE_LOAD(messages).value


# -- hand-written answers (what the emulator cannot produce) ------------------------------
def test_each_ecu_answers_the_pids_it_has() -> None:
    for record_id in ("two_ecus_several_pids", "two_ecus_several_pids_multi_frame"):
        record = J1979[record_id]
        proto = ISO_15765_4_11bit_500k(J1979["0100_two_ecus"]["lines"])
        cmds = commands(record)
        answer = split_answer(proto(record["lines"]), cmds)
        assert answer.complete, record_id
        assert [m.ecu for m in answer.messages["SPEED"]] == [ECU.ENGINE, ECU.TRANSMISSION]
        assert len(answer.messages["RPM"]) == 1
        got = decode(answer, cmds)
        # python-OBD's decoders read the first message: the engine's, as for one PID.
        assert got["SPEED"].value.magnitude == 0x32
        assert got["RPM"].value.magnitude == 0x1AF8 / 4


def test_29_bit_can_answers_are_cut_the_same_way() -> None:
    record = J1979["29bit_multi_frame"]
    answer = split_answer(parse(record), commands(record))
    assert answer.complete and answer.frames == 3
    got = {n: r.value.magnitude for n, r in decode(answer, commands(record)).items()}
    assert got["RPM"] == 1000 and got["SPEED"] == 0 and got["ENGINE_LOAD"] == 20.0


def test_an_ecu_refusing_several_pids_answers_negatively() -> None:
    record = J1979["negative_several_pids"]
    answer = split_answer(parse(record), commands(record))
    assert not answer.answered and answer.negative == ("7F 01 12",)
    assert answer.missing == ("RPM", "SPEED", "COOLANT_TEMP")


def test_a_lost_frame_or_a_cut_answer_leaves_values_missing() -> None:
    lost = J1979["missing_consecutive_frame"]
    answer = split_answer(parse(lost), commands(lost))
    assert not answer.answered and answer.missing == tuple(c.name for c in commands(lost))
    cut = J1979["cut_short"]
    answer = split_answer(parse(cut), commands(cut))
    assert answer.missing == ("COOLANT_TEMP",)
    assert set(answer.messages) == {"RPM", "SPEED"}


def test_unable_to_connect_means_the_adapter_lost_the_car() -> None:
    record = J1979["unable_to_connect"]
    answer = split_answer(parse(record), commands(record))
    assert answer.adapter_lost == "UNABLE TO CONNECT"
    assert not answer.answered


# -- the response-count digit ------------------------------------------------------------
def test_the_count_is_learnt_from_complete_answers_and_keeps_the_most_lines() -> None:
    counts = ResponseCounts()
    request = b"010C0D05110F04"
    assert counts.digit(request) is None  # first time: no digit
    counts.learn(request, 3)
    assert counts.digit(request) == 3
    counts.learn(request, 1)  # one ECU stayed silent this time: still wait for three
    assert counts.digit(request) == 3
    counts.learn(request, 4)
    assert counts.digit(request) == 4
    counts.learn(b"0902", 16)  # too many lines for one hex digit
    assert counts.digit(b"0902") is None


def test_a_refused_count_is_never_used_again_and_counts_can_be_off() -> None:
    counts = ResponseCounts()
    counts.learn(b"010C0D", 1)
    assert counts.refuse(b"010C0D") is True
    assert counts.refuse(b"010C0D") is False  # logged once
    assert counts.digit(b"010C0D") is None
    counts.learn(b"010C0D", 1)
    assert counts.digit(b"010C0D") is None
    assert counts.refused() == {b"010C0D"}
    off = ResponseCounts(enabled=False)
    off.learn(b"010C", 1)
    assert off.digit(b"010C") is None


def test_an_adapter_that_takes_the_digit_after_one_pid_only_gets_it_there() -> None:
    counts = ResponseCounts()
    counts.learn(b"010C0D", 1)
    counts.learn(b"010C", 1)
    counts.several_pids = False
    assert counts.digit(b"010C0D") is None
    assert counts.digit(b"010C") == 1
