"""The OBD link against the ELM327 emulator on a pseudo-terminal (a real python-OBD peer)."""

from __future__ import annotations

import concurrent.futures
import logging
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import obd
import pytest
from elm.obd_message import DT, HD, SZ

from eccm.clock import SystemClock
from eccm.errors import DeviceError
from eccm.hub import Hub
from eccm.obd.link import ObdLink
from eccm.obd.share import AdapterBusy
from tests.emulator import emulated_car, stored_dtcs
from tests.obd_helpers import WAIT, Collector, config, make_hub
from tests.waiting import wait_until


class Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def messages(self, level: int) -> list[str]:
        return [r.getMessage() for r in self.records if r.levelno == level]


@dataclass
class Car:
    emu: Any
    link: ObdLink
    hub: Hub
    rows: Collector
    log: Records


@pytest.fixture(scope="module")
def car() -> Iterator[Car]:
    """One emulator and one link for the module: connecting takes seconds.

    Auto-detection of the protocol (OBD_PROTOCOL empty) is what this connection uses.
    """
    records = Records()
    link_log = logging.getLogger("eccm.obd.link")
    link_log.addHandler(records)
    with emulated_car() as emu:
        cfg = config(
            OBD_INTERFACE=emu.get_pty(),
            OBD_FAST_COMMANDS="RPM,SPEED,FUEL_RATE,THROTTLE_POS",
            OBD_SLOW_COMMANDS="ALL",
            OBD_SLOW_INTERVAL="0.5",
            SAMPLE_INTERVAL="0.05",
        )
        hub, rows = make_hub()
        link = ObdLink(cfg, hub, SystemClock())
        link.start()
        try:
            wait_until(lambda: link.state == "connected", WAIT, "the link to connect")
            yield Car(emu, link, hub, rows, records)
        finally:
            link.stop()
            link_log.removeHandler(records)


def test_reads_the_battery_voltage_at_the_adapter(car: Car) -> None:
    volts = wait_until(lambda: car.link.elm_voltage, WAIT, "an ATRV reading")
    assert 13.0 <= volts <= 13.9  # the emulator's ATRV answers
    assert 13.0 <= float(car.hub.facts()["elm_voltage"]) <= 13.9


def test_connects_and_publishes_what_it_learnt(car: Car) -> None:
    facts = car.hub.facts()
    assert facts["obd"] == "connected"
    assert facts["protocol"] == "ISO 15765-4 (CAN 11/500)" == car.link.protocol
    assert facts["adapter"] == "ELM327 v1.5"
    # The emulator's car has two VINs it answers in turn; python-OBD alone cuts "…390000".
    assert facts["vin"] in ("WP0ZZZ99ZTS390000", "MAT403096BNL00000")
    supported = car.link.supported
    assert len(supported) > 50
    assert supported["RPM"] is obd.commands.RPM


def test_layout_drops_the_unsupported_fast_name_and_slow_is_every_other_value(car: Car) -> None:
    layout = car.hub.layout
    assert layout.fast == ("RPM", "SPEED", "THROTTLE_POS")
    assert "COOLANT_TEMP" in layout.slow and "FUEL_LEVEL" in layout.slow
    assert not set(layout.slow) & {"RPM", "SPEED", "THROTTLE_POS", "PIDS_A", "STATUS"}
    assert not any(name.startswith("DTC_") for name in layout.slow)
    assert layout.describe("RPM") == ("revolutions_per_minute", "Engine RPM")
    assert layout.describe("COOLANT_TEMP") == ("degree_Celsius", "Engine Coolant Temperature")
    warnings = [m for m in car.log.messages(logging.WARNING) if "FUEL_RATE" in m]
    assert len(warnings) == 1
    assert warnings[0].startswith("OBD_FAST_COMMANDS:")


def test_rows_carry_plausible_plain_values_fast_and_slow(car: Car) -> None:
    rows = car.rows.wait_rows(20)
    assert all(s.engine for s in rows)
    assert len({s.trip_id for s in rows}) == 1
    assert rows[0].trip_id == car.hub.trip
    rpms = [s.values["RPM"].value for s in rows]
    assert all(isinstance(v, float) for v in rpms)
    assert max(v for v in rpms if isinstance(v, float)) > 0
    assert rows[-1].values["RPM"].unit == "revolutions_per_minute"
    # Slow values are read in turn and merged into the rows.
    car.rows.wait_for(
        lambda: "COOLANT_TEMP" in car.rows.samples[-1].values, "a slow value in the rows"
    )
    coolant = car.rows.samples[-1].values["COOLANT_TEMP"]
    assert isinstance(coolant.value, int | float) and coolant.unit == "degree_Celsius"
    car.rows.wait_for(
        lambda: car.rows.samples[-1].values["COOLANT_TEMP"].at > coolant.at,
        "the slow value read again",
    )
    assert car.link.rows >= 20
    assert car.link.fast_rate > 0
    assert car.link.slow_rate > 0


