"""The logbook (eccm trips): pure rows from summaries and the ends of the data, and the
command on a record folder written like the recorder's (its distance and fuel are the
summary's)."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable
from datetime import UTC, date, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from eccm.cli import main
from eccm.report.logbook import (
    COLUMNS,
    Ends,
    Span,
    as_csv,
    as_table,
    ends_of,
    entry,
    selected,
    without_summary,
)
from tests.report_helpers import HEADER, summary, write_trip

CAR = "van-1"
TRIP = "20260301T081500Z"


def row(t: str, lat: str = "", lon: str = "", odo: str = "") -> list[str]:
    return [t, CAR, TRIP, "900", "30", odo, lat, lon]


def test_ends_take_the_first_and_last_known_position_and_odometer() -> None:
    first = [row("2026-03-01T08:15:00.000Z"), row("2026-03-01T08:15:01.000Z", "48.1", "11.5")]
    last = [
        row("2026-03-01T08:25:00.000Z", "48.2", "11.6", "12345"),
        row("2026-03-01T08:25:01.000Z", odo="12350"),
    ]

    def dicts(rows: list[list[str]]) -> list[dict[str, str]]:
        return [dict(zip(HEADER, r, strict=True)) for r in rows]

    ends = ends_of(dicts(first), dicts(last))
    assert (ends.start_lat, ends.start_lon, ends.end_lat, ends.end_lon) == (48.1, 11.5, 48.2, 11.6)
    assert (ends.odometer_start_km, ends.odometer_end_km) == (None, 12350.0)


def test_mil_and_new_codes_come_from_the_events() -> None:
    doc = summary(CAR, TRIP, "2026-03-01T08:15:00.000Z", "2026-03-01T08:25:00.000Z")
    doc["diagnostics"]["events"] += [
        {"time": "2026-03-01T08:20:00.000Z", "event": "mil_on"},
        {
            "time": "2026-03-01T08:20:00.000Z",
            "event": "dtc_added",
            "kind": "stored",
            "code": "P0301",
            "description": "Cylinder 1 Misfire",
        },
    ]
    e = entry(doc, Ends())
    assert e.mil is True and e.new_dtcs == ("P0301",)
    assert e.distance_km == 5.25 and e.fuel_l == 0.4
    line = next(csv.DictReader(io.StringIO(as_csv([e], UTC))))
    assert list(line) == COLUMNS
    assert line["mil"] == "yes" and line["new_dtcs"] == "P0301" and line["distance_km"] == "5.25"


def test_dates_are_chosen_in_the_given_zone() -> None:
    # 23:30 UTC on 1 March is 2 March in Berlin.
    late = entry(summary(CAR, TRIP, "2026-03-01T23:30:00.000Z", "2026-03-01T23:50:00.000Z"), Ends())
    berlin = ZoneInfo("Europe/Berlin")
    assert selected([late], date(2026, 3, 2), None, berlin) == [late]
    assert selected([late], date(2026, 3, 2), None, UTC) == []
    assert "2026-03-02 00:30" in as_table([late], berlin)


def test_a_trip_past_midnight_ends_on_its_own_date_in_the_table() -> None:
    # Found: the end column showed the time of day alone, 00:20 after a start at 23:30.
    late = entry(summary(CAR, TRIP, "2026-03-01T23:30:00.000Z", "2026-03-02T00:20:00.000Z"), Ends())
    line = as_table([late], UTC).splitlines()[2]
    assert line.split()[1:5] == ["2026-03-01", "23:30", "2026-03-02", "00:20"], line
    same_day = entry(
        summary(CAR, TRIP, "2026-03-01T08:15:00.000Z", "2026-03-01T08:25:00.000Z"), Ends()
    )
    assert as_table([same_day], UTC).splitlines()[2].split()[1:4] == [
        "2026-03-01",
        "08:15",
        "08:25",
    ]


def test_the_totals_of_trips_without_distance_or_fuel_are_empty_not_zero() -> None:
    """Found: GNSS-only trips (no SPEED, no fuel) totalled "0.00" km and "0.00" L."""
    gnss_only = entry(
        summary(
            CAR,
            TRIP,
            "2026-03-01T08:15:00.000Z",
            "2026-03-01T08:25:00.000Z",
            distance_km=None,
            fuel_l=None,
            l_per_100km=None,
        ),
        Ends(48.1, 11.5, 48.2, 11.6),
    )
    total = as_table([gnss_only], UTC).splitlines()[-1].split()
    assert total == ["1", "trip(s)", "0:10:00"], total
    known = entry(
        summary(
            CAR,
            "20260301T090000Z",
            "2026-03-01T09:00:00.000Z",
            "2026-03-01T09:10:00.000Z",
        ),
        Ends(),
    )
    total = as_table([gnss_only, known], UTC).splitlines()[-1].split()
    assert total == ["2", "trip(s)", "0:20:00", "5.25", "0.40"], total


def test_the_total_time_of_trips_without_a_summary_is_empty_not_zero() -> None:
    """Found: a trip still running (no summary yet: `eccm trips` during the demo) showed an
    empty time but a total line of "0:00:00"."""
    running = without_summary(
        CAR,
        TRIP,
        Ends(48.1, 11.5, 48.2, 11.6),
        Span(
            datetime(2026, 3, 1, 8, 15, tzinfo=UTC),
            datetime(2026, 3, 1, 8, 25, tzinfo=UTC),
        ),
    )
    assert running is not None
    total = as_table([running], UTC).splitlines()[-2].split()
    assert total == ["1", "trip(s)"], total
    known = entry(
        summary(CAR, "20260301T090000Z", "2026-03-01T09:00:00.000Z", "2026-03-01T09:10:00.000Z"),
        Ends(),
    )
    total = as_table([running, known], UTC).splitlines()[-2].split()
    assert total == ["2", "trip(s)", "0:10:00", "5.25", "0.40"], total


def test_trips_command_on_a_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    records = tmp_path / "records"
    doc = summary(CAR, TRIP, "2026-03-01T08:15:00.000Z", "2026-03-01T08:25:00.000Z")
    write_trip(
        records / "uploaded",
        CAR,
        TRIP,
        [
            [row("2026-03-01T08:15:00.000Z", "48.1", "11.5", "100")],
            [row("2026-03-01T08:25:00.000Z", "48.2", "11.6", "106")],
        ],
        doc,
    )
    assert main(["trips", "--from", str(records), "--format", "json"]) == 0
    (got,) = json.loads(capsys.readouterr().out)
    assert got["distance_km"] == doc["totals"]["distance_km"]
    assert got["fuel_l"] == doc["totals"]["fuel_l"]
    assert (got["odometer_start_km"], got["odometer_end_km"]) == (100.0, 106.0)
    assert (got["end_lat"], got["end_lon"]) == (48.2, 11.6)
    # Trips outside the days asked for were told as "no trip summary in ...", which sent
    # the user looking for a missing folder.
    assert main(["trips", "--from", str(records), "--since", "2026-03-02"]) == 1
    assert capsys.readouterr().err == (
        f"eccm trips: no trip in {records} within --since 2026-03-02 (its 1 trip(s) lie "
        "outside; times and days in UTC)\n"
    )
    # A script's export of a day without trips was an empty file, not a CSV or JSON one.
    for fmt, empty in (("csv", ",".join(COLUMNS) + "\n"), ("json", "[]\n")):
        assert (
            main(["trips", "--from", str(records), "--since", "2026-03-02", "--format", fmt]) == 1
        )
        out, err = capsys.readouterr()
        assert out == empty and err.startswith("eccm trips: no trip in "), (out, err)
    assert (
        main(["trips", "--from", str(records), "--since", "2026-03-02", "--until", "2026-03-01"])
        == 2
    )
    assert capsys.readouterr().err == (
        "eccm trips: --since 2026-03-02 is after --until 2026-03-01: no day is in between\n"
    )


def test_the_csv_start_and_end_hold_every_row_of_the_trip(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Found: the CSV logbook cut start and end to the second (08:25:00 for a last row at
    08:25:00.212), so a join of the logbook with the rows (TIME_UTC BETWEEN start AND end)
    lost the trip's last rows, and end - start disagreed with duration_s."""
    times = ["2026-03-01T08:15:00.527Z", "2026-03-01T08:20:00.000Z", "2026-03-01T08:25:00.212Z"]
    doc = summary(CAR, TRIP, times[0], times[-1], duration_s=599.685)
    write_trip(tmp_path, CAR, TRIP, [[row(t, "48.1", "11.5") for t in times]], doc)
    for zone in ("UTC", "Europe/Berlin"):
        assert main(["trips", "--from", str(tmp_path), "--format", "csv", "--tz", zone]) == 0
        (line,) = csv.DictReader(io.StringIO(capsys.readouterr().out))
        start, end = (datetime.fromisoformat(line[k]) for k in ("start", "end"))
        for t in times:
            assert start <= datetime.fromisoformat(t) <= end, (t, line["start"], line["end"])
        assert (end - start).total_seconds() == float(line["duration_s"])


