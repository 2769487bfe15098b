"""Reports, logbook, fleet and schema from a recorded drive (issue 14): the daemon on the
ELM327 emulator and a simulated GNSS receiver uploads to SeaweedFS and keeps its files
under uploaded/; every command then reads the folder and the bucket, and what it shows is
checked against the trip summary and a direct count of the rows."""

from __future__ import annotations

import csv
import gzip
import io
import json
import re
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from eccm.cli import main
from eccm.report.datafile import parse
from eccm.report.page import TOTALS, _fmt
from eccm.report.series import series
from eccm.sim.gnss import NmeaPty, Route
from eccm.sim.s3 import LocalS3
from eccm.store.names import (
    UPLOADED_DIR,
    parse_data_name,
    parse_sidecar_name,
    parse_summary_name,
)
from tests.browser_helpers import chromium, console, errors, require_browser
from tests.s3_helpers import write_config
from tests.s3server import config_values, get_object, list_objects
from tests.waiting import wait_until

ROUTE = Route(latitude=48.137, longitude=11.575, radius=300.0, speed=14.0)
CAR = "report-car"


@dataclass
class Drive:
    records: Path
    config: Path
    prefix: str  # S3_KEY_PREFIX
    server: LocalS3
    summary: dict[str, Any]

    @property
    def uploaded(self) -> Path:
        return self.records / UPLOADED_DIR


def _closed(folder: Path) -> list[Path]:
    return sorted(p for p in folder.glob("*.tsv.gz") if Path(f"{p}.json").exists())


