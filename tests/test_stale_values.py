"""No row carries an engine value older than its bound (issue 10, item 8): at the hub with
a fake clock, and on the ELM327 emulator when the adapter slows down and then vanishes."""

from __future__ import annotations

import time

import pytest

from eccm.clock import FakeClock, SystemClock
from eccm.hub import Hub
from eccm.obd.link import ObdLink
from eccm.obd.plan import PollPlan, fast_max_age, slow_max_age
from eccm.sample import FAST_AGE_CAP, Layout, Reading, Sample
from tests.emulator import emulated_car
from tests.obd_helpers import WAIT, config, make_hub, refuse_multi_pid
from tests.waiting import wait_until

LAYOUT = Layout(fast=("RPM", "SPEED"), slow=("COOLANT_TEMP",), gps=False)


def reading(clock: FakeClock, value: float) -> Reading:
    return Reading(value, None, clock.monotonic())


def test_a_fast_value_older_than_the_cap_is_left_out_of_rows_and_get() -> None:
    clock = FakeClock()
    hub = Hub(clock, 2.0, LAYOUT)
    hub.update_values({"RPM": reading(clock, 850.0), "COOLANT_TEMP": reading(clock, 90.0)})
    clock.advance(FAST_AGE_CAP)
    hub.update_values({"SPEED": reading(clock, 50.0)})
    row = hub.emit()
    assert row is not None and set(row.values) == {"RPM", "SPEED", "COOLANT_TEMP"}
    clock.advance(0.001)  # RPM is now older than 1 s: as stale as a lost position
    row = hub.emit()
    assert row is not None and set(row.values) == {"SPEED", "COOLANT_TEMP"}
    assert set(hub.latest_values()) == {"SPEED", "COOLANT_TEMP"}


def test_the_link_sets_the_bounds_fast_from_the_row_cycle_slow_from_its_interval() -> None:
    clock = FakeClock()
    hub = Hub(clock, 2.0, LAYOUT)
    hub.set_max_ages(fast=0.6, slow=2.6)
    hub.update_values({"RPM": reading(clock, 850.0), "COOLANT_TEMP": reading(clock, 90.0)})
    clock.advance(0.59)
    assert set(hub.latest_values()) == {"RPM", "COOLANT_TEMP"}
    clock.advance(0.02)
    assert set(hub.latest_values()) == {"COOLANT_TEMP"}
    clock.advance(2.0)
    assert hub.latest_values() == {}
    row = hub.emit()
    assert row is not None and row.values == {}


def test_the_bounds_rule() -> None:
    # Three row cycles (SAMPLE_INTERVAL or the time the reads of a row take, the longer),
    # at least 0.5 s, at most 1 s.
    assert fast_max_age(0.2, 0.05) == pytest.approx(0.6)
    assert fast_max_age(0.0, 0.05) == 0.5
    assert fast_max_age(0.0, 0.3) == pytest.approx(0.9)
    assert fast_max_age(5.0, 0.05) == 1.0
    assert fast_max_age(0.0, 0.6) == 1.0
    # A car whose reads of a row take longer (K-line, one value per request): 1.5 rounds,
    # so the row's own first reads are written; a round far longer than usual is not.
    assert fast_max_age(0.2, 1.2) == pytest.approx(1.8)
    assert fast_max_age(0.0, 3.0) == pytest.approx(4.5)
    # Two slow cycles (OBD_SLOW_INTERVAL or the time a pass over every slow value really
    # takes, the longer) plus the fast bound.
    assert slow_max_age(1.0, 0.5, 0.6) == pytest.approx(2.6)
    assert slow_max_age(1.0, 20.0, 1.0) == pytest.approx(41.0)


def rpm_age(sample: Sample) -> float | None:
    rpm = sample.values.get("RPM")
    if rpm is None or rpm.value is None or sample.mono is None:
        return None
    return sample.mono - rpm.at


