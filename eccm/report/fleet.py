"""``eccm fleet``: per car and day, rows, driving hours, km, fuel and trouble codes, by
DuckDB over the bucket.

Pure SQL here (:func:`fleet_sql`), given the objects to read: the data files for the rows,
the trip summaries for the figures (the trip computer's integration, not a second one in
SQL), by their ``car=`` partition and the day their trip started. The object list comes
from the bucket's listing (eccm/report/source.py), so an open, temp or foreign object is
never read. A trip that crosses midnight (UTC) counts on the day it started, rows
included, as its summary is filed.
The thin I/O (:func:`run`) connects DuckDB to the bucket with httpfs loaded from its PyPI
package: nothing downloads at run time.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from datetime import date
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from eccm.report import ReportError, need
from eccm.store.names import AGE, parse_data_name, parse_summary_name

COLUMNS = ("car", "date", "trips", "rows", "hours", "km", "fuel_l", "dtcs")

_CAR = r"regexp_extract(filename, '/car=([^/]+)/', 1)"
_DATE = r"regexp_extract(filename, '/date=([^/]+)/', 1)"
# A data file's rows count on the day its trip started (the TRIP_ID in its name), as the
# summary's figures do: the file's own partition is the day of its first row, so a trip
# that crosses midnight put its later files' rows on a day with none of its km or hours.
_TRIP_DATE = (
    r"regexp_replace(regexp_extract(filename, '_([0-9]{8})T[0-9]{6}Z_[0-9]+[^/]*$', 1), "
    r"'([0-9]{4})([0-9]{2})([0-9]{2})', '\1-\2-\3')"
)

# The TRIP_ID in a data file's or summary's name.
_TRIP = r"regexp_extract(filename, '_([0-9]{8}T[0-9]{6}Z)_[^/]*$', 1)"


def _list(urls: Sequence[str]) -> str:
    return "[" + ", ".join("'" + u.replace("'", "''") + "'" for u in urls) + "]"


def _num(path: str) -> str:
    return f"CAST(json_extract(content, '{path}') AS DOUBLE)"


def fleet_sql(data_urls: Sequence[str], summary_urls: Sequence[str]) -> str:
    """One query: a line per car and date found in either list, oldest first."""
    if data_urls:
        rows = (
            f"SELECT {_CAR} AS car, {_TRIP_DATE} AS date, count(*) AS rows, "
            f"list(DISTINCT {_TRIP}) AS data_trips FROM read_csv("
            f"{_list(data_urls)}, header = true, all_varchar = true, union_by_name = true, "
            "filename = true) GROUP BY ALL"
        )
    else:
        rows = (
            "SELECT NULL::VARCHAR AS car, NULL::VARCHAR AS date, 0::BIGINT AS rows, "
            "[]::VARCHAR[] AS data_trips WHERE false"
        )
    codes = (
        "list_concat(json_extract_string(content, '$.diagnostics.state.stored[*].code'), "
        "json_extract_string(content, '$.diagnostics.state.pending[*].code'), "
        "json_extract_string(content, '$.diagnostics.events[*].code'))"
    )
    if summary_urls:
        trips = (
            f"SELECT {_CAR} AS car, {_DATE} AS date, list(DISTINCT {_TRIP}) AS summary_trips, "
            f"sum(coalesce({_num('$.totals.moving_s')}, 0)) / 3600 AS hours, "
            # NULL (an empty cell) when no summary of the day knows it: a GNSS-only trip
            # has no SPEED to integrate and no fuel, which is not 0 km and 0 L.
            f"sum({_num('$.totals.distance_km')}) AS km, "
            f"sum({_num('$.totals.fuel_l')}) AS fuel_l, "
            f"list_distinct(flatten(list({codes}))) AS codes "
            f"FROM read_text({_list(summary_urls)}) GROUP BY ALL"
        )
    else:
        trips = (
            "SELECT NULL::VARCHAR AS car, NULL::VARCHAR AS date, []::VARCHAR[] AS summary_trips, "
            "0.0 AS hours, 0.0 AS km, 0.0 AS fuel_l, []::VARCHAR[] AS codes WHERE false"
        )
    return (
        f"WITH data_rows AS ({rows}), trips AS ({trips})\n"
        # A trip counts once it has rows or a summary: one still running (no summary yet)
        # or cut in its first seconds is a trip of the day, as `eccm trips` lists it.
        "SELECT car, date, len(list_distinct(list_concat(coalesce(data_trips, []), "
        "coalesce(summary_trips, [])))) AS trips, coalesce(rows, 0) AS rows, "
        # No summary for the day (its trip still runs): its figures are unknown, not 0.
        "round(hours, 3) AS hours, round(km, 3) AS km, round(fuel_l, 3) AS fuel_l, "
        "array_to_string(list_sort(list_filter(coalesce(codes, []), c -> c IS NOT NULL)), ' ') "
        "AS dtcs\n"
        "FROM data_rows FULL OUTER JOIN trips USING (car, date) ORDER BY car, date"
    )


def pick(keys: Sequence[str], since: date | None) -> tuple[list[str], list[str]]:
    """The data files and summaries among the bucket's keys, from ``since`` on."""
    data: list[str] = []
    summaries: list[str] = []
    for key in keys:
        name = key.rsplit("/", 1)[-1]
        if name.endswith(AGE):
            continue  # encrypted: only its owner reads it (eccm decrypt, then query)
        parsed: Any = parse_data_name(name)
        target = data
        if parsed is None:
            parsed = parse_summary_name(name)
            target = summaries
        path = "/" + key  # an empty S3_KEY_PREFIX puts car= first
        if parsed is None or "/date=" not in path or "/car=" not in path:
            continue
        day = parsed.trip_date  # the day its rows and figures count on (fleet_sql)
        if since is not None and day < since.isoformat():
            continue
        target.append(key)
    return sorted(data), sorted(summaries)


