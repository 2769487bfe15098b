"""``eccm schema``: table definitions of the bucket's layout for DuckDB, Athena, Trino and
Spark (SPEC §4: ``{prefix}/car=.../date=.../{file}``, Hive partitions).

Pure text from a :class:`Layout`: the columns and their types come from the sidecars
(a column with a unit is a number, else text, as SPEC §3 writes them), the separator and
the file ending from the files themselves. The data folders also hold the sidecars
(``.json``) and trip summaries: each definition reads the data files only (a glob, a path
filter, or a view over the engine's ``$path``).

Engines that map a text file's columns by position (Athena, Trino, Spark) need files
whose header is this column list: a car that reports other commands has other columns,
and gets its own table (``--car``). DuckDB matches columns by name (``union_by_name``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

ENGINES = ("duckdb", "athena", "trino", "spark")
# Columns without a unit that still hold numbers (SPEC §3's GPS columns).
_NUMERIC_WITHOUT_UNIT = {"GPS_FIX_QUALITY", "GPS_SATELLITES", "GPS_HDOP"}
DEFAULT_COLUMNS: tuple[tuple[str, str], ...] = (
    ("TIME_UTC", ""),
    ("CAR_ID", ""),
    ("TRIP_ID", ""),
    ("RPM", "revolutions_per_minute"),
    ("SPEED", "kilometer_per_hour"),
    ("THROTTLE_POS", "percent"),
    ("ENGINE_LOAD", "percent"),
    ("MAF", "gps"),
    ("INTAKE_PRESSURE", "kilopascal"),
)


@dataclass(frozen=True)
class Column:
    name: str
    numeric: bool
    description: str = ""


@dataclass(frozen=True)
class Layout:
    location: str  # s3://bucket/prefix/ (ends with '/')
    columns: tuple[Column, ...]
    separator: str = "\t"
    ending: str = ".tsv.gz"  # of the data files' names
    cars: tuple[str, ...] = ()  # known cars (Athena's projection enum); empty: injected
    summaries: bool = True  # whether the source holds a trip summary yet


def column_of(doc: Mapping[str, Any]) -> Column:
    name = str(doc["name"])
    numeric = bool(doc.get("unit")) or name in _NUMERIC_WITHOUT_UNIT
    return Column(name, numeric, str(doc.get("description") or ""))


def columns_of(sidecars: Iterable[Mapping[str, Any]]) -> tuple[Column, ...]:
    """The columns of the sidecars, in the order of the first file that has each."""
    seen: dict[str, Column] = {}
    for side in sidecars:
        for c in side.get("columns") or []:
            col = column_of(c)
            seen.setdefault(col.name, col)
    if not seen:
        return tuple(column_of({"name": n, "unit": u}) for n, u in DEFAULT_COLUMNS)
    return tuple(seen.values())


def _sep_sql(sep: str) -> str:
    return {"\t": "\\t"}.get(sep, sep.replace("'", "''"))


def _q(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def duckdb(layout: Layout) -> str:
    types = ", ".join(
        f"{_q(c.name)}: {_q('DOUBLE' if c.numeric else 'VARCHAR')}"
        for c in layout.columns
        if c.name != "TIME_UTC"
    )
    data = f"{layout.location}car=*/date=*/*{layout.ending}"
    summaries = f"{layout.location}car=*/date=*/*_summary.json"
    # Read as text (an empty cell is NULL), then made timestamps: GPS_TIME_UTC too, as
    # in Spark's view (a car without GNSS has no such column to replace).
    times = ", ".join(
        f"CAST({c.name} AS TIMESTAMPTZ) AS {c.name}"
        for c in layout.columns
        if c.name in _TIME_COLUMNS
    )
    if layout.summaries:
        trips = f"""CREATE OR REPLACE VIEW eccm_trips AS
SELECT car, date, * EXCLUDE (car, date)
FROM read_json('{summaries}', hive_partitioning = true, union_by_name = true,
  hive_types = {{'car': 'VARCHAR', 'date': 'DATE'}});

-- e.g. SELECT car, date, count(*) AS rows, max(SPEED) FROM eccm_rows GROUP BY ALL ORDER BY ALL;
--      SELECT car, trip, totals.distance_km, totals.fuel_l FROM eccm_trips ORDER BY trip;
"""
    else:  # DuckDB refuses a view over no file at all
        trips = """-- No trip summary yet (the first trip still runs), so no view eccm_trips: run
