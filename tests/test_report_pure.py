"""The pure parts of the report commands: fleet SQL (run by DuckDB over local files laid out
like the bucket), object selection, schema text, the page and the plotted series."""

from __future__ import annotations

import gzip
import json
from datetime import date
from pathlib import Path
from typing import Any

import pytest

from eccm.report.fleet import as_csv, fleet_sql, pick
from eccm.report.page import FileInfo, render
from eccm.report.schema import Layout, athena, column_of, columns_of, duckdb
from eccm.report.series import fuel_rate, series
from tests.report_helpers import summary

SETTINGS = {"air_fuel_ratio": 14.7, "fuel_density_kg_per_l": 0.745, "max_gap_s": 5.0}


def _bucket(tmp_path: Path) -> tuple[list[str], list[str]]:
    """Two cars, two days, a sidecar and a foreign object that must not be read."""
    files = {
        "car=a/date=2026-03-01/a_20260301T080000Z_0001.tsv.gz": 3,
        "car=a/date=2026-03-01/a_20260301T080000Z_0002.tsv.gz": 2,
        "car=a/date=2026-03-02/a_20260302T080000Z_0001.tsv.gz": 4,
        "car=b/date=2026-03-01/b_20260301T090000Z_0001.csv.gz": 1,
    }
    keys = []
    for key, n in files.items():
        sep = "," if ".csv" in key else "\t"
        lines = [sep.join(["TIME_UTC", "CAR_ID", "SPEED"])]
        lines += [sep.join([f"2026-03-01T08:00:0{i}.000Z", "x", str(i)]) for i in range(n)]
        path = tmp_path / key
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(gzip.compress(("\n".join(lines) + "\n").encode()))
        (tmp_path / (key + ".json")).write_text("{}")  # a sidecar
        keys += [key, key + ".json"]
    docs = {
        "car=a/date=2026-03-01/a_20260301T080000Z_summary.json": ("a", 10.5, 0.7, ["P0301"]),
        "car=a/date=2026-03-02/a_20260302T080000Z_summary.json": ("a", 2.0, 0.2, []),
    }
    for key, (car, km, fuel, codes) in docs.items():
        doc = summary(car, "20260301T080000Z", "x", "y", distance_km=km, fuel_l=fuel, moving_s=1800)
        doc["diagnostics"]["state"]["stored"] = [{"code": c, "description": ""} for c in codes]
        (tmp_path / key).write_text(json.dumps(doc))
        keys.append(key)
    keys.append("car=a/_eccm_probe")
    data, summaries = pick(keys, None)
    assert len(data) == 4 and len(summaries) == 2
    return [str(tmp_path / k) for k in data], [str(tmp_path / k) for k in summaries]


def test_fleet_sql_counts_rows_and_sums_the_summaries(tmp_path: Path) -> None:
    duckdb = pytest.importorskip("duckdb")
    data, summaries = _bucket(tmp_path)
    got = duckdb.connect().execute(fleet_sql(data, summaries)).fetchall()
    assert got == [
        ("a", "2026-03-01", 1, 5, 0.5, 10.5, 0.7, "P0301"),
        ("a", "2026-03-02", 1, 4, 0.5, 2.0, 0.2, ""),
        # No summary yet (still running): a trip with rows, its figures unknown. Found: it
        # was counted as 0 trips of a day with rows (the demo's running trip: 0 and 805).
        ("b", "2026-03-01", 1, 1, None, None, None, ""),
    ]


def test_fleet_sql_with_no_summaries(tmp_path: Path) -> None:
    duckdb = pytest.importorskip("duckdb")
    data, _ = _bucket(tmp_path)
    got = duckdb.connect().execute(fleet_sql(data[:1], [])).fetchall()
    assert got == [("a", "2026-03-01", 1, 3, None, None, None, "")]


def test_fleet_counts_a_trip_across_midnight_on_the_day_it_started(tmp_path: Path) -> None:
    """Found: a trip that crossed midnight (UTC) had its km and hours on its first day but
    the rows of its later files (partitioned by their first row) on the next day, which
    then showed rows of 0 trips and 0 km, and --since that day kept them."""
    duckdb = pytest.importorskip("duckdb")
    trip = "20260301T235000Z"
    files = {
        f"car=a/date=2026-03-01/a_{trip}_0001.tsv.gz": 3,
        f"car=a/date=2026-03-02/a_{trip}_0002.tsv.gz": 2,  # after midnight
    }
    keys = []
    for key, n in files.items():
        lines = ["TIME_UTC\tCAR_ID"] + [f"2026-03-01T23:5{i}:00.000Z\ta" for i in range(n)]
        path = tmp_path / key
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(gzip.compress(("\n".join(lines) + "\n").encode()))
        keys.append(key)
    key = f"car=a/date=2026-03-01/a_{trip}_summary.json"
    doc = summary("a", trip, "x", "y", distance_km=20.0, fuel_l=1.5, moving_s=1800)
    (tmp_path / key).write_text(json.dumps(doc))
    keys.append(key)
    data, summaries = pick(keys, None)
    sql = fleet_sql([str(tmp_path / k) for k in data], [str(tmp_path / k) for k in summaries])
    got = duckdb.connect().execute(sql).fetchall()
    assert got == [("a", "2026-03-01", 1, 5, 0.5, 20.0, 1.5, "")]
    assert pick(keys, date(2026, 3, 2)) == ([], [])


