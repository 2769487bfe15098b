"""Multi-PID requests, their fallback and the adapter's own failures, against the ELM327
emulator (a real python-OBD peer on a pseudo-terminal).

The emulator answers a multi-PID request by answering each PID inside it: its request
counter ``commands`` grows by one for the request plus one per PID, and each PID's own
counter by one. So over a window ``commands - sum(PID counters)`` is the number of
multi-PID requests it received, and ``sum(PID counters)`` the number of values it gave.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import obd
import pytest
from elm.obd_message import ST

import eccm.obd.adapter
from eccm.clock import SystemClock
from eccm.obd.adapter import CHECKS_TO_ACCEPT, answers_mode01
from eccm.obd.link import ObdLink
from tests.emulator import emulated_car
from tests.obd_helpers import (
    WAIT,
    Collector,
    config,
    hidden_from_multi_pid,
    make_hub,
    refuse_multi_pid,
)
from tests.waiting import wait_until

FAST = ("RPM", "SPEED", "THROTTLE_POS", "COOLANT_TEMP", "INTAKE_TEMP", "MAF")


def snapshot(link: ObdLink, emu: Any) -> tuple[dict[str, Any], int]:
    """The emulator's counters and the rows, taken in the link thread between two rows
    (no request in flight). A priority request waits its whole timeout for its turn: a
    loaded machine makes it late, never refused."""
    return link.submit(lambda conn: (dict(emu.counters), link.rows), WAIT, priority=True).result(
        WAIT
    )


def requests_between(
    before: tuple[dict[str, Any], int], after: tuple[dict[str, Any], int]
) -> tuple[int, int, int]:
    """(rows, multi-PID requests, values) the emulator answered between two snapshots."""
    (c0, rows0), (c1, rows1) = before, after
    values = sum(c1.get(name, 0) - c0.get(name, 0) for name in FAST)
    commands = c1["commands"] - c0["commands"]
    return rows1 - rows0, commands - values, values


@pytest.fixture
def records(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    caplog.set_level(logging.INFO, logger="eccm")
    yield caplog


def ours(caplog: pytest.LogCaptureFixture, level: int) -> list[str]:
    return [
        r.getMessage() for r in caplog.records if r.name.startswith("eccm.") and r.levelno == level
    ]


def test_six_fast_values_are_one_request_per_row_on_can() -> None:
    with emulated_car() as emu:
        cfg = config(
            OBD_INTERFACE=emu.get_pty(),
            OBD_PROTOCOL="6",
            OBD_FAST_COMMANDS=",".join(FAST),
            OBD_SLOW_COMMANDS="",
            SAMPLE_INTERVAL="0.02",
        )
        hub, rows = make_hub()
        link = ObdLink(cfg, hub, SystemClock())
        link.start()
        try:
            rows.wait_rows(10)  # past learning the count digit (which the emulator refuses)
            before = snapshot(link, emu)
            rows.wait_rows(20)
            after = snapshot(link, emu)
            sample = rows.samples[-1]
        finally:
            link.stop()
    count, multi, values = requests_between(before, after)
    assert count >= 20
    assert multi == count  # one request per row...
    assert values == len(FAST) * count  # ...carrying the six values
    assert set(sample.values) == set(FAST)
    assert all(isinstance(r.value, float | int) for r in sample.values.values())
    assert link.single_pid_groups == []


def test_an_ecu_refusing_several_pids_is_read_one_pid_per_request(
    records: pytest.LogCaptureFixture,
) -> None:
    with emulated_car() as emu:
        refuse_multi_pid(emu)
        cfg = config(
            OBD_INTERFACE=emu.get_pty(),
            OBD_PROTOCOL="6",
            OBD_FAST_COMMANDS=",".join(FAST),
            OBD_SLOW_COMMANDS="",
            SAMPLE_INTERVAL="0.02",
        )
        hub, rows = make_hub()
        link = ObdLink(cfg, hub, SystemClock())
        link.start()
        try:
            first = rows.wait_rows(3)
            wait_until(lambda: link.single_pid_groups, WAIT, "the fallback")
            before = snapshot(link, emu)
            rows.wait_rows(10)
            after = snapshot(link, emu)
        finally:
            link.stop()
    # Every row has the values, also those read while the link was finding out.
    for sample in first + rows.samples[-5:]:
        assert sample.values["RPM"].value == 0x1AF8 / 4
        assert sample.values["SPEED"].value == 0x32
        assert sample.values["COOLANT_TEMP"].value == 0x7B - 40
        assert sample.values["MAF"].value == pytest.approx(5.0)
    assert link.single_pid_groups == [frozenset(FAST)]
    count, multi, values = requests_between(before, after)
    assert multi == 0  # no multi-PID request since the fallback
    assert values == len(FAST) * count
    warnings = [m for m in ours(records, logging.WARNING) if "one request" in m]
    assert len(warnings) == 1  # logged once
    assert "NO DATA" in warnings[0] and "RPM" in warnings[0]


def test_a_group_gap_the_car_never_fills_is_accepted_without_fallback(
    records: pytest.LogCaptureFixture,
) -> None:
    """HYBRID_BATTERY_REMAINING is in the emulated car's 0140 bitmap but never answered:
    not a reason to read its group's other values one by one."""
    with emulated_car() as emu:
        cfg = config(
            OBD_INTERFACE=emu.get_pty(),
            OBD_PROTOCOL="6",
            OBD_FAST_COMMANDS="TIME_SINCE_DTC_CLEARED,FUEL_TYPE,HYBRID_BATTERY_REMAINING",
            OBD_SLOW_COMMANDS="",
            SAMPLE_INTERVAL="0.02",
        )
        hub, rows = make_hub()
        link = ObdLink(cfg, hub, SystemClock())
        link.start()
        try:
            rows.wait_rows(3)
            before = snapshot(link, emu)
            rows.wait_rows(10)
            after = snapshot(link, emu)
        finally:
            link.stop()
    sample = rows.samples[-1]
    assert sample.values["HYBRID_BATTERY_REMAINING"].value is None
    assert sample.values["FUEL_TYPE"].value is not None
    assert link.single_pid_groups == []
    # Asked within the multi-PID request of each row; on its own only by the checks that
    # accept the gap (CHECKS_TO_ACCEPT in all), not once more per row. (The emulator
    # counts 015B under its own name for it.)
    count = after[1] - before[1]
    asked = after[0].get("BATT_REM_CHARGE", 0) - before[0].get("BATT_REM_CHARGE", 0)
    assert count >= 10
    assert count <= asked <= count + CHECKS_TO_ACCEPT
    assert not [m for m in ours(records, logging.WARNING) if "one request" in m]