def test_rows_of_a_slow_then_vanished_adapter_carry_no_stale_rpm() -> None:
    """An adapter that takes 1.5 s per answer (a row then waits for a slow value after its
    RPM was read), then is gone: no row carries an RPM read more than 1 s before it."""
    with emulated_car() as emu:
        cfg = config(
            OBD_INTERFACE=emu.get_pty(),
            OBD_PROTOCOL="6",
            OBD_FAST_COMMANDS="RPM",
            OBD_SLOW_COMMANDS="COOLANT_TEMP",
            OBD_SLOW_INTERVAL="1",
            SAMPLE_INTERVAL="0.2",
            TRIP_END_TIMEOUT="30",
        )
        hub, rows = make_hub()
        link = ObdLink(cfg, hub, SystemClock())
        link.start()
        try:
            wait_until(lambda: link.state == "connected", WAIT, "the link to connect")
            healthy = rows.wait_rows(5)
            assert all(rpm_age(s) is not None for s in healthy)
            emu.delay = 1.5
            slow = rows.wait_rows(2)
            emu.delay = 0
            # Some rows came while a slow value was read after RPM.
            assert any(s.values.get("COOLANT_TEMP") is not None for s in slow)
            # The first rows after the slowdown, judged by the rounds before it: their RPM,
            # read 1.5 s before, is left out (later rows would follow the slower rounds).
            ages = [rpm_age(s) for s in slow]
            assert all(age is None or age <= FAST_AGE_CAP for age in ages), ages
            rows.wait_rows(3)
            with rows._cond:
                before = len(rows.samples)
        except BaseException:
            link.stop()
            raise
    # Taken once the emulator is closed (leaving the block closes it, which may take a
    # while on a loaded machine): rows until then still had a car to read.
    gone = time.monotonic()
    try:
        rows.wait_for(lambda: hub.facts().get("obd") != "connected", "the link to notice")
        wait_until(lambda: link.state != "connected", WAIT, "the link to notice")
        after = [s for s in rows.samples[before:] if s.mono is not None and s.mono > gone]
        ages = [rpm_age(s) for s in after if s.mono is not None and s.mono > gone + FAST_AGE_CAP]
        assert all(age is None for age in ages), ages
        assert hub.latest_values() == {}
    finally:
        link.stop()


def test_the_plan_measures_how_long_a_pass_over_the_slow_values_takes() -> None:
    plan = PollPlan([("RPM",)], [("A",), ("B",)], slow_interval=1.0, start=0.0)
    assert plan.cycle == 1.0
    now = 0.0
    for _ in range(6):  # rows every 0.5 s, room for one slow group each
        plan.next_batch(now, limit=1)
        now += 0.5
    assert plan.cycle == pytest.approx(1.0)  # keeps up
    for _ in range(6):  # rows every 3 s now: each group comes every 6 s
        plan.next_batch(now, limit=1)
        now += 3.0
    assert plan.cycle == pytest.approx(6.0)
    assert slow_max_age(1.0, plan.cycle, 1.0) == pytest.approx(13.0)


def test_a_car_slower_than_the_cap_keeps_the_values_of_its_own_rows() -> None:
    """A K-line-like car (one value per request, 0.25 s an answer): a row's reads take about
    1.5 s, so its first value is over 1 s old when the row is written. It must be written:
    a cap of 1 s whatever the car left RPM empty in every row of such cars."""
    with emulated_car() as emu:
        fast = refuse_multi_pid(emu)
        cfg = config(
            OBD_INTERFACE=emu.get_pty(),
            OBD_PROTOCOL="6",
            OBD_FAST_COMMANDS=",".join(fast),
            OBD_SLOW_COMMANDS="",
            SAMPLE_INTERVAL="0.2",
        )
        hub, rows = make_hub()
        link = ObdLink(cfg, hub, SystemClock())
        link.start()
        try:
            wait_until(lambda: link.single_pid_groups, WAIT, "the one-value-per-request fallback")
            emu.delay = 0.25
            rows.wait_rows(5)  # the smoothed round time follows the slow answers
            slow = rows.wait_rows(3)
        finally:
            link.stop()
    ages = [rpm_age(s) for s in slow]
    assert all(age is not None and age > FAST_AGE_CAP for age in ages), ages