def test_fleet_leaves_what_no_summary_knows_empty(tmp_path: Path) -> None:
    """Found: a GNSS-only car (no adapter: no SPEED, no fuel; its summary says null) showed
    0.0 km and 0.0 L a day in `eccm fleet`, as if it had stood still."""
    duckdb = pytest.importorskip("duckdb")
    trip = "20260301T080000Z"
    key = f"car=g/date=2026-03-01/g_{trip}_summary.json"
    doc = summary("g", trip, "x", "y", distance_km=None, fuel_l=None, moving_s=0.0)
    (tmp_path / key).parent.mkdir(parents=True)
    (tmp_path / key).write_text(json.dumps(doc))
    got = duckdb.connect().execute(fleet_sql([], [str(tmp_path / key)])).fetchall()
    assert got == [("g", "2026-03-01", 1, 0, 0.0, None, None, "")]
    assert as_csv(got).splitlines()[1] == "g,2026-03-01,1,0,0.0,,,"


def test_pick_keeps_the_days_from_since_on() -> None:
    keys = [
        "p/car=a/date=2026-02-28/a_20260228T080000Z_0001.tsv.gz",
        "p/car=a/date=2026-03-01/a_20260301T080000Z_0001.tsv.gz",
        "p/car=a/date=2026-03-01/a_20260301T080000Z_0001.tsv.gz.json",
        "p/car=a/date=2026-03-01/a_20260301T080000Z_summary.json",
        "p/car=a/date=2026-03-01/a_20260301T080000Z_0002.tsv.gz.age",
    ]
    data, summaries = pick(keys, date(2026, 3, 1))
    assert data == [keys[1]] and summaries == [keys[3]]


def test_schema_types_come_from_the_units() -> None:
    assert column_of({"name": "RPM", "unit": "revolutions_per_minute"}).numeric
    assert not column_of({"name": "FUEL_STATUS", "unit": ""}).numeric
    assert column_of({"name": "GPS_HDOP", "unit": ""}).numeric
    cols = columns_of(
        [
            {"columns": [{"name": "TIME_UTC", "unit": ""}, {"name": "A", "unit": "x"}]},
            {"columns": [{"name": "B", "unit": ""}, {"name": "A", "unit": "x"}]},
        ]
    )
    assert [c.name for c in cols] == ["TIME_UTC", "A", "B"]
    assert [c.name for c in columns_of([])][:3] == ["TIME_UTC", "CAR_ID", "TRIP_ID"]


def test_athena_projects_known_cars_or_injects_them() -> None:
    cols = columns_of([])
    known = athena(Layout("s3://b/p/", cols, cars=("a", "b")))
    assert "'projection.car.values' = 'a,b'" in known
    assert "'storage.location.template' = 's3://b/p/car=${car}/date=${date}/'" in known
    assert "'projection.car.type' = 'injected'" in athena(Layout("s3://b/p/", cols))
    assert "'s3://b/p/car=*/date=*/*.csv'" in duckdb(Layout("s3://b/p/", cols, ",", ".csv"))


def test_the_page_escapes_what_it_shows() -> None:
    doc: dict[str, Any] = summary("<b>car", "20260301T080000Z", "2026-03-01T08:00:00.000Z", "x")
    doc["diagnostics"]["events"].append(
        {
            "time": "t",
            "event": "dtc_added",
            "kind": "stored",
            "code": "P0301",
            "description": "<script>alert(1)</script>",
        }
    )
    page = render(doc, [], [FileInfo("f.tsv.gz", 10, 3, True)])
    assert "<b>car" not in page and "&lt;b&gt;car" in page
    assert "<script>" not in page
    assert 'data-key="distance_km">5.25<' in page
    assert "new stored code P0301" in page


def test_series_takes_fuel_rate_before_maf_and_skips_gaps() -> None:
    assert fuel_rate({"FUEL_RATE": "3.0", "MAF": "10"}, SETTINGS) == 3.0
    assert fuel_rate({"MAF": "14.7"}, SETTINGS) == pytest.approx(3600 / 745)
    assert fuel_rate({"RPM": "900"}, SETTINGS) is None
    rows = [
        {"TIME_UTC": "2026-03-01T08:00:00.000Z", "FUEL_RATE": "3.6"},
        {"TIME_UTC": "2026-03-01T08:00:01.000Z", "FUEL_RATE": "3.6"},  # 1 ms of fuel
        {"TIME_UTC": "2026-03-01T08:10:00.000Z", "FUEL_RATE": "3.6"},  # a gap: not integrated
        {
            "TIME_UTC": "2026-03-01T08:10:02.000Z",
            "FUEL_RATE": "3.6",
            "GPS_LATITUDE": "1",
            "GPS_LONGITUDE": "2",
            "SPEED": "50",
        },
    ]
    s = series(rows, SETTINGS)
    assert s.fuel_cum_l == pytest.approx([0.0, 0.001, 0.001, 0.003])
    assert s.track == [(1.0, 2.0, 50.0)]
