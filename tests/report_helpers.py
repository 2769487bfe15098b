"""Shared by the report tests: a small record folder written like the recorder writes one."""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

HEADER = [
    "TIME_UTC",
    "CAR_ID",
    "TRIP_ID",
    "RPM",
    "SPEED",
    "ODOMETER",
    "GPS_LATITUDE",
    "GPS_LONGITUDE",
]


def summary(car: str, trip: str, first: str, last: str, **totals: Any) -> dict[str, Any]:
    base = {
        "duration_s": 600.0,
        "distance_km": 5.25,
        "fuel_l": 0.4,
        "l_per_100km": 7.62,
        "fuel_cost": None,
    }
    base.update(totals)
    return {
        "schema_version": 1,
        "kind": "trip_summary",
        "car": car,
        "trip": trip,
        "first_time": first,
        "last_time": last,
        "totals": base,
        "minutes": [],
        "diagnostics": {
            "state": {"mil": False, "stored": [], "pending": []},
            "events": [
                {"time": first, "event": "initial", "mil": False, "stored": [], "pending": []}
            ],
        },
    }


def write_trip(
    folder: Path, car: str, trip: str, files: list[list[list[str]]], doc: dict[str, Any]
) -> None:
    """Data files (each a list of rows after the header, gzip, tab-separated) and a summary."""
    folder.mkdir(parents=True, exist_ok=True)
    for seq, rows in enumerate(files, start=1):
        text = "\n".join("\t".join(r) for r in [HEADER, *rows]) + "\n"
        (folder / f"{car}_{trip}_{seq:04d}.tsv.gz").write_bytes(gzip.compress(text.encode()))
    (folder / f"{car}_{trip}_summary.json").write_text(json.dumps(doc))
