"""Pure decisions of the recorder: names, sequence numbers, rotation, flush."""

from __future__ import annotations

import pytest

from eccm.sample import Layout
from eccm.store.names import (
    data_name,
    next_seq,
    parse_stem,
    sidecar_name,
    stem_of,
    uploaded_name,
)
from eccm.store.rotation import OpenState, Reason, RotationPolicy, flush_due

L1 = Layout(fast=("RPM",), slow=("COOLANT_TEMP",), gps=False)
TRIP = "20231114T221320Z"


def test_names_follow_the_spec() -> None:
    name = data_name("car-1", TRIP, 7, ".tsv")
    assert name == "car-1_20231114T221320Z_0007.tsv"
    assert uploaded_name(name, "gzip") == name + ".gz"
    assert uploaded_name(name, "none") == name
    assert sidecar_name(uploaded_name(name, "gzip")) == name + ".gz.json"
    assert parse_stem(name, ".tsv") == ("car-1", TRIP, 7)
    assert parse_stem(name, ".csv") is None
    assert parse_stem("notes.tsv", ".tsv") is None


def test_next_seq_counts_every_kind_of_file_of_the_trip() -> None:
    assert next_seq("car", TRIP, []) == 1
    names = [
        f"car_{TRIP}_0001.tsv.gz",
        f"car_{TRIP}_0001.tsv.gz.json",
        f"car_{TRIP}_0002.tsv.part",
        f"car_{TRIP}_0009.tsv.part.meta.json",
        "car_20231114T221321Z_0040.tsv.gz",  # another trip
        f"other_{TRIP}_0050.tsv.gz",  # another car
    ]
    assert next_seq("car", TRIP, names) == 10


def test_next_seq_never_fills_a_gap_left_by_an_uploaded_file() -> None:
    # 0001 was uploaded and deleted; 0002 remains: 0001 must not come back.
    assert next_seq("car", TRIP, [f"car_{TRIP}_0002.tsv"]) == 3


def test_next_seq_goes_past_9999() -> None:
    assert next_seq("car", TRIP, [f"car_{TRIP}_9999.tsv"]) == 10000
    assert data_name("car", TRIP, 10000, ".tsv").endswith("_10000.tsv")


@pytest.mark.parametrize(
    "suffix",
    ["", ".part", ".gz", ".json", ".gz.json", ".part.meta.json", ".gz.tmp", ".gz.json.tmp"],
)
def test_stem_of_recognises_every_file_of_a_stem(suffix: str) -> None:
    stem = f"my.car_{TRIP}_0003.csv"
    assert stem_of(stem + suffix, ".csv") == stem


@pytest.mark.parametrize(
    "name",
    [
        "notes.tsv",
        f"car_{TRIP}_0003.tsv",  # another extension
        f"car_{TRIP}_0003.csv.bak",
        f"car_{TRIP}_0003.csv.gz.corrupt",
        ".eccm-sequence",
        "uploaded",
    ],
)
def test_stem_of_ignores_files_that_are_not_ours(name: str) -> None:
    assert stem_of(name, ".csv") is None


def state(**kw: object) -> OpenState:
    base: dict[str, object] = {
        "trip_id": TRIP,
        "layout": L1,
        "opened_at": 100.0,
        "size": 100,
        "rows": 1,
    }
    base.update(kw)
    return OpenState(**base)  # type: ignore[arg-type]


POLICY = RotationPolicy(max_seconds=300.0, max_bytes=1000)


def test_nothing_open_nothing_to_close() -> None:
    assert POLICY.before_row(None, TRIP, L1, 10, 1e9) is None
    assert POLICY.idle(None, 1e9) is None


def test_rotates_by_age_at_the_limit_not_before() -> None:
    assert POLICY.before_row(state(), TRIP, L1, 10, 399.999) is None
    assert POLICY.before_row(state(), TRIP, L1, 10, 400.0) is Reason.AGE
    assert POLICY.idle(state(), 399.0) is None
    assert POLICY.idle(state(), 400.0) is Reason.AGE


def test_rotates_when_the_row_would_exceed_the_size() -> None:
    assert POLICY.before_row(state(size=990), TRIP, L1, 10, 100.0) is None
    assert POLICY.before_row(state(size=990), TRIP, L1, 11, 100.0) is Reason.SIZE


def test_a_row_larger_than_the_limit_still_goes_into_an_empty_file() -> None:
    assert POLICY.before_row(state(size=50, rows=0), TRIP, L1, 5000, 100.0) is None


def test_rotates_on_trip_change_and_layout_change() -> None:
    assert POLICY.before_row(state(), "20231114T230000Z", L1, 10, 100.0) is Reason.TRIP
    l2 = Layout(fast=("RPM", "SPEED"), slow=("COOLANT_TEMP",), gps=False)
    assert POLICY.before_row(state(), TRIP, l2, 10, 100.0) is Reason.LAYOUT
    assert POLICY.before_row(state(), TRIP, Layout(("RPM",), ("COOLANT_TEMP",), True), 10, 100.0)


def test_units_alone_do_not_rotate() -> None:
    same = Layout(fast=("RPM",), slow=("COOLANT_TEMP",), gps=False, info={"RPM": ("rpm", "x")})
    assert POLICY.before_row(state(), TRIP, same, 10, 100.0) is None


def test_flush_every_row_or_at_most_once_per_interval() -> None:
    assert flush_due(0.0, last_flush=100.0, now=100.0)
    assert not flush_due(1.0, last_flush=100.0, now=100.5)
    assert flush_due(1.0, last_flush=100.0, now=101.0)
