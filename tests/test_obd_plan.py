"""The polling plan: resolution of the configured commands and the slow schedule (pure)."""

from __future__ import annotations

import itertools
from collections import Counter
from typing import Any

import obd
import pytest

from eccm.clock import FakeClock
from eccm.obd.plan import PollPlan, RateMeter, resolve, slow_budget

# What the emulator's car supports, in part, plus python-OBD's always-supported commands.
CAR = [
    "PIDS_A",
    "STATUS",
    "FUEL_STATUS",
    "ENGINE_LOAD",
    "COOLANT_TEMP",
    "INTAKE_PRESSURE",
    "RPM",
    "SPEED",
    "INTAKE_TEMP",
    "MAF",
    "THROTTLE_POS",
    "PIDS_B",
    "FUEL_LEVEL",
    "PIDS_C",
    "DTC_RPM",
    "GET_DTC",
    "CLEAR_DTC",
    "GET_CURRENT_DTC",
    "VIN",
    "ELM_VERSION",
    "ELM_VOLTAGE",
]


def supported(names: list[str] = CAR) -> dict[str, Any]:
    # Shuffled on purpose: python-OBD hands over a set.
    return {n: obd.commands[n] for n in reversed(names)}


def test_fast_keeps_the_supported_names_in_config_order() -> None:
    r = resolve(("SPEED", "RPM", "MAF"), ("ALL",), supported())
    assert r.fast == ("SPEED", "RPM", "MAF")
    assert r.warnings == ()


def test_unsupported_fast_names_are_dropped_with_one_warning_naming_the_key() -> None:
    r = resolve(("RPM", "FUEL_RATE", "OIL_TEMP", "SPEED"), ("ALL",), supported())
    assert r.fast == ("RPM", "SPEED")
    assert len(r.warnings) == 1
    (warning,) = r.warnings
    assert warning.startswith("OBD_FAST_COMMANDS:")
    assert "FUEL_RATE" in warning and "OIL_TEMP" in warning
    assert "not supported" in warning


def test_all_is_every_other_supported_mode01_value_in_pid_order() -> None:
    r = resolve(("RPM", "SPEED"), ("ALL",), supported())
    assert r.slow == (
        "FUEL_STATUS",
        "ENGINE_LOAD",
        "COOLANT_TEMP",
        "INTAKE_PRESSURE",
        "INTAKE_TEMP",
        "MAF",
        "THROTTLE_POS",
        "FUEL_LEVEL",
    )


def test_explicit_slow_names_lose_fast_ones_and_non_values() -> None:
    r = resolve(
        ("RPM",),
        ("COOLANT_TEMP", "RPM", "ELM_VOLTAGE", "CLEAR_DTC", "GET_DTC", "OIL_TEMP"),
        supported(),
    )
    assert r.fast == ("RPM",)
    assert r.slow == ("COOLANT_TEMP", "ELM_VOLTAGE")
    (warning,) = r.warnings
    assert warning.startswith("OBD_SLOW_COMMANDS:")
    assert "OIL_TEMP (not supported by this car)" in warning
    assert "CLEAR_DTC, GET_DTC (not values that can be logged)" in warning


def test_names_python_obd_does_not_know_are_dropped_too() -> None:
    r = resolve(("RPM", "WARP_DRIVE"), ("ALL",), supported())
    assert r.fast == ("RPM",)
    assert "WARP_DRIVE (not python-OBD command names)" in r.warnings[0]


def test_a_car_without_the_fast_commands_leaves_fast_empty() -> None:
    r = resolve(("RPM", "SPEED"), ("ALL",), supported(["PIDS_A", "COOLANT_TEMP"]))
    assert r.fast == ()
    assert r.slow == ("COOLANT_TEMP",)
    assert len(r.warnings) == 1


def rows(
    plan: PollPlan, clock: FakeClock, period: float, seconds: float, limit: int | None = None
) -> list[tuple[float, list[str]]]:
    """Drive the plan like the link does: one row every ``period`` seconds."""
    out = []
    for _ in range(round(seconds / period)):
        out.append((clock.monotonic(), plan.next_batch(clock.monotonic(), limit)))
        clock.advance(period)
    return out


