"""What the record directory holds for a reader: closed data files and trip summaries.

The web page's Files list and its downloads (SPEC §7) read it. Only names that
:mod:`eccm.store.names` recognises are listed (never an open ``.part``, a temp file or a
sidecar), in the record directory and under ``uploaded/``; a download is looked up by
name in this listing, never joined to a path from what a client sent.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from eccm.store.names import SIDECAR, UPLOADED_DIR, parse_data_name, parse_summary_name


@dataclass(frozen=True, slots=True)
class StoredFile:
    name: str
    kind: str  # "data" or "summary"
    trip: str
    size: int
    modified: float  # epoch seconds
    uploaded: bool  # under uploaded/ (kept after its verified upload)
    path: Path


def _kind(name: str) -> tuple[str, str] | None:
    data = parse_data_name(name)
    if data is not None:
        return "data", data.trip
    summary = parse_summary_name(name)
    if summary is not None:
        return "summary", summary.trip
    return None


def list_files(record_dir: Path, complete: bool = False) -> list[StoredFile]:
    """Closed data files and trip summaries, newest trip first; a folder that is not
    there (nothing recorded yet) is an empty list.

    ``complete``: a data file in the record directory only with its sidecar beside it,
    as the uploader takes them. Closing a file passes through names the listing would
    otherwise show for a moment: ``x.tsv`` renamed from the ``.part`` before it is
    compressed into ``x.tsv.gz`` (and removed), the plaintext before it is sealed into
    ``.age``. Under ``uploaded/`` every file is complete: it is moved there once
    verified in the bucket, before its sidecar is sent (whose upload may wait for days
    of a dead link, the sidecar still in the record directory).
    """
    out: list[StoredFile] = []
    for folder, uploaded in ((record_dir, False), (record_dir / UPLOADED_DIR, True)):
        try:
            entries = list(os.scandir(folder))
        except OSError:
            continue
        check = complete and not uploaded
        names = {entry.name for entry in entries} if check else set()
        for entry in entries:
            kind = _kind(entry.name)
            if kind is None:
                continue
            if check and kind[0] == "data" and entry.name + SIDECAR not in names:
                continue  # still being closed
            try:
                if not entry.is_file(follow_symlinks=False):
                    continue
                st = entry.stat(follow_symlinks=False)
            except OSError:
                continue  # moved or deleted meanwhile (uploaded, expired)
            out.append(
                StoredFile(
                    entry.name,
                    kind[0],
                    kind[1],
                    st.st_size,
                    st.st_mtime,
                    uploaded,
                    Path(entry.path),
                )
            )
    out.sort(key=lambda f: (f.trip, f.kind == "summary", f.name), reverse=True)
    return out


def find_file(record_dir: Path, name: str) -> StoredFile | None:
    """The listed file called ``name`` (exactly), or None."""
    if _kind(name) is None:
        return None
    for f in list_files(record_dir, complete=True):
        if f.name == name:
            return f
    return None
