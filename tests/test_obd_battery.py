"""The battery watch: latest voltage, one warning per low spell with the engine off."""

from __future__ import annotations

from eccm.obd.battery import BatteryWatch


def test_keeps_the_latest_voltage_and_ignores_no_reading() -> None:
    watch = BatteryWatch(11.8)
    assert watch.volts is None
    assert watch.reading(12.6, 0.0, engine_running=False) is None
    assert watch.reading(None, 1.0, engine_running=False) is None
    assert watch.volts == 12.6


def test_warns_once_when_low_long_enough_with_the_engine_off() -> None:
    watch = BatteryWatch(11.8, low_for=60.0)
    assert watch.reading(11.5, 0.0, engine_running=False) is None
    assert watch.reading(11.4, 59.0, engine_running=False) is None
    warning = watch.reading(11.4, 60.0, engine_running=False)
    assert warning is not None and "11.4 V" in warning and "LOW_BATTERY_VOLTAGE=11.8" in warning
    assert watch.reading(11.3, 600.0, engine_running=False) is None


def test_a_brief_dip_or_a_running_engine_does_not_warn() -> None:
    watch = BatteryWatch(11.8, low_for=60.0)
    assert watch.reading(11.5, 0.0, engine_running=False) is None
    assert watch.reading(12.1, 30.0, engine_running=False) is None  # back up: re-armed
    assert watch.reading(11.5, 70.0, engine_running=False) is None  # a new spell starts
    assert watch.reading(11.0, 200.0, engine_running=True) is None  # cranking
    assert watch.reading(11.5, 250.0, engine_running=False) is None


def test_warns_again_after_the_battery_recovered() -> None:
    watch = BatteryWatch(11.8, low_for=10.0)
    watch.reading(11.5, 0.0, engine_running=False)
    assert watch.reading(11.5, 10.0, engine_running=False) is not None
    watch.reading(12.5, 20.0, engine_running=False)
    watch.reading(11.5, 30.0, engine_running=False)
    assert watch.reading(11.5, 40.0, engine_running=False) is not None