-- eccm schema again once one is uploaded.
-- e.g. SELECT car, date, count(*) AS rows, max(SPEED) FROM eccm_rows GROUP BY ALL ORDER BY ALL;
"""
    return f"""-- DuckDB (httpfs; pip install duckdb duckdb-extension-httpfs, or INSTALL httpfs).
-- S3 access: CREATE SECRET (TYPE s3, KEY_ID '...', SECRET '...', REGION '...',
--   ENDPOINT 'host:port', URL_STYLE 'path', USE_SSL true);
CREATE OR REPLACE VIEW eccm_rows AS
SELECT * REPLACE ({times})
FROM read_csv('{data}',
  delim = E'{_sep_sql(layout.separator)}', header = true, union_by_name = true,
  hive_partitioning = true, hive_types = {{'car': 'VARCHAR', 'date': 'DATE'}},
  types = {{{types}}});

{trips}"""


def _hive_columns(layout: Layout, string: str, double: str, quote: str) -> str:
    lines = []
    for c in layout.columns:
        kind = double if c.numeric else string
        comment = f" COMMENT {_q(c.description)}" if c.description else ""
        lines.append(f"  {quote}{c.name.lower()}{quote} {kind}{comment}")
    return ",\n".join(lines)


def athena(layout: Layout) -> str:
    template = layout.location + "car=${car}/date=${date}/"
    if layout.cars:
        car_projection = (
            f"  'projection.car.type' = 'enum',\n"
            f"  'projection.car.values' = {_q(','.join(layout.cars))},\n"
        )
    else:
        car_projection = "  'projection.car.type' = 'injected',\n"
    return f"""-- Amazon Athena. Partition projection: no MSCK REPAIR, no crawler; new days appear by themselves.
CREATE EXTERNAL TABLE IF NOT EXISTS eccm_files (
{_hive_columns(layout, "string", "double", "`")}
)
PARTITIONED BY (car string, `date` string)
ROW FORMAT DELIMITED FIELDS TERMINATED BY {_q(_sep_sql(layout.separator))}
STORED AS TEXTFILE
LOCATION {_q(layout.location)}
TBLPROPERTIES (
  'skip.header.line.count' = '1',
  'projection.enabled' = 'true',
{car_projection}  'projection.date.type' = 'date',
  'projection.date.format' = 'yyyy-MM-dd',
  'projection.date.range' = '2020-01-01,NOW',
  'projection.date.interval' = '1',
  'projection.date.interval.unit' = 'DAYS',
  'storage.location.template' = {_q(template)}
);

-- The folders also hold sidecars and trip summaries (.json): read the data files only.
CREATE OR REPLACE VIEW eccm_rows AS
SELECT * FROM eccm_files WHERE "$path" LIKE {_q("%" + layout.ending)};