def test_slow_names_are_spread_over_the_interval_in_small_batches() -> None:
    clock = FakeClock()
    slow = ["A", "B", "C", "D"]
    plan = PollPlan(("RPM",), slow, slow_interval=1.0, start=clock.monotonic())
    log = rows(plan, clock, period=0.05, seconds=3.0)
    assert max(len(batch) for _, batch in log) == 1  # never all four in one row
    reads = Counter(name for _, batch in log for name in batch)
    assert reads == {"A": 3, "B": 3, "C": 3, "D": 3}
    for name in slow:
        times = [t for t, batch in log if name in batch]
        gaps = [b - a for a, b in itertools.pairwise(times)]
        assert all(g == pytest.approx(1.0, abs=0.051) for g in gaps), (name, gaps)


def test_rows_slower_than_the_slow_interval_read_every_due_name() -> None:
    clock = FakeClock()
    plan = PollPlan((), ["A", "B", "C"], slow_interval=0.5, start=clock.monotonic())
    log = rows(plan, clock, period=1.0, seconds=4.0)
    assert [sorted(batch) for _, batch in log][1:] == [["A", "B", "C"]] * 3


def test_a_limit_reads_the_longest_overdue_first_and_never_bursts() -> None:
    clock = FakeClock()
    plan = PollPlan((), ["A", "B", "C", "D"], slow_interval=1.0, start=clock.monotonic())
    clock.advance(5.0)  # a long stall: every name is overdue by several intervals
    now = clock.monotonic()
    assert plan.next_batch(now, limit=2) == ["A", "B"]
    assert plan.next_batch(now, limit=2) == ["C", "D"]
    assert plan.next_batch(now) == []  # the backlog is not read again at once
    assert plan.next_due() == pytest.approx(now + 1.0)
    assert plan.next_batch(now + 1.0) == ["A", "B", "C", "D"]


def test_a_zero_limit_reads_nothing_and_no_slow_names_have_no_due_time() -> None:
    clock = FakeClock()
    plan = PollPlan(("RPM",), ["A"], slow_interval=1.0, start=clock.monotonic())
    assert plan.next_batch(clock.monotonic(), limit=0) == []
    assert plan.next_batch(clock.monotonic()) == ["A"]
    assert PollPlan(("RPM",), [], 1.0, clock.monotonic()).next_due() is None
    with pytest.raises(ValueError):
        PollPlan((), ["A"], 0.0, 0.0)


def test_slow_budget_fills_the_time_left_but_always_reads_one() -> None:
    assert slow_budget(time_left=0.2, query_time=0.05) == 4
    assert slow_budget(time_left=0.0, query_time=0.05) == 1
    assert slow_budget(time_left=-1.0, query_time=0.05) == 1
    assert slow_budget(time_left=-1.0, query_time=0.05, minimum=0) == 0
    assert slow_budget(time_left=1.0, query_time=0.0) > 1000


def test_rate_meter_measures_a_steady_rate_and_notices_a_stall() -> None:
    clock = FakeClock()
    meter = RateMeter(window=5.0)
    assert meter.rate(clock.monotonic()) == 0.0
    for _ in range(50):
        meter.tick(clock.monotonic())
        clock.advance(0.2)
    assert meter.rate(clock.monotonic()) == pytest.approx(5.0)
    clock.advance(2.0)  # nothing for ten usual gaps
    assert meter.rate(clock.monotonic()) < 3.0
    clock.advance(10.0)
    assert meter.rate(clock.monotonic()) == 0.0


def test_rate_meter_counts_fractions_for_slow_rounds() -> None:
    clock = FakeClock()
    meter = RateMeter(window=5.0)
    for _ in range(41):  # one of four slow names every 0.25 s: one round per second
        meter.tick(clock.monotonic(), 0.25)
        clock.advance(0.25)
    assert meter.rate(clock.monotonic() - 0.25) == pytest.approx(1.0)
