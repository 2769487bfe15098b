"""Where the report commands read trips from: a record folder or the bucket.

Both give the same things, named by :mod:`eccm.store.names`: the trip summaries
(``{CAR}_{TRIP}_summary.json``) and the closed data files of a trip, oldest first. The
folder is read as the web page's Files list reads it (eccm/store/listing.py: the top level
and ``uploaded/``); the bucket through the uploader's settings and boto3 client, under
``{S3_KEY_PREFIX}/car=.../date=.../``. Encrypted objects (``.age``) are not read.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from eccm.report import ReportError
from eccm.store.ledger import Ledger
from eccm.store.listing import list_files
from eccm.store.names import AGE, parse_data_name, parse_summary_name


@dataclass(frozen=True, order=True)
class Ref:
    """One file of a source: its name and where to read it (a path or an S3 key)."""

    car: str
    trip: str
    name: str
    where: str
    size: int = 0
    uploaded: bool = False  # under uploaded/, or in the bucket
    modified: float = 0.0  # the bucket's LastModified (epoch; the server's clock), else 0


def newest_data_file(refs: list[Ref]) -> dict[str, Ref]:
    """car → its newest data file (latest trip, highest sequence number)."""
    out: dict[str, Ref] = {}
    for ref in refs:
        best = out.get(ref.car)
        if best is None or (ref.trip, _seq(ref)) > (best.trip, _seq(best)):
            out[ref.car] = ref
    return out


def _seq(ref: Ref) -> int:
    parsed = parse_data_name(ref.name)
    return parsed.seq if parsed is not None else 0


class Source(Protocol):
    description: str

    def summaries(self) -> list[Ref]: ...

    def encrypted_summaries(self) -> list[Ref]: ...

    def data_files(self, car: str, trip: str) -> list[Ref]: ...

    def all_data_files(self) -> list[Ref]: ...

    def read(self, ref: Ref) -> bytes: ...

    def latest(self, refs: list[Ref]) -> Ref: ...


def load_summary(source: Source, ref: Ref) -> dict[str, Any]:
    try:
        doc = json.loads(source.read(ref))
    except ValueError as exc:
        raise ReportError(f"{ref.name} is not valid JSON ({exc})") from None
    if not isinstance(doc, dict):
        raise ReportError(f"{ref.name} is not a trip summary")
    return doc


class FolderSource:
    """A record folder: closed files at the top level and under ``uploaded/``."""

    def __init__(self, folder: Path) -> None:
        if not folder.is_dir():
            raise ReportError(f"{folder} is not a folder")
        self.folder = folder
        self.description = str(folder)

    def _folders(self) -> list[Path]:
        """The folder, and the partition folders that ``eccm decrypt --bucket`` writes
        below it (car=.../date=.../, or date=.../ when it is one car's folder)."""
        partitions = [*self.folder.glob("car=*/date=*"), *self.folder.glob("date=*")]
        return [self.folder, *sorted(p for p in partitions if p.is_dir())]

    def _refs(self, kind: str, sealed: bool = False) -> list[Ref]:
        out: dict[str, Ref] = {}
        for f in (f for folder in self._folders() for f in list_files(folder)):
            if f.kind != kind or f.name.endswith(AGE) != sealed:
                continue  # an encrypted file is read after `eccm decrypt`
            parsed = parse_data_name(f.name) if kind == "data" else parse_summary_name(f.name)
            if parsed is not None:
                # A name both at the top and under uploaded/ is one file: keep one copy.
                out.setdefault(
                    f.name, Ref(parsed.car, parsed.trip, f.name, str(f.path), f.size, f.uploaded)
                )
        return sorted(out.values())

    def summaries(self) -> list[Ref]:
        return self._refs("summary")

    def encrypted_summaries(self) -> list[Ref]:
        """The ``.age`` summaries, which ``summaries`` leaves out (to say so)."""
        return self._refs("summary", sealed=True)

    def data_files(self, car: str, trip: str) -> list[Ref]:
        refs = [r for r in self._refs("data") if r.car == car and r.trip == trip]
        return sorted(refs, key=_seq)

    def all_data_files(self) -> list[Ref]:
        return self._refs("data")

    def read(self, ref: Ref) -> bytes:
        try:
            return Path(ref.where).read_bytes()
        except OSError as exc:
            raise ReportError(f"cannot read {ref.where}: {exc.strerror}") from None

    def latest(self, refs: list[Ref]) -> Ref:
        """The summary of the trip recorded last: the recorder's ledger says in what order
        it named the files (a Pi without a real-time clock may name a later trip with an
        earlier time); trips it does not know (a folder without one, trimmed) come first,
        then the trip id decides."""
        position: dict[tuple[str, str], int] = {}
        for i, name in enumerate(Ledger(self.folder, keep=0, trips_keep=0).names()):
            parsed = parse_data_name(name)
            if parsed is not None:
                position[(parsed.car, parsed.trip)] = i
        return max(refs, key=lambda r: (position.get((r.car, r.trip), -1), r.trip, r.car))


class BucketSource:
    """The objects of the bucket under ``{S3_KEY_PREFIX}/``, through the uploader's client.

    ``cars``: the cars to list (None: every ``car=`` partition of the prefix).
    """

    def __init__(
        self, client: Any, bucket: str, key_prefix: str, explain: Callable[[BaseException], str]
    ) -> None:
        self._client = client
        self._bucket = bucket
        self._prefix = key_prefix.strip("/") + "/" if key_prefix.strip("/") else ""
        self._explain = explain
        self._listing: list[tuple[str, int, float]] | None = None
        self.description = f"s3://{bucket}/{self._prefix}"

    def _call(self, fn: Callable[[], Any]) -> Any:
        try:
            return fn()
        except Exception as exc:  # botocore's errors: one sentence from the uploader's words
            raise ReportError(self._explain(exc)) from None

    def _objects(self) -> list[tuple[str, int, float]]:
        if self._listing is None:
            out: list[tuple[str, int, float]] = []
            pages = self._client.get_paginator("list_objects_v2").paginate(
                Bucket=self._bucket, Prefix=self._prefix
            )

            def walk() -> None:
                for page in pages:
                    for obj in page.get("Contents", []):
                        when = obj.get("LastModified")
                        modified = when.timestamp() if when is not None else 0.0
                        out.append((str(obj["Key"]), int(obj.get("Size", 0)), modified))

            self._call(walk)
            self._listing = out
        return self._listing

    def keys(self) -> list[str]:
        return [key for key, _size, _modified in self._objects()]

    @property
    def bucket(self) -> str:
        return self._bucket

    def _refs(self, kind: str, sealed: bool = False) -> list[Ref]:
        out: list[Ref] = []
        for key, size, modified in self._objects():
            name = key.rsplit("/", 1)[-1]
            if name.endswith(AGE) != sealed:
                continue  # an encrypted object is read after `eccm decrypt --bucket`
            parsed = parse_data_name(name) if kind == "data" else parse_summary_name(name)
            if parsed is not None:
                out.append(Ref(parsed.car, parsed.trip, name, key, size, True, modified))
        return sorted(out)

    def summaries(self) -> list[Ref]:
        return self._refs("summary")

    def encrypted_summaries(self) -> list[Ref]:
        """The ``.age`` summaries, which ``summaries`` leaves out (to say so)."""
        return self._refs("summary", sealed=True)

    def data_files(self, car: str, trip: str) -> list[Ref]:
        refs = [r for r in self._refs("data") if r.car == car and r.trip == trip]
        return sorted(refs, key=_seq)

    def all_data_files(self) -> list[Ref]:
        return self._refs("data")

    def read(self, ref: Ref) -> bytes:
        def get() -> bytes:
            body = self._client.get_object(Bucket=self._bucket, Key=ref.where)["Body"]
            return bytes(body.read())

        data: bytes = self._call(get)
        return data

    def latest(self, refs: list[Ref]) -> Ref:
        """The summary uploaded last (the server's clock, not the trip id: a Pi without a
        real-time clock may name a later trip with an earlier time), then the trip id."""
        return max(refs, key=lambda r: (r.modified, r.trip, r.car))
