"""The polling plan: resolution of the configured commands and the slow schedule (pure)."""

from __future__ import annotations

import itertools
from collections import Counter
from typing import Any

import obd
import pytest

from eccm.clock import FakeClock
from eccm.obd.plan import (
    Group,
    PollPlan,
    RateMeter,
    make_groups,
    request_groups,
    resolve,
    slow_budget,
)

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


def singles(names: list[str]) -> list[Group]:
    return [(n,) for n in names]


def rows(
    plan: PollPlan, clock: FakeClock, period: float, seconds: float, limit: int | None = None
) -> list[tuple[float, list[str]]]:
    """Drive the plan like the link does: one row every ``period`` seconds."""
    out = []
    for _ in range(round(seconds / period)):
        batch = plan.next_batch(clock.monotonic(), limit)
        out.append((clock.monotonic(), [n for group in batch for n in group]))
        clock.advance(period)
    return out


def test_names_are_packed_in_requests_of_six_and_others_go_alone() -> None:
    names = ["RPM", "SPEED", "ELM_VOLTAGE", "A", "B", "C", "D", "E", "F", "G"]
    pid = set(names) - {"ELM_VOLTAGE"}
    assert make_groups(names, pid.__contains__, 6) == [
        ("ELM_VOLTAGE",),
        ("RPM", "SPEED", "A", "B", "C", "D"),
        ("E", "F", "G"),
    ]
    assert make_groups(names[:3], pid.__contains__, 1) == [("RPM",), ("SPEED",), ("ELM_VOLTAGE",)]
    assert make_groups([], pid.__contains__, 6) == []
    with pytest.raises(ValueError):
        make_groups(names, pid.__contains__, 0)


def test_groups_the_car_refused_before_are_read_one_name_per_request() -> None:
    names = ["RPM", "SPEED", "A", "B", "C", "D", "E", "F", "G"]
    refused = {frozenset(("RPM", "SPEED", "A", "B", "C", "D"))}
    groups = request_groups(names, lambda n: True, lambda g: frozenset(g) in refused, 6)
    assert groups == [("RPM",), ("SPEED",), ("A",), ("B",), ("C",), ("D",), ("E", "F", "G")]
    assert request_groups(names, lambda n: True, lambda g: False, 6) == make_groups(
        names, lambda n: True, 6
    )


def test_slow_names_are_spread_over_the_interval_in_small_batches() -> None:
    clock = FakeClock()
    slow = ["A", "B", "C", "D"]
    plan = PollPlan(singles(["RPM"]), singles(slow), slow_interval=1.0, start=clock.monotonic())
    log = rows(plan, clock, period=0.05, seconds=3.0)
    assert max(len(batch) for _, batch in log) == 1  # never all four in one row
    reads = Counter(name for _, batch in log for name in batch)
    assert reads == {"A": 3, "B": 3, "C": 3, "D": 3}
    for name in slow:
        times = [t for t, batch in log if name in batch]
        gaps = [b - a for a, b in itertools.pairwise(times)]
        assert all(g == pytest.approx(1.0, abs=0.051) for g in gaps), (name, gaps)


def test_slow_groups_are_spread_like_names_one_request_each() -> None:
    clock = FakeClock()
    groups = [("A", "B", "C", "D", "E", "F"), ("G", "H", "I", "J", "K", "L"), ("M",)]
    plan = PollPlan([("RPM", "SPEED")], groups, slow_interval=0.9, start=clock.monotonic())
    assert plan.fast_names == ("RPM", "SPEED")
    assert plan.slow_names == tuple("ABCDEFGHIJKLM")
    start = clock.monotonic()
    seen: dict[Group, list[float]] = {g: [] for g in groups}
    for _ in range(90):  # 3 s of rows every 1/30 s
        batch = plan.next_batch(clock.monotonic(), limit=1)
        assert len(batch) <= 1
        for group in batch:
            seen[group].append(clock.monotonic() - start)
        clock.advance(1 / 30)
    # Group i of three falls due at i * 0.3 s, then every 0.9 s: one request each time.
    for i, group in enumerate(groups):
        expected = [i * 0.3 + k * 0.9 for k in range(4) if i * 0.3 + k * 0.9 < 3.0]
        assert seen[group] == pytest.approx(expected, abs=1 / 30 + 1e-9), group


def test_rows_slower_than_the_slow_interval_read_every_due_name() -> None:
    clock = FakeClock()
    plan = PollPlan((), singles(["A", "B", "C"]), slow_interval=0.5, start=clock.monotonic())
    log = rows(plan, clock, period=1.0, seconds=4.0)
    assert [sorted(batch) for _, batch in log][1:] == [["A", "B", "C"]] * 3


def test_a_limit_reads_the_longest_overdue_first_and_never_bursts() -> None:
    clock = FakeClock()
    plan = PollPlan((), singles(["A", "B", "C", "D"]), slow_interval=1.0, start=clock.monotonic())
    clock.advance(5.0)  # a long stall: every name is overdue by several intervals
    now = clock.monotonic()
    assert plan.next_batch(now, limit=2) == [("A",), ("B",)]
    assert plan.next_batch(now, limit=2) == [("C",), ("D",)]
    assert plan.next_batch(now) == []  # the backlog is not read again at once
    assert plan.next_due() == pytest.approx(now + 1.0)
    assert plan.next_batch(now + 1.0) == singles(["A", "B", "C", "D"])


def test_a_zero_limit_reads_nothing_and_no_slow_names_have_no_due_time() -> None:
    clock = FakeClock()
    plan = PollPlan(singles(["RPM"]), singles(["A"]), slow_interval=1.0, start=clock.monotonic())
    assert plan.next_batch(clock.monotonic(), limit=0) == []
    assert plan.next_batch(clock.monotonic()) == [("A",)]
    assert PollPlan(singles(["RPM"]), [], 1.0, clock.monotonic()).next_due() is None
    with pytest.raises(ValueError):
        PollPlan((), singles(["A"]), 0.0, 0.0)


def test_a_refused_fast_group_is_read_one_name_per_request_in_place() -> None:
    plan = PollPlan([("ELM_VOLTAGE",), ("RPM", "SPEED", "MAF")], [("A", "B")], 1.0, 0.0)
    plan.split(("RPM", "SPEED", "MAF"))
    assert plan.fast == (("ELM_VOLTAGE",), ("RPM",), ("SPEED",), ("MAF",))
    assert plan.fast_names == ("ELM_VOLTAGE", "RPM", "SPEED", "MAF")
    plan.split(("RPM",))  # a single name stays as it is
    assert len(plan.fast) == 4


def test_a_refused_slow_group_shares_its_slot_among_its_names() -> None:
    clock = FakeClock()
    groups = [("A", "B", "C"), ("D", "E"), ("F",), ("G",)]
    start = clock.monotonic()
    plan = PollPlan((), groups, slow_interval=1.0, start=start)
    assert plan.next_batch(clock.monotonic()) == [("A", "B", "C")]
    plan.split(("A", "B", "C"))
    assert plan.slow == (("A",), ("B",), ("C",), ("D", "E"), ("F",), ("G",))
    log = rows(plan, clock, period=0.01, seconds=3.0, limit=1)
    reads = Counter(name for _, batch in log for name in batch)
    assert reads == {"A": 2, "B": 2, "C": 2, "D": 3, "E": 3, "F": 3, "G": 3}
    # A, B and C fall due within the quarter second that was their group's.
    times = {n: [t - start for t, b in log if n in b] for n in "ABC"}
    assert times["A"][0] == pytest.approx(1.0, abs=0.011)
    assert 1.0 < times["B"][0] < times["C"][0] < 1.25


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
