"""What a failed connection attempt tells the user (pure: python-OBD's status in, one
sentence naming the setting to check out). The devices themselves are in test_devices_obd."""

from __future__ import annotations

import pytest
from obd.utils import OBDStatus

from eccm.obd.connection import explain


def test_a_car_that_lists_values_is_connected() -> None:
    assert explain(OBDStatus.CAR_CONNECTED, True, "/dev/obd", "", "6") is None


@pytest.mark.parametrize(
    ("status", "lists_values", "iface", "protocol", "expected"),
    [
        # A fixed protocol is "connected" to python-OBD even when no ECU answered 0100.
        (OBDStatus.CAR_CONNECTED, False, "/dev/obd", "3", "Check OBD_PROTOCOL (now 3)"),
        (OBDStatus.CAR_CONNECTED, False, "/dev/obd", None, "ignition on? Check OBD_PROTOCOL (now auto)"),
        # The adapter answers, the car does not: python-OBD's complaint is quoted.
        (OBDStatus.ELM_CONNECTED, False, "/dev/obd", "3", "car does not (UNABLE TO CONNECT)"),
        (OBDStatus.OBD_CONNECTED, False, "", None, "Check OBD_PROTOCOL (now auto)"),
        # Nothing like an ELM327 there.
        (OBDStatus.NOT_CONNECTED, False, "/dev/obd", None, "/dev/obd did not answer like an ELM327 adapter (UNABLE TO CONNECT)"),
        (OBDStatus.NOT_CONNECTED, False, "/dev/obd", None, "OBD_BAUDRATE (empty = detect)"),
        (OBDStatus.NOT_CONNECTED, False, "", None, "set OBD_INTERFACE to the adapter's device"),
    ],
)  # fmt: skip
def test_each_failure_names_what_to_check(
    status: str, lists_values: bool, iface: str, protocol: str | None, expected: str
) -> None:
    message = explain(status, lists_values, iface, "UNABLE TO CONNECT", protocol)
    assert message is not None and expected in message


@pytest.mark.parametrize(
    "complaint",
    [
        "ATE0 did not return 'OK'",
        "ATH1 did not return 'OK', or echoing is still ON",
        "ATL0 did not return 'OK'",
    ],
)
def test_an_adapter_refusing_a_setup_command_is_not_sent_to_the_baud_rate(complaint: str) -> None:
    # It answered with a prompt at this speed: OBD_BAUDRATE was the wrong thing to check.
    message = explain(OBDStatus.NOT_CONNECTED, False, "/dev/obd", complaint, None)
    assert message is not None
    assert f"refused a set-up command ({complaint})" in message
    assert "OBD_BAUDRATE is not the cause" in message and "another adapter" in message