def test_unable_to_connect_restarts_the_adapter_and_a_new_trip_begins(
    records: pytest.LogCaptureFixture,
) -> None:
    with emulated_car() as emu:
        cfg = config(
            OBD_INTERFACE=emu.get_pty(),
            OBD_PROTOCOL="6",
            OBD_FAST_COMMANDS="RPM",
            OBD_SLOW_COMMANDS="",
            SAMPLE_INTERVAL="0.05",
            OBD_RECONNECT_MAX_INTERVAL="0.5",
        )
        hub, rows = make_hub()
        link = ObdLink(cfg, hub, SystemClock())
        link.start()
        try:
            trip = rows.wait_rows(3)[-1].trip_id
            resets = emu.counters.get("AT_RESET", 0)
            emu.answer["RPM"] = ST("UNABLE TO CONNECT")
            rows.wait_for(lambda: trip in rows.trip_ends, "the trip to end")
            # python-OBD's connection starts over (ATZ) while the bus is lost.
            wait_until(lambda: emu.counters.get("AT_RESET", 0) > resets, WAIT, "a reset")
            assert hub.latest_values() == {}
            del emu.answer["RPM"]
            new = rows.wait_for(
                lambda: [s for s in rows.samples if s.trip_id != trip], "rows of a new trip"
            )
            assert new[-1].values["RPM"].value is not None
        finally:
            link.stop()
    lost = [m for m in ours(records, logging.WARNING) if "lost the OBD adapter" in m]
    assert lost and "UNABLE TO CONNECT" in lost[0]
    assert not ours(records, logging.ERROR)


