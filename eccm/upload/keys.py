"""Pure planning of an upload run: which local files are ready, and the S3 key of each.

No I/O here: the uploader lists the directory and reads sidecars, then asks this module
what to do. Contract with the recorder: a closed data file lies at the top level of the
record directory, named ``{CAR}_{TRIP}_{SEQ:04d}{EXT}`` (``.gz`` appended when compressed),
and it is ready only once its sidecar ``{data file}.json`` exists (the sidecar is written
last). Open files end in ``.part`` and are never touched. A trip summary
``{CAR}_{TRIP}_summary.json`` (tripsummary.py) is written atomically, so it is ready as
soon as it exists; it goes to the partition of its trip's start date.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from eccm.errors import UploadError
from eccm.store.names import (
    AGE,
    PART,
    SIDECAR,
    DataName,
    SummaryName,
    parse_data_name,
    parse_sidecar_name,
    parse_single_name,
)
from eccm.store.names import parse_summary_name as parse_summary_name  # tests import it here

# Lives under the car's own prefix (a narrow IAM policy may allow nothing else); the
# leading underscore makes Hive, Spark, Athena and Trino skip it, and it matches no
# car=*/date=*/ glob.
PROBE_NAME = "_eccm_probe"


@dataclass(frozen=True)
class Job:
    """One file of a run: a data file with its sidecar, the sidecar left of one whose data
    object is verified (``orphan``), or a trip summary."""

    kind: Literal["orphan", "data", "summary"]
    name: DataName | SummaryName


@dataclass(frozen=True)
class Plan:
    """What one upload run has to do, oldest first."""

    ready: tuple[DataName, ...]  # data file and sidecar both present: upload them
    orphan_sidecars: tuple[DataName, ...]  # sidecar left after its data file was archived
    summaries: tuple[SummaryName, ...] = ()  # finished trip summaries

    @property
    def waiting(self) -> int:
        """Files waiting for upload, including those whose data object is verified and
        whose sidecar still has to go up."""
        return len(self.ready) + len(self.summaries) + len(self.orphan_sidecars)

    def jobs(self) -> list[Job]:
        """In the order they are sent: orphan sidecars first (each finishes a file that is
        already in the bucket), then data files, then trip summaries, each oldest first."""
        jobs = [Job("orphan", dn) for dn in self.orphan_sidecars]
        jobs += [Job("data", dn) for dn in self.ready]
        jobs += [Job("summary", sn) for sn in self.summaries]
        return jobs


def plan(names: Iterable[str], *, encrypted: bool = False) -> Plan:
    """Sort the names found at the top level of the record directory.

    A sidecar without its data file is what a crash between archiving the data file and
    archiving the sidecar leaves behind; the uploader finishes that job once the bucket
    confirms the data object. ``encrypted`` (FILE_ENCRYPTION_RECIPIENTS set): only
    ``.age`` files and their sidecars; a plaintext file not yet sealed is never planned.
    """
    present = set(names)
    if encrypted:
        sealed = {n for n in present if n.endswith(AGE) or n.endswith(AGE + SIDECAR)}
        # A plaintext sidecar whose data file is gone, with no sealed copy beside it: an
        # upload cut by a power cut before encryption was turned on. Its data object is in
        # the bucket already, in plaintext: finishing it there (only once the bucket
        # confirms that object) reveals nothing new; left out, it stayed here for good.
        for n in present - sealed:
            side = parse_sidecar_name(n)
            if side is not None and not ({side.name, side.name + AGE} & present):
                sealed.add(n)
        present = sealed
    ready: list[DataName] = []
    orphans: list[DataName] = []
    summaries: list[SummaryName] = []
    for name in present:
        if name.endswith(PART):
            continue
        sm = parse_single_name(name)
        if sm is not None:
            summaries.append(sm)
            continue
        dn = parse_data_name(name)
        if dn is not None:
            if dn.sidecar in present:
                ready.append(dn)
            continue
        sn = parse_sidecar_name(name)
        if sn is not None and sn.name not in present:
            orphans.append(sn)
    return Plan(
        ready=tuple(sorted(ready)),
        orphan_sidecars=tuple(sorted(orphans)),
        summaries=tuple(sorted(summaries)),
    )


def partition_date(first_time: str | None, fallback: DataName) -> str:
    """UTC date (YYYY-MM-DD) of the first row; the trip's date when the sidecar has none."""
    if first_time:
        try:
            dt = datetime.fromisoformat(first_time)
        except ValueError:
            return fallback.trip_date
        if dt.tzinfo is None:
            dt = dt.replace(tzinfo=UTC)
        return dt.astimezone(UTC).strftime("%Y-%m-%d")
    return fallback.trip_date


def object_key(prefix: str, car: str, date: str, name: str) -> str:
    """``{prefix}/car={car}/date={date}/{name}``: Hive-style partitions read as columns."""
    parts = [p for p in (prefix.strip("/"), f"car={car}", f"date={date}", name) if p]
    return "/".join(parts)


def car_prefix(prefix: str, car: str) -> str:
    """Everything this car writes lies under this prefix (ends with '/')."""
    return "/".join(p for p in (prefix.strip("/"), f"car={car}") if p) + "/"


def probe_key(prefix: str, car: str) -> str:
    return car_prefix(prefix, car) + PROBE_NAME


def sidecar_key(data_key: str) -> str:
    return data_key + SIDECAR


@dataclass(frozen=True)
class SidecarInfo:
    """The fields of a sidecar the uploader relies on."""

    file: str
    first_time: str | None
    sha256: str
    size: int


_SHA256 = re.compile(r"[0-9a-f]{64}")


def parse_sidecar(raw: bytes, data_name: str) -> SidecarInfo:
    """Validate a sidecar's JSON for ``data_name``; UploadError names what is wrong."""
    where = f"sidecar {data_name}{SIDECAR}"
    try:
        doc: Any = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UploadError(f"{where} is not valid JSON ({exc})") from exc
    if not isinstance(doc, dict):
        raise UploadError(f"{where} is not a JSON object")
    file = doc.get("file")
    if file != data_name:
        raise UploadError(f"{where} describes {file!r}, not {data_name!r}")
    sha = doc.get("sha256")
    if not isinstance(sha, str) or not _SHA256.fullmatch(sha.lower()):
        raise UploadError(f"{where} has no valid sha256")
    size = doc.get("size")
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise UploadError(f"{where} has no valid size")
    first = doc.get("first_time")
    return SidecarInfo(
        file=data_name,
        first_time=first if isinstance(first, str) and first else None,
        sha256=sha.lower(),
        size=size,
    )


def content_type(name: str) -> str:
    if name.endswith(AGE):
        return "application/octet-stream"  # age's binary format
    if name.endswith(".gz"):
        # Not Content-Encoding: gzip, which makes HTTP clients unpack on download and the
        # bytes would no longer match the sha256.
        return "application/gzip"
    if name.endswith(SIDECAR):
        return "application/json"
    ext = name.rsplit(".", 1)[-1].lower() if "." in name else ""
    return {"csv": "text/csv", "tsv": "text/tab-separated-values"}.get(ext, "text/plain")
