"""Rows of a closed data file (SPEC §3), plain or gzip-compressed, any separator.

The separator is read from the header rather than from the configuration: a report reads
files written under another configuration, or another car's, from the bucket.
"""

from __future__ import annotations

import csv
import gzip
import io
import zlib
from collections.abc import Iterable

Row = dict[str, str]


def _separator(header: str) -> str:
    # The header starts with TIME_UTC, then the separator, then CAR_ID.
    first = "TIME_UTC"
    if header.startswith(first) and len(header) > len(first):
        return header[len(first)]
    return "\t"


def _gunzip(data: bytes) -> tuple[bytes, str | None]:
    """The decompressed bytes, and what was wrong with the stream (None when nothing): of a
    damaged one (cut short by a copy, a bit flipped on a card) the part before the damage."""
    try:
        return gzip.decompress(data), None
    except (EOFError, OSError, zlib.error) as exc:
        problem = f"damaged gzip ({exc})"
    out: list[bytes] = []
    rest = data
    while rest[:2] == b"\x1f\x8b":  # member by member, as gzip.decompress reads them
        inflater = zlib.decompressobj(wbits=31)
        fed = 0
        try:
            while fed < len(rest) and not inflater.eof:  # in steps: what precedes the damage
                out.append(inflater.decompress(rest[fed : fed + 4096]))  # is kept
                fed += 4096
        except zlib.error:
            break
        if not inflater.eof:
            break
        rest = inflater.unused_data + rest[fed:]
    return b"".join(out), problem


def parse(data: bytes) -> list[Row]:
    """Every row of one data file, as {column: cell}; empty cells stay empty strings."""
    return parse_checked(data)[0]


def parse_checked(data: bytes) -> tuple[list[Row], str | None]:
    """The rows of one data file, and what was wrong with it (None when nothing): a damaged
    gzip file gives the complete rows before the damage."""
    problem = None
    if data[:2] == b"\x1f\x8b":
        data, problem = _gunzip(data)
        if problem is not None:
            data = data[: data.rfind(b"\n") + 1]  # a row cut in the middle is no row
    text = data.decode("utf-8", errors="replace")
    header, _, _ = text.partition("\n")
    reader = csv.DictReader(io.StringIO(text), delimiter=_separator(header.rstrip("\r")))
    return [dict(r) for r in reader if r.get("TIME_UTC")], problem


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