-- e.g. SELECT car, "date", count(*) AS rows FROM eccm_rows WHERE "date" >= '2026-03-01' GROUP BY 1, 2;
-- time_utc and gps_time_utc are text (ISO 8601, UTC, with Z), which sorts as time; as a
-- timestamp: from_iso8601_timestamp(time_utc).
"""


def trino(layout: Layout) -> str:
    sep = "U&'\\0009'" if layout.separator == "\t" else _q(layout.separator)
    return f"""-- Trino, Hive connector (catalog hive, schema eccm; S3 set in the catalog's properties).
CREATE TABLE IF NOT EXISTS hive.eccm.files (
{_hive_columns(layout, "varchar", "double", '"')},
  car varchar,
  "date" varchar
)
WITH (
  external_location = {_q(layout.location)},
  format = 'TEXTFILE',
  textfile_field_separator = {sep},
  skip_header_line_count = 1,
  partitioned_by = ARRAY['car', 'date']
);
-- New cars and days: run after uploads (or set hive.partition-projection-enabled).
CALL hive.system.sync_partition_metadata('eccm', 'files', 'ADD');

CREATE OR REPLACE VIEW hive.eccm.rows AS
SELECT * FROM hive.eccm.files WHERE "$path" LIKE {_q("%" + layout.ending)};
-- time_utc and gps_time_utc are text (ISO 8601, UTC, with Z), which sorts as time; as a
-- timestamp: from_iso8601_timestamp(time_utc).
"""


# ISO 8601 UTC with milliseconds and Z (SPEC §3): Spark's CSV reader parses them as they
# are (its default timestampFormat takes the Z), so they are timestamps, as in DuckDB's view.
_TIME_COLUMNS = {"TIME_UTC", "GPS_TIME_UTC"}


def _spark_type(c: Column) -> str:
    if c.name in _TIME_COLUMNS:
        return "TIMESTAMP"
    return "DOUBLE" if c.numeric else "STRING"


def spark(layout: Layout) -> str:
    cols = ",\n".join(f"  `{c.name}` {_spark_type(c)}" for c in layout.columns)
    location = layout.location.replace("s3://", "s3a://", 1)
    # A view of the data source rather than a catalog table: a catalog table's file
    # listing ignores pathGlobFilter and would read the sidecars and summaries as rows.
    return f"""-- Spark SQL (spark-sql, or spark.sql(...) in pyspark); S3 through hadoop-aws (s3a://).
-- car= and date= are found as partition columns; new cars and days appear by themselves.
CREATE OR REPLACE TEMPORARY VIEW eccm_rows (
{cols},
  car STRING,
  `date` DATE
)
USING csv
OPTIONS (
  path {_q(location)},
  header 'true',
  sep {_q(_sep_sql(layout.separator))},
  pathGlobFilter {_q("*" + layout.ending)}
);
-- e.g. SELECT car, `date`, count(*) AS rows FROM eccm_rows GROUP BY 1, 2;
"""


def definition(engine: str, layout: Layout) -> str:
    return {"duckdb": duckdb, "athena": athena, "trino": trino, "spark": spark}[engine](layout)


def ending_of(names: Sequence[str]) -> str | None:
    """``.tsv.gz`` (or the like) of the first data file name among ``names``."""
    from eccm.store.names import AGE, parse_data_name

    for name in names:
        parsed = None if name.endswith(AGE) else parse_data_name(name)
        if parsed is not None:
            stem = name.split("_")[-1]  # 0001.tsv.gz
            return stem[stem.index(".") :]
    return None


def _format_name(separator: str, ending: str) -> str:
    shown = {"\t": "tab", ",": "comma", ";": "semicolon", "|": "bar"}.get(
        separator, repr(separator)
    )
    return f"{ending} ({shown}-separated)"


def format_of(entry: tuple[str, str, str]) -> tuple[str, str]:
    """(separator, ending) of one (car, separator, data file name)."""
    _car, sep, name = entry
    return sep, ending_of([name]) or ".tsv.gz"


def common_format(formats: Sequence[tuple[str, str, str]]) -> tuple[str, str]:
    """The (separator, ending) that most cars write; on a tie, the first car's."""
    cars: dict[tuple[str, str], set[str]] = {}
    for entry in formats:
        cars.setdefault(format_of(entry), set()).add(entry[0])
    return max(cars, key=lambda f: len(cars[f]))  # max keeps the first of equals


def other_formats(formats: Sequence[tuple[str, str, str]], separator: str, ending: str) -> str:
    """What a definition for ``ending`` files split by ``separator`` leaves out: the cars
    among ``formats`` (car, separator, data file name) that write their files otherwise
    (MONITORING_FILE_EXTENSION, _SEPARATION_CHARACTER, FILE_COMPRESSION differ per car).
    A glob of one ending with one separator reads none of their rows, and says nothing of
    it: an empty string when every car matches."""
    left: dict[str, str] = {}
    for entry in formats:
        sep, end = format_of(entry)
        if (sep, end) != (separator, ending):
            left.setdefault(entry[0], _format_name(sep, end))
    if not left:
        return ""
    cars = ", ".join(f"{car} writes {what}" for car, what in sorted(left.items()))
    first = sorted(left)[0]
    return (
        f"this definition reads {_format_name(separator, ending)} files only, so it leaves "
        f"out the rows of the cars whose files differ ({cars}): define a table for each "
        f"with --car (e.g. eccm schema --car {first})"
    )