def test_rates_are_published_as_facts_and_dropped_with_the_adapter() -> None:
    with emulated_car() as emu:
        cfg = config(
            OBD_INTERFACE=emu.get_pty(),
            OBD_PROTOCOL="6",
            OBD_FAST_COMMANDS="RPM,SPEED",
            OBD_SLOW_COMMANDS="COOLANT_TEMP,INTAKE_TEMP",
            OBD_SLOW_INTERVAL="0.5",
            SAMPLE_INTERVAL="0.05",
        )
        hub, rows = make_hub()
        link = ObdLink(cfg, hub, SystemClock())
        link.start()
        try:
            rows.wait_rows(10)
            facts = wait_until(
                lambda: (
                    (f := hub.facts()).get("fast_hz") not in (None, "0.0")
                    and f.get("slow_hz") not in (None, "0.00")
                    and f
                ),
                WAIT,
                "the rates",
            )
            assert float(facts["fast_hz"]) > 0 and float(facts["slow_hz"]) > 0
        finally:
            link.stop()
    assert "fast_hz" not in hub.facts() and "slow_hz" not in hub.facts()


def test_a_silent_car_ends_its_trip_is_still_asked_and_a_new_trip_begins(
    records: pytest.LogCaptureFixture,
) -> None:
    """How often a parked car is asked (ever less often, up to the cap) is the policy's,
    tested on a fake clock in test_obd_policy; here: what the user sees happen."""
    with emulated_car() as emu:
        cfg = config(
            OBD_INTERFACE=emu.get_pty(),
            OBD_PROTOCOL="6",
            OBD_FAST_COMMANDS="RPM,SPEED",
            OBD_SLOW_COMMANDS="",
            SAMPLE_INTERVAL="0.05",
            TRIP_END_TIMEOUT="1",
            OBD_RECONNECT_MAX_INTERVAL="2",
        )
        hub, rows = make_hub()
        link = ObdLink(cfg, hub, SystemClock())
        link.start()
        try:
            trip = rows.wait_rows(3)[-1].trip_id
            emu.set_sorted_obd_msg("engineoff")  # every request: NO DATA
            rows.wait_for(lambda: trip in rows.trip_ends, "the trip to end")
            assert hub.latest_values() == {}
            asked = emu.counters.get("commands", 0)
            wait_until(lambda: emu.counters.get("commands", 0) > asked, WAIT, "another probe")
            assert link.state == "connected"  # the adapter is there, the car is not
            emu.set_sorted_obd_msg("car")
            new = rows.wait_for(
                lambda: [s for s in rows.samples if s.trip_id != trip], "rows of a new trip"
            )
            assert new[-1].values["RPM"].value is not None
        finally:
            link.stop()
    (ended,) = [m for m in ours(records, logging.INFO) if "TRIP_END_TIMEOUT" in m]
    assert "not answered for 1 s" in ended and "at most 2 s apart" in ended
    assert not ours(records, logging.WARNING)


def test_a_car_that_lists_no_mode01_value_is_not_connected() -> None:
    base = {c.name: c for c in obd.commands.base_commands()}
    assert not answers_mode01(base)  # what python-OBD supports without the car
    assert answers_mode01({**base, "RPM": obd.commands.RPM})


