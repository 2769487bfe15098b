"""Per-minute statistics against Python's own statistics module."""

from __future__ import annotations

import json
import math
import statistics

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from eccm.trip.minutes import (
    DIGITS,
    FIELDS,
    MinuteTable,
    minute_label,
    minute_start,
    numeric,
    summarize,
    summarize_tally,
    tally,
)

# OBD values are bounded (RPM < 16384, MAF < 656 g/s...): magnitudes well inside what
# the rounding to DIGITS decimals and float arithmetic keep exact enough.
values = st.lists(
    st.one_of(
        st.floats(min_value=-1e5, max_value=1e5, allow_nan=False, allow_infinity=False),
        st.integers(min_value=-100_000, max_value=100_000),
        # quantized values, as the car gives them, so that the mode means something
        st.integers(min_value=0, max_value=40).map(lambda i: i * 0.25),
    ),
    min_size=1,
    max_size=300,
)


def close(ours: object, theirs: float, scale: float = 1.0) -> bool:
    assert isinstance(ours, int | float)
    return math.isclose(ours, theirs, rel_tol=1e-9, abs_tol=10**-DIGITS + 1e-9 * scale)


@settings(max_examples=300, deadline=None)
@given(values)
def test_summary_matches_the_statistics_module(xs: list[float]) -> None:
    s = summarize([float(x) for x in xs])
    assert list(s) == list(FIELDS)
    scale = max(abs(x) for x in xs)
    assert s["count"] == len(xs)
    assert close(s["mean"], statistics.fmean(xs), scale)
    assert close(s["median"], statistics.median(xs), scale)
    assert close(s["mode"], statistics.mode(xs), scale)
    assert close(s["min"], min(xs)) and close(s["max"], max(xs))
    # population figures, exact fractions in the statistics module
    assert close(s["variance"], float(statistics.pvariance(xs)), scale * scale)
    assert close(s["stdev"], statistics.pstdev(xs), scale)


def list_summary(values: list[float]) -> dict[str, object]:
    """The summary as it was computed from the list of a minute's values (before the
    tally): the reference the tally must reproduce digit for digit."""
    n = len(values)
    mean = math.fsum(values) / n
    variance = math.fsum((x - mean) ** 2 for x in values) / n

    def rounded(x: float) -> float:
        r = round(x, DIGITS)
        return 0.0 if r == 0 else r

    return {
        "count": n,
        "mean": rounded(mean),
        "median": rounded(statistics.median(values)),
        "mode": rounded(statistics.mode(values)),
        "stdev": rounded(math.sqrt(variance)),
        "variance": rounded(variance),
        "min": rounded(min(values)),
        "max": rounded(max(values)),
    }


@settings(max_examples=500, deadline=None)
@given(
    st.one_of(values, st.lists(st.sampled_from([0.0, -0.0, 0.25, -0.25, 1e-7, 3.0]), min_size=1))
)
def test_the_tally_gives_the_figures_of_the_list_exactly(xs: list[float]) -> None:
    floats = [float(x) for x in xs]
    ours = summarize_tally(tally(floats))
    assert json.dumps(ours) == json.dumps(list_summary(floats))  # as written: -0.0 too


def test_a_full_rate_minute_is_kept_as_a_tally() -> None:
    # 50,000 rows of a two-byte value (RPM, quarter steps) keep one entry per distinct
    # value, not one per row.
    table = MinuteTable(["RPM"])
    rpms = [800.0 + (i % 400) * 0.25 for i in range(50_000)]
    for i, rpm in enumerate(rpms):
        table.add(120.0 + i / 1000, {"RPM": rpm})
    assert len(table._counts["RPM"]) == 400
    cur = table.current()
    assert cur is not None
    assert json.dumps(cur["values"]["RPM"]) == json.dumps(list_summary(rpms))  # type: ignore[index]


def test_known_minute() -> None:
    s = summarize([2.0, 4.0, 4.0, 4.0, 5.0, 5.0, 7.0, 9.0])
    assert s == {
        "count": 8,
        "mean": 5.0,
        "median": 4.5,
        "mode": 4.0,
        "stdev": 2.0,
        "variance": 4.0,
        "min": 2.0,
        "max": 9.0,
    }


def test_one_value_and_none() -> None:
    assert summarize([3.5]) == {
        "count": 1,
        "mean": 3.5,
        "median": 3.5,
        "mode": 3.5,
        "stdev": 0.0,
        "variance": 0.0,
        "min": 3.5,
        "max": 3.5,
    }
    empty = summarize([])
    assert empty["count"] == 0 and all(empty[f] is None for f in FIELDS[1:])


@pytest.mark.parametrize(
    ("value", "expected"),
    [(3, 3.0), (2.5, 2.5), (True, None), ("text", None), (None, None), (math.nan, None),
     (math.inf, None)],
)  # fmt: skip
def test_only_finite_numbers_count(value: object, expected: float | None) -> None:
    assert numeric(value) == expected


def test_minutes_are_utc_minutes() -> None:
    t = 1_700_000_000.0  # 2023-11-14T22:13:20Z
    assert minute_start(t) == 1_699_999_980
    assert minute_label(minute_start(t)) == "2023-11-14T22:13:00Z"
    assert minute_start(1_699_999_980.0) == 1_699_999_980
    assert minute_start(1_699_999_979.999) == 1_699_999_920


def test_table_groups_rows_by_minute_and_skips_what_is_not_a_number() -> None:
    table = MinuteTable(["RPM", "SPEED", "COOLANT_TEMP"])
    start = 1_699_999_980.0  # a minute boundary
    for i in range(120):  # two minutes at 1 Hz
        t = start + i
        table.add(
            t, {"RPM": 800 + i, "SPEED": None if i % 2 else i, "OTHER": 5, "COOLANT_TEMP": "x"}
        )
    assert len(table.closed) == 1
    table.close()
    rows = table.closed
    assert [r["minute"] for r in rows] == ["2023-11-14T22:13:00Z", "2023-11-14T22:14:00Z"]
    first = rows[0]
    assert first["rows"] == 60
    vals = first["values"]
    assert isinstance(vals, dict)
    assert set(vals) == {"RPM", "SPEED", "COOLANT_TEMP"}
    assert vals["RPM"]["count"] == 60
    assert vals["RPM"]["mean"] == statistics.fmean(range(800, 860))
    assert vals["SPEED"]["count"] == 30
    assert vals["SPEED"]["max"] == 58
    assert vals["COOLANT_TEMP"] == summarize([])
    assert rows[1]["values"]["RPM"]["min"] == 860  # type: ignore[index]
    json.dumps(rows, allow_nan=False)  # JSON as it is


def test_current_minute_and_a_clock_stepped_back() -> None:
    table = MinuteTable(["RPM"])
    assert table.current() is None and table.close() is None
    table.add(120.0, {"RPM": 1})
    table.add(130.0, {"RPM": 3})
    cur = table.current()
    assert cur is not None and cur["rows"] == 2
    assert table.closed == []
    table.add(60.0, {"RPM": 7})  # the clock went back: a new row, nothing reordered
    table.close()
    assert [r["minute"] for r in table.closed] == ["1970-01-01T00:02:00Z", "1970-01-01T00:01:00Z"]