def test_submit_runs_in_the_link_thread_with_the_connection(car: Car) -> None:
    def job(conn: Any) -> tuple[str, str]:
        return threading.current_thread().name, conn.protocol_name()

    name, protocol = car.link.submit(job).result(WAIT)
    assert name == "eccm-obd"
    assert protocol == "ISO 15765-4 (CAN 11/500)"
    boom = car.link.submit(lambda conn: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        boom.result(WAIT)


def test_a_request_the_link_cannot_start_in_time_fails_with_timeout(car: Car) -> None:
    started, release = threading.Event(), threading.Event()

    def busy(conn: Any) -> str:
        started.set()
        release.wait(WAIT)
        return "done"

    first = car.link.submit(busy, timeout=WAIT)
    assert started.wait(WAIT)
    late = car.link.submit(lambda conn: "never", timeout=0.2)
    with pytest.raises(TimeoutError, match="obd_timeout"):
        late.result(WAIT)
    release.set()
    assert first.result(WAIT) == "done"


def read_when_free(link: ObdLink, name: str) -> Any:
    """An on-demand read, asked again after the link's hint while it is busy (a request of
    an earlier test may have used the share of the adapter's time that reads get)."""
    deadline = time.monotonic() + WAIT
    while True:
        try:
            return link.read(name).result(WAIT)
        except AdapterBusy as exc:
            assert time.monotonic() < deadline, "the link stayed busy"
            time.sleep(exc.retry_after)  # the link's own hint, as a client waits


def test_on_demand_read_of_any_supported_command(car: Car) -> None:
    voltage = read_when_free(car.link, "ELM_VOLTAGE")
    # The emulator's ATRV answer steps 13.0..13.9 V with each read, and the link reads it
    # too (the battery watch): any of its answers, as a number in volts.
    assert 13.0 <= voltage.value <= 13.9 and voltage.unit == "volt"
    vin = read_when_free(car.link, "vin")  # not a column; names in any case
    assert vin.value in ("WP0ZZZ99ZTS390000", "MAT403096BNL00000")
    with pytest.raises(DeviceError, match=r"^unknown_value: the car does not support FUEL_RATE"):
        car.link.read("FUEL_RATE").result(WAIT)
    with pytest.raises(DeviceError, match=r"^unknown_value"):
        car.link.read("WARP_DRIVE").result(WAIT)
    with pytest.raises(DeviceError, match=r"^unknown_value"):
        car.link.read("CLEAR_DTC").result(WAIT)
    assert "CLEAR_DIAG_TC" not in car.emu.counters


def test_read_dtcs_gives_mil_stored_and_pending_codes(car: Car) -> None:
    car.emu.counters.pop("cmd_dtc_cleared", None)
    with stored_dtcs(["0143", "0196"], pending=["0300"]):
        dtcs = car.link.read_dtcs().result(WAIT)
    assert dtcs["mil"] is True
    assert [d["code"] for d in dtcs["stored"]] == ["P0143", "P0196"]
    assert dtcs["stored"][0]["description"] == "O2 Sensor Circuit Low Voltage"
    assert [d["code"] for d in dtcs["pending"]] == ["P0300"]
    with stored_dtcs([]):
        clean = car.link.read_dtcs().result(WAIT)
    assert clean == {"mil": False, "stored": [], "pending": []}


def test_clear_dtcs_reaches_the_car_and_reports_its_answer(car: Car) -> None:
    car.emu.counters.pop("cmd_dtc_cleared", None)
    try:
        with stored_dtcs(["0143"]):
            answer = car.link.clear_dtcs().result(WAIT)
            assert car.emu.counters.get("cmd_dtc_cleared") is True
            assert answer == "44"  # the positive answer to mode 04
            after = car.link.read_dtcs().result(WAIT)
        assert after["stored"] == [] and after["mil"] is False
    finally:
        car.emu.counters.pop("cmd_dtc_cleared", None)


def test_a_clear_the_car_refuses_is_not_logged_as_cleared(car: Car) -> None:
    """Many ECUs refuse mode 04 with the engine running (7F 04 22): the log must say the
    codes are still there, and why, not 'cleared'."""
    car.emu.answer["CLEAR_DIAG_TC"] = HD("7E8") + SZ("03") + DT("7F 04 22")
    seen = len(car.log.records)
    try:
        answer = car.link.clear_dtcs().result(WAIT)
    finally:
        del car.emu.answer["CLEAR_DIAG_TC"]
    assert answer == "7F 04 22"
    lines = [r.getMessage() for r in car.log.records[seen:] if r.levelno >= logging.WARNING]
    assert len(lines) == 1
    assert "not cleared" in lines[0] and "7F 04 22" in lines[0]
    assert "switch the engine off" in lines[0]


def test_trip_ends_when_the_car_stops_answering_and_a_new_one_begins(car: Car) -> None:
    trip = car.rows.wait_rows(1)[0].trip_id
    car.emu.set_sorted_obd_msg("engineoff")  # the ECU answers NO DATA to everything
    try:
        car.rows.wait_for(lambda: trip in car.rows.trip_ends, "the trip to end")
        assert car.hub.latest_values() == {}
        assert car.hub.trip is None
        assert car.link.state == "connected"  # the adapter is still there
    finally:
        car.emu.set_sorted_obd_msg("car")
    rows = car.rows.wait_rows(3)
    assert rows[-1].trip_id != trip
    assert car.hub.engine_trip


def test_stop_ends_the_trip_and_refuses_requests(car: Car) -> None:
    car.rows.wait_rows(1)
    car.link.stop()
    assert not car.link.running  # the thread ended within stop()
    assert car.link.state == "disconnected"
    assert car.hub.facts()["obd"] == "disconnected"
    assert car.hub.trip is None
    with pytest.raises(DeviceError, match=r"^not_connected"):
        car.link.read("RPM").result(WAIT)


def test_absent_adapter_is_logged_once_and_requests_fail_at_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="eccm.obd.link")
    missing = tmp_path / "obd"
    cfg = config(OBD_INTERFACE=str(missing), OBD_RECONNECT_MAX_INTERVAL="0.5")
    hub, _ = make_hub()
    link = ObdLink(cfg, hub, SystemClock())
    link.start()
    try:
        wait_until(
            lambda: sum("still unavailable" in r.getMessage() for r in caplog.records) >= 3,
            WAIT,
            "three more attempts",
        )
        future = link.submit(lambda conn: "never")
        assert future.done()
        with pytest.raises(DeviceError, match=r"^not_connected") as info:
            future.result(0)
        assert str(missing) in str(info.value)
        assert link.state in ("disconnected", "connecting")
    finally:
        link.stop()
    # One WARNING, as the README promises for a missing device (and the GNSS side does).
    ours = [r for r in caplog.records if r.name.startswith("eccm.")]
    assert not [r for r in ours if r.levelno >= logging.ERROR]
    warnings = [r for r in ours if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    message = warnings[0].getMessage()
    assert f"OBD_INTERFACE={missing}" in message and "does not exist" in message
    assert "plugged in" in message
    assert all(r.exc_info is None for r in caplog.records)
    assert hub.trip is None


def test_reconnects_through_the_same_path_to_a_new_adapter(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="eccm.obd.link")
    path = tmp_path / "obd"

    def point(target: str) -> None:
        tmp = tmp_path / "obd.new"
        tmp.symlink_to(target)
        os.replace(tmp, path)  # atomic, like udev replacing its link

    cfg = config(
        OBD_INTERFACE=str(path),
        OBD_PROTOCOL="6",  # skips the protocol search: a second per connection
        OBD_FAST_COMMANDS="RPM",
        OBD_SLOW_COMMANDS="COOLANT_TEMP",
        SAMPLE_INTERVAL="0.05",
        OBD_RECONNECT_MAX_INTERVAL="0.5",
    )
    hub, rows = make_hub()
    link = ObdLink(cfg, hub, SystemClock())
    try:
        with emulated_car() as first:
            point(first.get_pty())
            link.start()
            trip = rows.wait_rows(3)[-1].trip_id
            # Unplugged: udev removes the link with the device. One left pointing to the
            # closed /dev/pts/N would lead to the next pseudo-terminal opened on the
            # machine (the kernel reuses the number), often another test's emulator.
            path.unlink()
        # The first adapter is gone (its pseudo-terminal closed).
        rows.wait_for(lambda: trip in rows.trip_ends, "the trip to end with the adapter")
        wait_until(lambda: link.state != "connected", WAIT, "the link to notice")
        assert hub.latest_values() == {}
        with emulated_car() as second:
            point(second.get_pty())
            new = rows.wait_for(
                lambda: [s for s in rows.samples if s.trip_id != trip], "rows of a new trip"
            )
            assert new[0].values["RPM"].value is not None
            assert link.state == "connected"
            assert hub.facts()["obd"] == "connected"
            # Stopped while the second adapter is still there: closing it first would be a
            # second loss, logged before the stop on a loaded machine.
            link.stop()
    finally:
        link.stop()
    losses = [r for r in caplog.records if "lost the OBD adapter" in r.getMessage()]
    assert len(losses) == 1
    assert f"OBD_INTERFACE={path}" in losses[0].getMessage()
    assert any("connected again" in r.getMessage() for r in caplog.records)
    # Failed attempts during the outage are not logged above DEBUG. (pytest also catches
    # python-OBD's own records, which the link takes over and passes on at DEBUG.)
    ours = [r for r in caplog.records if r.name.startswith("eccm.")]
    assert not [r for r in ours if r.levelno >= logging.ERROR]


def test_stop_returns_while_python_obd_is_still_connecting(tmp_path: Path) -> None:
    device = tmp_path / "obd"
    # Exists, is writable and is no regular file (refused as "a file, not a serial
    # device"): the link hands it to python-OBD, which the test stands in for.
    os.mkfifo(device)
    entered, release = threading.Event(), threading.Event()
    made: list[Any] = []

    def slow_connect(**kwargs: Any) -> Any:
        entered.set()
        release.wait(WAIT)
        conn = obd.OBD(**{**kwargs, "portstr": str(tmp_path / "absent")})
        made.append(conn)
        return conn

    hub, _ = make_hub()
    link = ObdLink(config(OBD_INTERFACE=str(device)), hub, SystemClock(), connect=slow_connect)
    link.start()
    try:
        assert entered.wait(WAIT)
        assert link.state == "connecting"
        link.stop(timeout=0.2)
        # stop() came back although python-OBD has not returned yet.
        assert not release.is_set() and link.running
        assert link.state == "disconnected"
        refused: concurrent.futures.Future[str] = link.submit(lambda conn: "never")
        with pytest.raises(DeviceError, match=r"^not_connected"):
            refused.result(0)
    finally:
        release.set()
    wait_until(lambda: not link.running, WAIT, "the link thread to end")
    assert made and made[0].status() == obd.OBDStatus.NOT_CONNECTED
    assert hub.trip is None


@pytest.mark.parametrize(
    ("keys", "expected"),
    [
        ({"OBD_BAUDRATE": "115200", "OBD_PROTOCOL": "a"}, {"baudrate": 115200, "protocol": "A"}),
        ({}, {"baudrate": None, "protocol": None}),
        # User-defined CAN protocols: valid for the adapter, not decodable by python-OBD.
        ({"OBD_PROTOCOL": "B"}, {"baudrate": None, "protocol": None}),
    ],
)
def test_python_obd_gets_the_configured_arguments_and_the_real_device(
    tmp_path: Path, keys: dict[str, str], expected: dict[str, Any]
) -> None:
    device = tmp_path / "ttyUSB7"
    os.mkfifo(device)  # no regular file (refused as "a file, not a serial device")
    alias = tmp_path / "obd"
    alias.symlink_to(device)
    calls: list[dict[str, Any]] = []
    called = threading.Event()

    def recording_connect(**kwargs: Any) -> Any:
        calls.append(kwargs)
        called.set()
        return obd.OBD(portstr=str(tmp_path / "absent"))  # an adapter that is not there

    hub, _ = make_hub()
    link = ObdLink(
        config(OBD_INTERFACE=str(alias), **keys), hub, SystemClock(), connect=recording_connect
    )
    link.start()
    try:
        assert called.wait(WAIT)
    finally:
        link.stop()
    assert calls[0] == {
        "portstr": str(device),  # resolved, so that a re-pointed link is followed
        "fast": False,
        "timeout": 1.0,
        "check_voltage": False,
        **expected,
    }