def test_a_clone_refusing_the_count_digit_costs_one_request_and_one_line_for_good(
    records: pytest.LogCaptureFixture,
) -> None:
    """An ELM327 "v2.1" clone answers "?" to any request with the response-count digit.
    On a car read one PID per request (K-line, or an ECU refusing several PIDs) that is
    found out once for the adapter, not once per PID and again after each reconnection."""
    with emulated_car() as emu:
        refuse_multi_pid(emu)
        emu.ObdMessage["default"]["CLONE_NO_COUNT"] = {
            "Request": "^01([0-9A-F]{2})+[0-9A-F]$",  # a PID request with a count digit
            "Descr": "a clone adapter that does not know the response-count digit",
            "Response": ST("?"),
            "Priority": 1,
        }
        emu.set_sorted_obd_msg()
        cfg = config(
            OBD_INTERFACE=emu.get_pty(),
            OBD_PROTOCOL="6",
            OBD_FAST_COMMANDS=",".join(FAST),
            OBD_SLOW_COMMANDS="",
            SAMPLE_INTERVAL="0.02",
            OBD_RECONNECT_MAX_INTERVAL="0.5",
        )
        hub, rows = make_hub()
        link = ObdLink(cfg, hub, SystemClock())
        link.start()
        try:
            wait_until(lambda: link.single_pid_groups, WAIT, "the fallback")
            trip = rows.wait_rows(5)[-1].trip_id
            rpm = emu.answer["RPM"]
            emu.answer["RPM"] = ST("UNABLE TO CONNECT")  # the link starts over
            rows.wait_for(lambda: trip in rows.trip_ends, "the trip to end")
            emu.answer["RPM"] = rpm
            rows.wait_for(
                lambda: len([s for s in rows.samples if s.trip_id != trip]) >= 5,
                "rows of a new trip",
            )
            refused = emu.counters.get("CLONE_NO_COUNT", 0)
        finally:
            link.stop()
    assert refused == 1
    lines = [m for m in ours(records, logging.INFO) if "response-count digit" in m]
    assert len(lines) == 1
    assert "?" in lines[0] and "every request" in lines[0]
    assert rows.samples[-1].values["RPM"].value == 0x1AF8 / 4


def silent_pid_car(emu: Any) -> tuple[ObdLink, Collector]:
    """A link reading RPM, SPEED and HYBRID_BATTERY_REMAINING one PID per request (a
    K-line car's way, on the CAN emulator, whose car lists HYBRID_BATTERY_REMAINING in its
    0140 bitmap but answers it NO DATA), started."""
    refuse_multi_pid(emu)
    cfg = config(
        OBD_INTERFACE=emu.get_pty(),
        OBD_PROTOCOL="6",
        OBD_FAST_COMMANDS="RPM,SPEED,HYBRID_BATTERY_REMAINING",
        OBD_SLOW_COMMANDS="",
        SAMPLE_INTERVAL="0.02",
    )
    hub, rows = make_hub()
    link = ObdLink(cfg, hub, SystemClock())
    link.start()
    return link, rows


def test_a_listed_pid_the_car_never_answers_alone_is_not_asked_in_every_row(
    records: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """It costs no request (and no adapter timeout) in every row, and is said once."""
    monkeypatch.setattr(eccm.obd.adapter, "SILENT_RETRY", 3600.0)
    with emulated_car() as emu:
        link, rows = silent_pid_car(emu)
        try:
            wait_until(lambda: link.single_pid_groups, WAIT, "one PID per request")
            rows.wait_rows(eccm.obd.adapter.SILENT_STRIKES + 2)
            before = snapshot(link, emu)
            rows.wait_rows(10)
            after = snapshot(link, emu)
        finally:
            link.stop()
    sample = rows.samples[-1]
    assert sample.values["RPM"].value == 0x1AF8 / 4
    assert sample.values["HYBRID_BATTERY_REMAINING"].value is None
    count = after[1] - before[1]
    asked = after[0].get("BATT_REM_CHARGE", 0) - before[0].get("BATT_REM_CHARGE", 0)
    assert count >= 10
    assert asked == 0  # not once per row
    told = [m for m in ours(records, logging.WARNING) if "lists HYBRID_BATTERY_REMAINING" in m]
    assert len(told) == 1, told
    assert "does not answer it" in told[0] and "NO DATA" in told[0]


def test_a_listed_pid_that_starts_answering_is_read_again(
    records: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A PID silent with the engine off and answered once it runs: back in the rows."""
    monkeypatch.setattr(eccm.obd.adapter, "SILENT_RETRY", 0.0)  # asked again at once
    with emulated_car() as emu:
        link, rows = silent_pid_car(emu)
        try:
            wait_until(
                lambda: [m for m in ours(records, logging.WARNING) if "does not answer it" in m],
                WAIT,
                "the PID found silent",
            )
            emu.answer["BATT_REM_CHARGE"] = hidden_from_multi_pid("41 5B 80")
            wait_until(
                lambda: rows.samples[-1].values["HYBRID_BATTERY_REMAINING"].value is not None,
                WAIT,
                "the value once the car answers it",
            )
        finally:
            link.stop()
    assert rows.samples[-1].values["HYBRID_BATTERY_REMAINING"].value == pytest.approx(
        0x80 * 100 / 255
    )
