"""Rows of a closed data file (SPEC §3), plain or gzip-compressed, any separator.

The separator is read from the header rather than from the configuration: a report reads
files written under another configuration, or another car's, from the bucket.
"""

from __future__ import annotations

import csv
import gzip
import io
from collections.abc import Iterable

Row = dict[str, str]


def _separator(header: str) -> str:
    # The header starts with TIME_UTC, then the separator, then CAR_ID.
    first = "TIME_UTC"
    if header.startswith(first) and len(header) > len(first):
        return header[len(first)]
    return "\t"


def parse(data: bytes) -> list[Row]:
    """Every row of one data file, as {column: cell}; empty cells stay empty strings."""
    if data[:2] == b"\x1f\x8b":
        data = gzip.decompress(data)
    text = data.decode("utf-8", errors="replace")
    header, _, _ = text.partition("\n")
    reader = csv.DictReader(io.StringIO(text), delimiter=_separator(header.rstrip("\r")))
    return [dict(r) for r in reader if r.get("TIME_UTC")]


def number(row: Row, column: str) -> float | None:
    cell = row.get(column) or ""
    try:
        return float(cell)
    except ValueError:
        return None


def first_with(rows: Iterable[Row], *columns: str) -> Row | None:
    """The first row where every one of ``columns`` holds a number."""
    for row in rows:
        if all(number(row, c) is not None for c in columns):
            return row
    return None