def httpfs_path(duckdb_version: str) -> Path:
    pkg = need("duckdb_extension_httpfs", "fleet")
    folder = Path(str(pkg.__file__)).parent / "extensions"
    path = folder / f"v{duckdb_version}" / "httpfs.duckdb_extension"
    if not path.exists():
        found = ", ".join(sorted(p.name for p in folder.glob("v*"))) or "none"
        raise ReportError(
            f"duckdb {duckdb_version} needs the httpfs extension of the same version "
            f"(duckdb-extension-httpfs has {found}): reinstall the report extra"
        )
    return path


def s3_secret_sql(endpoint: str, region: str, key_id: str, secret: str, path_style: bool) -> str:
    """DuckDB's S3 settings for an endpoint given as ECCM's S3_SERVER_ENDPOINT."""
    url = urlsplit(endpoint if "://" in endpoint else "https://" + endpoint)

    def q(text: str) -> str:
        return "'" + text.replace("'", "''") + "'"

    return (
        "CREATE OR REPLACE SECRET eccm_bucket (TYPE s3, "
        f"KEY_ID {q(key_id)}, SECRET {q(secret)}, REGION {q(region)}, "
        f"ENDPOINT {q(url.netloc)}, USE_SSL {'true' if url.scheme == 'https' else 'false'}, "
        f"URL_STYLE {q('path' if path_style else 'vhost')})"
    )


def run(conn: Any, sql: str) -> list[tuple[Any, ...]]:
    rows: list[tuple[Any, ...]] = conn.execute(sql).fetchall()
    return rows


def as_csv(rows: Sequence[Sequence[Any]]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(COLUMNS)
    w.writerows(rows)
    return buf.getvalue()


def as_table(rows: Sequence[Sequence[Any]]) -> str:
    cells = [list(COLUMNS)] + [["" if v is None else str(v) for v in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(COLUMNS))]
    numeric = {2, 3, 4, 5, 6}
    out = []
    for n, r in enumerate(cells):
        out.append(
            "  ".join(
                c.rjust(w) if i in numeric and n else c.ljust(w)
                for i, (c, w) in enumerate(zip(r, widths, strict=True))
            ).rstrip()
        )
        if n == 0:
            out.append("  ".join("-" * w for w in widths))
    return "\n".join(out) + "\n"
