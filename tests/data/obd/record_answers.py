"""Records the answers in can_answers.json from the ELM327 emulator (run from the repo root).

    .venv/bin/python tests/data/obd/record_answers.py

The lines are what the adapter wrote for each request, split like python-OBD's ELM327
reader splits them (prompt removed, one entry per line, empty lines dropped).
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import serial
from elm.obd_message import NA, ObdMessage

from eccm.sim.car import emulated_car

OUT = Path(__file__).with_name("can_answers.json")


def exchange(port: serial.Serial, request: str) -> list[str]:
    port.write(request.encode() + b"\r")
    buffer = b""
    while not buffer.endswith(b">"):
        buffer += port.read(port.in_waiting or 1)
    text = buffer[:-1].decode()
    return [line.strip() for line in re.split("[\r\n]", text) if line.strip()]


def main() -> None:
    records: list[dict[str, Any]] = []

    def record(port: serial.Serial, name: str, request: str, settings: str, note: str) -> None:
        lines = exchange(port, request)
        records.append(
            {"id": name, "request": request, "settings": settings, "lines": lines, "note": note}
        )

    with emulated_car("car") as emu:
        port = serial.Serial(os.path.realpath(emu.get_pty()), timeout=5)
        for setup in ("ATZ", "ATE0", "ATH1", "ATL0", "ATSP6"):
            exchange(port, setup)
        record(port, "0100", "0100", "ATH1 ATS1", "the answer python-OBD builds its protocol from")
        record(port, "two_pids_single_frame", "010C0D", "ATH1 ATS1", "RPM and SPEED in one frame")
        record(
            port,
            "six_pids_multi_frame",
            "010C0D05110F04",
            "ATH1 ATS1",
            "RPM, SPEED, COOLANT_TEMP, THROTTLE_POS, INTAKE_TEMP, ENGINE_LOAD: three ISO-TP frames",
        )
        exchange(port, "ATS0")
        record(
            port,
            "six_pids_multi_frame_no_spaces",
            "010C0D05110F04",
            "ATH1 ATS0",
            "the same request with spaces off",
        )
        record(
            port,
            "pid_not_supported",
            "010C5E",
            "ATH1 ATS0",
            "FUEL_RATE (5E) is not supported: the ECU answers RPM only",
        )
        record(
            port,
            "seven_pids",
            "010C0D05110F0401",
            "ATH1 ATS0",
            "more than six PIDs: the emulator says NO DATA",
        )
        record(
            port,
            "count_digit_on_several_pids",
            "010C0D1",
            "ATH1 ATS0",
            "the emulator does not take a response-count digit after several PIDs",
        )
        emu.answer["RPM"] = NA("12")
        record(port, "negative_single", "010C", "ATH1 ATS0", "RPM refused: 7F 01 12")
        record(
            port,
            "negative_inside_several",
            "010C0D",
            "ATH1 ATS0",
            "RPM refused inside a request for two PIDs: the ECU answers SPEED only",
        )
        emu.answer.clear()
        # ENGINE_LOAD's fourth answer comes from two ECUs (7E8 and 7EA).
        while emu.counters.get("ENGINE_LOAD", 0) < 3:
            exchange(port, "0104")
        record(port, "two_ecus_single", "0104", "ATH1 ATS0", "ENGINE_LOAD from 7E8 and 7EA")
        answers = len(ObdMessage["car"]["ENGINE_LOAD"]["Response"])
        while emu.counters.get("ENGINE_LOAD", 0) % answers != 3:
            exchange(port, "0104")
        record(
            port,
            "two_ecus_emulator_quirk",
            "010C04",
            "ATH1 ATS0",
            "the emulator joins the two ECUs' answers to ENGINE_LOAD into 7E8's message: "
            "bytes after the last PID asked",
        )
        emu.set_sorted_obd_msg("engineoff")
        record(port, "no_data", "010C0D", "ATH1 ATS0", "engine off: NO DATA")
        port.close()
    OUT.write_text(
        json.dumps(
            {
                "source": "ELM327-emulator 4.0.0, scenario 'car', protocol 6 (CAN 11/500)",
                "records": records,
            },
            indent=1,
        )
        + "\n"
    )


if __name__ == "__main__":
    main()