@pytest.fixture(scope="module")
def drive(car: str, s3_http: LocalS3, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Drive]:
    tmp = tmp_path_factory.mktemp("report-drive")
    records = tmp / "records"
    with NmeaPty(ROUTE, rate_hz=2.0) as gnss:
        values = config_values(
            records,
            s3_http,
            CAR_IDENTIFIER=CAR,
            OBD_INTERFACE=car,
            OBD_PROTOCOL="6",
            GPS_POSITION_MONITORING="yes",
            GPS_INTERFACE=gnss.path,
            FILE_ROTATION_SECONDS="4",
            SAMPLE_INTERVAL="0.2",
            S3_SYNC_INTERVAL="2",
            S3_DELETE_AFTER_UPLOAD="no",
            OBD_SLOW_COMMANDS="COOLANT_TEMP,INTAKE_TEMP",
        )
        config = write_config(tmp / "config.ini", values)
        proc = subprocess.Popen(
            [sys.executable, "-m", "eccm.cli", "run", "--config", str(config)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        try:
            wait_until(
                lambda: len(_closed(records / UPLOADED_DIR)) >= 3,
                timeout=120,
                what="three uploaded data files",
            )
        finally:
            proc.send_signal(signal.SIGTERM)
            _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err.decode(errors="replace")[-2000:]
    # Whatever the last bounded attempt at SIGTERM left (the summary, the last file).
    up = subprocess.run(
        [sys.executable, "-m", "eccm.cli", "upload", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert up.returncode == 0, up.stderr
    (summary_path,) = (records / UPLOADED_DIR).glob("*_summary.json")
    yield Drive(
        records, config, values["S3_KEY_PREFIX"], s3_http, json.loads(summary_path.read_text())
    )


class _Cells(HTMLParser):
    """The totals' cells of a report page: {data-key: text}."""

    def __init__(self) -> None:
        super().__init__()
        self.cells: dict[str, str] = {}
        self._key: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._key = dict(attrs).get("data-key")

    def handle_data(self, data: str) -> None:
        if self._key is not None:
            self.cells[self._key] = data
            self._key = None


def report_cells(page: str) -> dict[str, str]:
    parser = _Cells()
    parser.feed(page)
    return parser.cells


def expected_cells(summary: dict[str, Any]) -> dict[str, str]:
    totals = summary["totals"]
    return {key: _fmt(totals[key]) for key, _label, _unit in TOTALS if key in totals}


def all_rows(folder: Path) -> list[dict[str, str]]:
    rows: list[dict[str, str]] = []
    # Zero-padded sequence numbers: the names sort in the order of the files.
    for p in _closed(folder):
        rows.extend(parse(p.read_bytes()))
    return rows


def test_the_report_shows_the_summary_figures(drive: Drive, tmp_path: Path) -> None:
    out = tmp_path / "trip.html"
    assert main(["report", "latest", "--from", str(drive.records), "-o", str(out)]) == 0
    page = out.read_text()
    assert report_cells(page) == expected_cells(drive.summary)
    assert page.count('<figure class="plot"') == 5  # speed/rpm, fuel, coolant, throttle, track
    # Nothing loads from the network: no script, stylesheet, image or font to fetch.
    assert not re.search(r"<script|<link|<img|src=|href=\"http|@import|url\((?!#)", page)
    # The cumulative fuel curve integrates the same rows as the trip computer did.
    s = series(all_rows(drive.uploaded), drive.summary["settings"])
    assert s.fuel_cum_l[-1] == pytest.approx(drive.summary["totals"]["fuel_l"], rel=0.02, abs=2e-4)


def test_the_report_from_the_bucket_equals_the_one_from_the_folder(
    drive: Drive, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "bucket.html"
    trip = drive.summary["trip"]
    assert main(["report", trip, "--bucket", "--config", str(drive.config), "-o", str(out)]) == 0
    assert report_cells(out.read_text()) == expected_cells(drive.summary)
    assert "file/s" in capsys.readouterr().err  # the progress bar


def test_the_report_opens_in_chromium_with_every_plot(drive: Drive, tmp_path: Path) -> None:
    require_browser()
    out = tmp_path / "trip.html"
    assert main(["report", "--from", str(drive.records), "-o", str(out)]) == 0
    with chromium(size=(1100, 900)) as driver:
        driver.get(out.as_uri())
        sizes = driver.execute_script(
            "return [...document.querySelectorAll('figure.plot')].map(f => {"
            " const s = f.querySelector('svg'); if (!s) return null;"
            " const r = s.getBoundingClientRect();"
            " return [r.width, r.height, s.querySelectorAll('path').length]; })"
        )
        broken = driver.execute_script(
            "return [...document.images].filter(i => !i.complete || !i.naturalWidth).length"
        )
        assert errors(console(driver)) == []
        driver.save_screenshot(str(tmp_path / "report.png"))
    assert len(sizes) == 5, sizes
    for size in sizes:
        assert size is not None and size[0] > 200 and size[1] > 100 and size[2] > 5, sizes
    assert broken == 0
    assert (tmp_path / "report.png").stat().st_size > 10_000


@pytest.mark.parametrize("where", ["folder", "bucket"])
def test_the_logbook_has_the_summary_distance_and_fuel(
    drive: Drive, where: str, capsys: pytest.CaptureFixture[str]
) -> None:
    source = ["--from", str(drive.records)] if where == "folder" else ["--bucket"]
    assert main(["trips", *source, "--config", str(drive.config), "--format", "json"]) == 0
    (trip,) = json.loads(capsys.readouterr().out)
    totals = drive.summary["totals"]
    assert trip["trip"] == drive.summary["trip"]
    assert trip["distance_km"] == totals["distance_km"]
    assert trip["fuel_l"] == totals["fuel_l"]
    assert trip["duration_s"] == totals["duration_s"]
    assert trip["start_lat"] == pytest.approx(ROUTE.latitude, abs=0.01)
    assert main(["trips", *source, "--config", str(drive.config), "--format", "csv"]) == 0
    (line,) = csv.DictReader(io.StringIO(capsys.readouterr().out))
    assert float(line["distance_km"]) == totals["distance_km"]


def _bucket_rows(drive: Drive) -> tuple[int, float]:
    """Rows of the data objects and km of the summaries, counted here directly."""
    rows, km = 0, 0.0
    for key in list_objects(drive.server, drive.prefix + "/"):
        name = key.rsplit("/", 1)[-1]
        if parse_data_name(name):
            rows += len(parse(get_object(drive.server, key)))
        elif parse_summary_name(name):
            km += json.loads(get_object(drive.server, key))["totals"]["distance_km"]
    return rows, km


def test_fleet_agrees_with_a_direct_count(drive: Drive, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("duckdb")
    assert main(["fleet", "--bucket", "--config", str(drive.config), "--format", "csv"]) == 0
    lines = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    rows, km = _bucket_rows(drive)
    assert {line["car"] for line in lines} == {CAR}
    assert sum(int(line["rows"]) for line in lines) == rows > 0
    assert sum(float(line["km"]) for line in lines) == pytest.approx(km, abs=1e-3)
    assert sum(int(line["trips"]) for line in lines) == 1


def test_the_duckdb_schema_reads_the_bucket(
    drive: Drive, capsys: pytest.CaptureFixture[str]
) -> None:
    duckdb = pytest.importorskip("duckdb")
    from eccm.report.fleet import httpfs_path, s3_secret_sql

    assert main(["schema", "--engine", "duckdb", "--bucket", "--config", str(drive.config)]) == 0
    ddl = capsys.readouterr().out
    assert f"s3://{drive.server.bucket}/{drive.prefix}/car=*/date=*/*.tsv.gz" in ddl
    conn = duckdb.connect()
    conn.execute(f"LOAD '{httpfs_path(duckdb.__version__)}'")
    s = drive.server
    conn.execute(s3_secret_sql(s.endpoint, "us-east-1", s.access_key, s.secret_key, True))
    conn.execute(ddl)
    rows, _km = _bucket_rows(drive)
    ((count, cars, speed_type),) = conn.execute(
        "SELECT count(*), list_distinct(list(car)), typeof(any_value(SPEED)) FROM eccm_rows"
    ).fetchall()
    assert (count, cars, speed_type) == (rows, [CAR], "DOUBLE")
    # Found: GPS_TIME_UTC was text in the view while the README (and Spark's view) made it
    # a timestamp like TIME_UTC.
    ((kinds, fixes),) = conn.execute(
        "SELECT list_distinct(list(typeof(TIME_UTC)) || list(typeof(GPS_TIME_UTC))),"
        " count(GPS_TIME_UTC) FROM eccm_rows"
    ).fetchall()
    assert (kinds, fixes > 0) == (["TIMESTAMP WITH TIME ZONE"], True), kinds
    ((km, trip),) = conn.execute("SELECT totals.distance_km, trip FROM eccm_trips").fetchall()
    assert (km, trip) == (drive.summary["totals"]["distance_km"], drive.summary["trip"])


@pytest.mark.parametrize("engine", ["athena", "trino", "spark"])
def test_the_other_schemas_name_every_column_of_the_sidecars(
    drive: Drive, engine: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["schema", "--engine", engine, "--from", str(drive.records)]) == 0
    ddl = capsys.readouterr().out.lower()
    (side,) = [json.loads(p.read_text()) for p in sorted(drive.uploaded.glob("*.tsv.gz.json"))][-1:]
    for col in side["columns"]:
        assert re.search(rf"[`\"]{col['name'].lower()}[`\"] ", ddl), col["name"]
    partitions = {
        "athena": "partitioned by (car string, `date` string)",
        "trino": "partitioned_by = array['car', 'date']",
        "spark": "pathglobfilter '*.tsv.gz'",  # car= and date= found by partition discovery
    }
    assert partitions[engine] in ddl


def test_a_schema_before_the_first_summary_takes_the_newest_files_columns(
    drive: Drive, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A car's first trip still runs (no summary yet): its closed files say the columns,
    not the nine defaults."""
    for path in drive.uploaded.glob("*.tsv.gz*"):
        shutil.copy(path, tmp_path / path.name)
    assert not list(tmp_path.glob("*summary*"))
    assert main(["schema", "--engine", "athena", "--from", str(tmp_path)]) == 0
    ddl = capsys.readouterr().out.lower()
    side = json.loads(sorted(tmp_path.glob("*.tsv.gz.json"))[-1].read_text())
    assert len(side["columns"]) > 9
    for col in side["columns"]:
        assert re.search(rf"`{col['name'].lower()}` ", ddl), col["name"]


def test_the_spark_schema_reads_a_copy_of_the_bucket_layout(
    drive: Drive, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """pyspark in local mode (not in the report extra: ~490 MB; `pip install pyspark`)."""
    pytest.importorskip("pyspark")
    import shutil

    from pyspark.sql import SparkSession

    root = tmp_path / "bucket" / "car-logs"
    for p in drive.uploaded.iterdir():  # data files, sidecars and the summary, as uploaded
        parsed = parse_data_name(p.name) or parse_sidecar_name(p.name) or parse_summary_name(p.name)
        assert parsed is not None, p.name
        folder = root / f"car={parsed.car}" / f"date={parsed.trip_date}"
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copy(p, folder / p.name)
    argv = ["schema", "--engine", "spark", "--from", str(drive.records)]
    assert main([*argv, "--location", root.as_uri()]) == 0
    ddl = capsys.readouterr().out
    spark = (
        SparkSession.builder.master("local[1]")
        .config("spark.ui.enabled", "false")
        .config("spark.sql.session.timeZone", "UTC")
        .getOrCreate()
    )
    try:
        for stmt in ddl.split(";\n"):
            body = "\n".join(x for x in stmt.splitlines() if not x.startswith("--")).strip()
            if body:
                spark.sql(body)
        got = spark.sql(
            "SELECT car, count(*) AS n, typeof(first(SPEED)) AS t, typeof(min(TIME_UTC)) AS tt,"
            " date_format(min(TIME_UTC), \"yyyy-MM-dd'T'HH:mm:ss.SSS'Z'\") AS first,"
            " count(TIME_UTC) AS times FROM eccm_rows GROUP BY car"
        ).collect()
    finally:
        spark.stop()
    rows = all_rows(drive.uploaded)
    assert [(r["car"], r["n"], r["t"]) for r in got] == [(CAR, len(rows), "double")]
    # TIME_UTC is a timestamp, as in DuckDB's view, and every row's parses.
    assert (got[0]["tt"], got[0]["times"]) == ("timestamp", len(rows))
    assert got[0]["first"] == min(r["TIME_UTC"] for r in rows)


def _one_line(err: str) -> None:
    assert err.count("\n") == 1 and "Traceback" not in err, err


def test_bad_input_is_one_line_and_a_non_zero_exit(
    drive: Drive, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = str(tmp_path / "x.html")
    assert main(["report", "20200101T000000Z", "--from", str(drive.records), "-o", out]) == 1
    err = capsys.readouterr().err
    _one_line(err)
    assert "no trip 20200101T000000Z" in err and drive.summary["trip"] in err
    empty = tmp_path / "empty"
    empty.mkdir()
    for argv in (["report", "--from", str(empty), "-o", out], ["trips", "--from", str(empty)]):
        assert main(argv) == 1
        _one_line(capsys.readouterr().err)
    # A wrong secret key: the bucket refuses; said in one line, as the uploader says it.
    text = drive.config.read_text()
    denied = write_config(tmp_path / "denied.ini", {})
    denied.write_text(re.sub(r"S3_SERVER_SK=.*", "S3_SERVER_SK=wrong-secret", text))
    for argv in (["trips", "--bucket"], ["fleet", "--bucket"], ["report", "--bucket", "-o", out]):
        proc = subprocess.run(
            [sys.executable, "-m", "eccm.cli", *argv, "--config", str(denied)],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert proc.returncode == 1, (argv, proc.stderr)
        _one_line(proc.stderr)
        assert "S3_SERVER_SK" in proc.stderr or "secret" in proc.stderr.lower(), proc.stderr
    assert not Path(out).exists()


def test_without_the_report_extra_the_commands_say_how_to_install_it(tmp_path: Path) -> None:
    # sys.modules[name] = None makes the import fail as if the library were not installed.
    code = (
        "import sys; sys.modules['matplotlib'] = None; sys.modules['duckdb'] = None;"
        "from eccm.cli import main; sys.exit(main(sys.argv[1:]))"
    )
    for argv in (
        ["report", "--from", str(tmp_path), "-o", str(tmp_path / "r.html")],
        ["fleet", "--bucket", "--config", str(tmp_path / "none.ini")],
    ):
        proc = subprocess.run(
            [sys.executable, "-c", code, *argv], capture_output=True, text=True, timeout=60
        )
        assert proc.returncode == 1
        _one_line(proc.stderr)
        assert "pip install 'eccm[report]'" in proc.stderr, proc.stderr


def test_the_logger_imports_no_report_library() -> None:
    code = (
        "import sys, eccm.app, eccm.cli; "
        "print(sorted({m.split('.')[0] for m in sys.modules} & "
        "{'duckdb', 'matplotlib', 'pyspark', 'eccm_report'}), "
        "[m for m in sys.modules if m.startswith('eccm.report')])"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.stdout.strip() == "[] []", proc.stdout + proc.stderr


def test_the_duckdb_schema_before_the_first_summary_creates_its_views(
    drive: Drive, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The fleet's first trip still runs: no summary anywhere, and DuckDB refuses a view
    over no file, so the script must not define eccm_trips yet (it did, and failed)."""
    duckdb = pytest.importorskip("duckdb")
    records = tmp_path / "records"
    day = tmp_path / "bucket" / "car-logs" / f"car={CAR}" / "date=2026-03-01"
    for folder in (records, day):
        folder.mkdir(parents=True)
        for path in drive.uploaded.glob("*.tsv.gz*"):
            shutil.copy(path, folder / path.name)
    location = str(tmp_path / "bucket" / "car-logs") + "/"
    assert (
        main(["schema", "--engine", "duckdb", "--from", str(records), "--location", location]) == 0
    )
    ddl = capsys.readouterr().out
    conn = duckdb.connect()
    conn.execute(ddl)
    ((count,),) = conn.execute("SELECT count(*) FROM eccm_rows").fetchall()
    assert count == len(all_rows(drive.uploaded)) > 0
    assert "eccm_trips" not in {name for (name,) in conn.execute("SHOW TABLES").fetchall()}
    assert "run\n-- eccm schema again" in ddl


def test_fleet_over_encrypted_objects_only_says_they_were_left_out(
    drive: Drive, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Found: `eccm fleet --bucket` over a car that encrypts its files said "no data files
    or trip summaries", not a word of the .age objects it had left out on purpose."""
    pytest.importorskip("duckdb")
    prefix = "sealed-only"
    day = f"{prefix}/car={CAR}/date=2026-03-01"
    client = drive.server.client()
    keys = [
        f"{day}/{name}"
        for name in ("x_20260301T080000Z_0001.tsv.gz.age", "x_20260301T080000Z_summary.json.age")
    ]
    config = write_config(tmp_path / "sealed.ini", {})
    config.write_text(
        re.sub(r"S3_KEY_PREFIX=.*", f"S3_KEY_PREFIX={prefix}", drive.config.read_text())
    )
    try:
        for key in keys:
            client.put_object(Bucket=drive.server.bucket, Key=key, Body=b"age...")
        assert main(["fleet", "--bucket", "--config", str(config)]) == 1
    finally:  # the bucket is shared with the other tests
        for key in keys:
            client.delete_object(Bucket=drive.server.bucket, Key=key)
    err = capsys.readouterr().err
    _one_line(err)
    assert "no data files or trip summaries" in err, err
    assert "2 encrypted object(s) (.age) left out" in err and "eccm decrypt" in err, err


def test_a_schema_of_a_folder_decrypt_bucket_wrote_takes_the_encrypted_sidecars_columns(
    drive: Drive, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Found: `eccm schema --from logs` over what `eccm decrypt --bucket` wrote said "no
    closed data file with a sidecar" and gave the nine default columns, though every
    decrypted file lies beside its `.age.json` sidecar, which keeps the columns."""
    sealed = tmp_path / "sealed"
    sealed.mkdir()
    for path in drive.uploaded.iterdir():
        shutil.copy(path, sealed / path.name)
    key = tmp_path / "key.txt"
    assert main(["keygen", "-o", str(key)]) == 0
    recipient = capsys.readouterr().out.strip()
    from eccm.crypto.encrypt import Encryptor

    assert Encryptor(sealed, [recipient]).seal_all() > 0
    prefix = "sealed-schema"
    client = drive.server.client()
    keys = []
    for path in sorted(sealed.glob("*.age*")):
        parsed = parse_data_name(path.name.split(".age")[0]) or parse_summary_name(
            path.name.split(".age")[0]
        )
        assert parsed is not None, path.name
        keys.append(f"{prefix}/car={parsed.car}/date={parsed.trip_date}/{path.name}")
        client.put_object(Bucket=drive.server.bucket, Key=keys[-1], Body=path.read_bytes())
    config = write_config(tmp_path / "sealed.ini", {})
    config.write_text(
        re.sub(r"S3_KEY_PREFIX=.*", f"S3_KEY_PREFIX={prefix}", drive.config.read_text())
    )
    logs = tmp_path / "logs"
    try:
        argv = ["decrypt", "-i", str(key), "--bucket", f"{prefix}/", "-o", str(logs)]
        assert main([*argv, "--config", str(config)]) == 0
    finally:  # the bucket is shared with the other tests
        for k in keys:
            client.delete_object(Bucket=drive.server.bucket, Key=k)
    capsys.readouterr()
    assert main(["schema", "--engine", "athena", "--from", str(logs)]) == 0
    captured = capsys.readouterr()
    assert "default columns" not in captured.err, captured.err
    side = json.loads(sorted(drive.uploaded.glob("*.tsv.gz.json"))[-1].read_text())
    ddl = captured.out.lower()
    assert len(side["columns"]) > 9
    for col in side["columns"]:
        assert re.search(rf"`{col['name'].lower()}` ", ddl), col["name"]


def test_a_schema_of_cars_that_write_other_files_names_them(
    drive: Drive, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Found: over a fleet whose cars write different files (one .csv, the others
    .tsv.gz), `eccm schema` took the first car's format, so its view read none of the
    other cars' rows, without a word. It now takes the format most cars write and names
    the cars it leaves out."""
    folder = tmp_path / "records"
    folder.mkdir()
    for path in drive.uploaded.iterdir():
        shutil.copy(path, folder / path.name)
    # A car "a-csv" (sorted first) with one trip written as comma-separated, uncompressed.
    trip = "20200101T000000Z"
    data = f"a-csv_{trip}_0001.csv"
    (folder / data).write_text(
        "TIME_UTC,CAR_ID,TRIP_ID,RPM\n2020-01-01T00:00:00.000Z,a-csv,x,900\n"
    )
    side = {
        "file": data,
        "separator": ",",
        "columns": [{"name": n, "unit": ""} for n in ("TIME_UTC", "CAR_ID", "TRIP_ID")]
        + [{"name": "RPM", "unit": "revolutions_per_minute"}],
    }
    (folder / f"{data}.json").write_text(json.dumps(side))
    # A third car writing .tsv.gz like the drive's: two cars to one, the majority wins.
    for path in drive.uploaded.glob("*.tsv.gz*"):
        name = path.name.replace(CAR, "b-tsv")
        shutil.copy(path, folder / name)
    (folder / f"b-tsv_{drive.summary['trip']}_summary.json").write_text(
        json.dumps({**drive.summary, "car": "b-tsv"})
    )
    (folder / f"a-csv_{trip}_summary.json").write_text(
        json.dumps({**drive.summary, "car": "a-csv", "trip": trip})
    )
    location = str(tmp_path / "bucket") + "/"
    argv = ["schema", "--engine", "duckdb", "--from", str(folder), "--location", location]
    assert main(argv) == 0
    captured = capsys.readouterr()
    assert "car=*/date=*/*.tsv.gz'" in captured.out, captured.out
    assert "delim = E'\\t'" in captured.out
    _one_line(captured.err)
    assert "a-csv writes .csv (comma-separated)" in captured.err, captured.err
    assert "--car a-csv" in captured.err and "b-tsv" not in captured.err, captured.err


def test_a_schema_for_a_positional_engine_names_a_first_file_with_other_columns(
    drive: Drive, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Two trials' find: a car's first drive leaves a first file with the GNSS columns
    only (the adapter was not connected yet); Athena, Trino and Spark read columns by
    position, so its latitudes came back as an engine value, without a word."""
    folder = tmp_path / "records"
    folder.mkdir()
    for path in drive.uploaded.iterdir():
        shutil.copy(path, folder / path.name)
    gnss = ["TIME_UTC", "CAR_ID", "TRIP_ID", "GPS_TIME_UTC", "GPS_LATITUDE", "GPS_LONGITUDE"]
    first = f"{CAR}_20200101T000000Z_0001.tsv.gz"
    (folder / first).write_bytes(gzip.compress(("\t".join(gnss) + "\n").encode()))
    side = {"file": first, "separator": "\t", "columns": [{"name": n, "unit": ""} for n in gnss]}
    (folder / f"{first}.json").write_text(json.dumps(side))
    for engine in ("athena", "trino", "spark"):
        where = ["--location", "s3://fleet/car-logs/"]  # no placeholder bucket to note
        assert main(["schema", "--engine", engine, "--from", str(folder), *where]) == 0
        err = capsys.readouterr().err
        _one_line(err)
        assert f"car {CAR}'s first file {first} (6 columns)" in err, err
        assert f"{engine} reads the columns of a file by position" in err, err
    # DuckDB reads by name: nothing to say; nor when the first file's columns are the
    # definition's first ones (the positional engines read the missing ones as NULL).
    assert main(["schema", "--engine", "duckdb", "--from", str(folder)]) == 0
    assert "by position" not in capsys.readouterr().err
    (folder / first).unlink()
    (folder / f"{first}.json").unlink()
    assert main(["schema", "--engine", "athena", "--from", str(folder)]) == 0
    assert "by position" not in capsys.readouterr().err