@pytest.mark.parametrize("setup", ["empty", "missing"])
def test_trips_bad_folder_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], setup: str
) -> None:
    folder = tmp_path / "records"
    if setup == "empty":
        folder.mkdir()
    assert main(["trips", "--from", str(folder)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err


def test_trips_on_encrypted_summaries_says_how_many_it_skipped_and_what_reads_them(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # An --encrypt demo's folder: every summary is .age (its content is not read here).
    records = tmp_path / "records"
    (records / "uploaded").mkdir(parents=True)
    for trip in (TRIP, "20260301T091500Z"):
        (records / "uploaded" / f"{CAR}_{trip}_summary.json.age").write_bytes(b"sealed")
    assert main(["trips", "--from", str(records)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert err.startswith(f"eccm trips: no trip summary in {records}; 2 encrypted trip summaries")
    assert "(.age)" in err and "`eccm decrypt -i" in err
    # --car counts that car's only.
    assert main(["trips", "--from", str(records), "--car", "other"]) == 1
    assert capsys.readouterr().err == f"eccm trips: no trip summary of car other in {records}\n"


def test_report_on_encrypted_summaries_says_the_same(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    records = tmp_path / "records"
    records.mkdir()
    (records / f"{CAR}_{TRIP}_summary.json.age").write_bytes(b"sealed")
    assert main(["report", "--from", str(records), "-o", str(tmp_path / "r.html")]) == 1
    err = capsys.readouterr().err
    assert "no trip summary" in err and "1 encrypted trip summary was skipped (.age)" in err
    assert "run eccm report --from" in err and "Traceback" not in err


def test_the_bucket_also_counts_its_encrypted_summaries() -> None:
    from eccm.report.source import BucketSource

    keys = [
        f"car-logs/car={CAR}/date=2026-03-01/{CAR}_{TRIP}_summary.json.age",
        f"car-logs/car={CAR}/date=2026-03-01/{CAR}_{TRIP}_0001.tsv.gz.age",
    ]

    class Pages:
        def paginate(self, **_kw: object) -> list[dict[str, object]]:
            return [{"Contents": [{"Key": k, "Size": 1} for k in keys]}]

    class Client:
        def get_paginator(self, _name: str) -> Pages:
            return Pages()

    source = BucketSource(Client(), "b", "car-logs", str)
    assert source.summaries() == []
    assert [(r.car, r.trip) for r in source.encrypted_summaries()] == [(CAR, TRIP)]


def test_a_data_file_cut_short_is_read_up_to_the_damage_and_named(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    # A copy that stopped half-way (or a card that lost the end of a file): the trip's
    # logbook line and report come from the rows before the damage, and say which file.
    records = tmp_path / "records"
    doc = summary(CAR, TRIP, "2026-03-01T08:15:00.000Z", "2026-03-01T08:25:00.000Z")
    minute = [row(f"2026-03-01T08:25:{s:02d}.000Z", "48.2", f"11.{s:03d}") for s in range(60)]
    write_trip(records, CAR, TRIP, [[row("2026-03-01T08:15:00.000Z", "48.1", "11.5")], minute], doc)
    last = records / f"{CAR}_{TRIP}_0002.tsv.gz"
    whole = last.read_bytes()
    last.write_bytes(whole[: len(whole) * 2 // 3])
    assert main(["trips", "--from", str(records), "--format", "json"]) == 0
    captured = capsys.readouterr()
    (got,) = json.loads(captured.out)
    assert got["end_lat"] == 48.2 and 11.0 <= got["end_lon"] < 11.059  # a row before the cut
    assert "Traceback" not in captured.err
    assert f"{last.name}: damaged gzip" in caplog.text and "rows before the damage" in caplog.text
    out = tmp_path / "trip.html"
    assert main(["report", "--from", str(records), "-o", str(out)]) == 0
    assert "damaged gzip" in out.read_text(encoding="utf-8")


@pytest.mark.parametrize(
    ("edit", "report_code"),
    [
        (lambda doc: "{not json", 1),
        (lambda doc: json.dumps({**doc, "first_time": "yesterday"}), 0),  # shown as written
        (lambda doc: json.dumps({**doc, "diagnostics": 5, "minutes": "x"}), 1),
    ],
    ids=["not-json", "bad-time", "wrong-types"],
)
def test_a_summary_edited_by_hand_costs_only_its_own_trip(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
    edit: Callable[[dict[str, object]], str],
    report_code: int,
) -> None:
    records = tmp_path / "records"
    other = "20260302T081500Z"
    for trip, day in ((TRIP, "01"), (other, "02")):
        doc = summary(CAR, trip, f"2026-03-{day}T08:15:00.000Z", f"2026-03-{day}T08:25:00.000Z")
        write_trip(records, CAR, trip, [[row(f"2026-03-{day}T08:15:00.000Z")]], doc)
    edited = records / f"{CAR}_{other}_summary.json"
    edited.write_text(edit(json.loads(edited.read_text())))
    assert main(["trips", "--from", str(records), "--format", "csv"]) == 0
    captured = capsys.readouterr()
    assert [line["trip"] for line in csv.DictReader(io.StringIO(captured.out))] == [TRIP]
    assert f"{edited.name} is not" in caplog.text and "left out of the logbook" in caplog.text
    # Its report is written, or refused in one line naming it, never a traceback.
    out = str(tmp_path / "r.html")
    assert main(["report", other, "--from", str(records), "-o", out]) == report_code
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert report_code == 0 or (err.count("\n") == 1 and edited.name in err), err
    # Alone in its folder, its error is the command's (a trip with rows and no summary
    # would have a line of its own: its files go too).
    for path in records.glob(f"{CAR}_{TRIP}_*"):
        path.unlink()
    assert main(["trips", "--from", str(records)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and edited.name in err, err


def test_when_no_summary_can_be_read_every_one_is_named(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Only the first was named: the user mended it and met the next error, and so on.
    records = tmp_path / "records"
    trips = [f"2026030{day}T081500Z" for day in (1, 2, 3)]
    for trip in trips:
        first = f"2026-03-0{trip[7]}T08:15:00.000Z"
        write_trip(records, CAR, trip, [[row(first)]], summary(CAR, trip, first, first))
        (records / f"{CAR}_{trip}_summary.json").write_text("{not json")
    assert main(["trips", "--from", str(records)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("eccm: error: none of the 3 trip summaries can be read:\n"), err
    for trip in trips:
        assert f"  {CAR}_{trip}_summary.json is not valid JSON" in err, err
    assert "Traceback" not in err


@pytest.mark.parametrize("command", ["fleet", "trips"])
def test_bucket_without_an_endpoint_offers_from_only_where_it_exists(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], command: str
) -> None:
    pytest.importorskip("duckdb")
    config = tmp_path / "config.ini"
    config.write_text(
        f"[DEFAULT]\nCAR_IDENTIFIER={CAR}\nOBD_INTERFACE=/dev/null\n"
        f"RECORD_DIRECTORY_LOCATION={tmp_path / 'records'}\n"
    )
    assert main([command, "--bucket", "--config", str(config)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "S3_SERVER_ENDPOINT is empty" in err, err
    # eccm fleet has no --from: it must not be offered.
    assert ("--from DIR" in err) == (command == "trips"), err


def test_trips_read_the_partition_folders_that_decrypt_bucket_writes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # eccm decrypt --bucket car-logs/car=van-1/ -o logs: logs/car=van-1/date=.../ files.
    logs = tmp_path / "logs"
    doc = summary(CAR, TRIP, "2026-03-01T23:55:00.000Z", "2026-03-02T00:05:00.000Z")
    first = logs / f"car={CAR}" / "date=2026-03-01"
    write_trip(first, CAR, TRIP, [[row("2026-03-01T23:55:00.000Z", "48.1", "11.5")]], doc)
    # The file closed after midnight lies under the next day.
    second = logs / f"car={CAR}" / "date=2026-03-02"
    second.mkdir()
    later = [[row("2026-03-01T23:55:00.000Z")], [row("2026-03-02T00:05:00.000Z", "48.2", "11.6")]]
    write_trip(tmp_path / "scratch", CAR, TRIP, later, doc)
    (tmp_path / "scratch" / f"{CAR}_{TRIP}_0002.tsv.gz").rename(
        second / f"{CAR}_{TRIP}_0002.tsv.gz"
    )
    for source in (logs, logs / f"car={CAR}"):
        assert main(["trips", "--from", str(source), "--format", "json"]) == 0
        (got,) = json.loads(capsys.readouterr().out)
        assert (got["start_lat"], got["end_lat"]) == (48.1, 48.2), source


def test_a_trip_cut_by_a_power_cut_ends_at_its_last_row_and_is_marked(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # A trial's find: a summary recovered from its last checkpoint (109 rows, 0.27 km)
    # stood in the logbook as the whole trip, its end 10 s before the files' last row.
    records = tmp_path / "records"
    doc = summary(CAR, TRIP, "2026-03-01T08:15:00.000Z", "2026-03-01T08:25:00.000Z")
    doc.update(complete=False, recovered=True)
    rows = [row("2026-03-01T08:15:00.000Z"), row("2026-03-01T08:25:08.500Z")]
    write_trip(records, CAR, TRIP, [rows], doc)
    assert main(["trips", "--from", str(records), "--format", "csv"]) == 0
    line = next(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert line["end"] == "2026-03-01T08:25:08.500+00:00"  # every row lies within
    assert line["distance_km"] == "5.25" and line["complete"] == "no"
    assert main(["trips", "--from", str(records)]) == 0
    table = capsys.readouterr().out
    assert "5.25*" in table and "* cut by a power cut" in table


def test_a_trip_with_rows_but_no_summary_has_its_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # A trip cut in its first seconds (before any checkpoint), or whose summary was lost,
    # was not in the logbook at all; alone, "no trip summary in ..." although rows were.
    records = tmp_path / "records"
    other = "20260302T081500Z"
    doc = summary(CAR, TRIP, "2026-03-01T08:15:00.000Z", "2026-03-01T08:25:00.000Z")
    write_trip(records, CAR, TRIP, [[row("2026-03-01T08:15:00.000Z")]], doc)
    bare = [row("2026-03-02T08:15:00.250Z", "48.1", "11.5"), row("2026-03-02T08:15:01.750Z")]
    write_trip(records, CAR, other, [bare], {})
    (records / f"{CAR}_{other}_summary.json").unlink()
    assert main(["trips", "--from", str(records), "--format", "json"]) == 0
    lines = json.loads(capsys.readouterr().out)
    assert [e["trip"] for e in lines] == [TRIP, other]
    cut = lines[1]
    assert cut["complete"] is False and cut["distance_km"] is None and cut["duration_s"] is None
    assert (cut["start"], cut["end"]) == (
        "2026-03-02T08:15:00.250+00:00",
        "2026-03-02T08:15:01.750+00:00",
    )
    assert (cut["start_lat"], cut["start_lon"]) == (48.1, 11.5)
    assert lines[0]["complete"] is True
    # The same line for a trip that still runs (its summary comes when it ends): the
    # note under the table said only "cut by a power cut" of it (the demo's running trip).
    assert main(["trips", "--from", str(records)]) == 0
    assert "still running" in capsys.readouterr().out
