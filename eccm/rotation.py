"""Pure decisions of the recorder: file names, sequence numbers, when to rotate and flush.

No I/O here: the recorder asks, with the state of its open file and the time of its
clock, and does what the answer says (python-can's ``should_rollover`` is the model).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum

from eccm.sample import Layout

PART = ".part"
GZ = ".gz"
SIDECAR = ".json"
META = ".part.meta.json"
TMP = ".tmp"


def data_name(car: str, trip: str, seq: int, ext: str) -> str:
    """``{CAR}_{TRIP_ID}_{SEQ:04d}{EXT}``: the name of a closed, uncompressed file."""
    return f"{car}_{trip}_{seq:04d}{ext}"


def uploaded_name(name: str, compression: str) -> str:
    """The data file as it is uploaded: ``x.tsv.gz`` when compressed, else ``x.tsv``."""
    return name + GZ if compression == "gzip" else name


def sidecar_name(uploaded: str) -> str:
    return uploaded + SIDECAR


def _prefix(car: str, trip: str) -> re.Pattern[str]:
    return re.compile(re.escape(f"{car}_{trip}_") + r"(\d{4,})(?:\.|$)")


def used_seqs(car: str, trip: str, names: Iterable[str]) -> set[int]:
    """Sequence numbers taken by any file of that trip (data, part, sidecar, temp, ledger)."""
    pattern = _prefix(car, trip)
    out: set[int] = set()
    for name in names:
        m = pattern.match(name)
        if m:
            out.add(int(m.group(1)))
    return out


def next_seq(car: str, trip: str, names: Iterable[str]) -> int:
    """The next free SEQ of a trip: one past the highest ever seen, from 1.

    Past the highest rather than the first gap: a gap is a file already uploaded and
    deleted, and reusing its number would overwrite that object in the bucket.
    """
    return max(used_seqs(car, trip, names), default=0) + 1


_LEDGER_NAME = re.compile(r"(.+_\d{8}T\d{6}Z_)(\d{4,})")


def trim_ledger(names: list[str], keep: int, trips_keep: int) -> list[str]:
    """The ledger of used names, cut to the last ``keep`` names plus, for each older trip
    (up to ``trips_keep`` of them), its name with the highest sequence number.

    A Pi that boots to the same time every day reuses trip ids; the highest name of each
    trip is what keeps a reused id from ever naming a file like one already uploaded and
    deleted (and from being taken as a new trip's id).
    """
    if len(names) <= keep:
        return list(names)
    older, recent = names[:-keep], names[-keep:]
    best: dict[str, tuple[int, str]] = {}
    for name in older:
        m = _LEDGER_NAME.match(name)
        if m is None:
            continue
        key, seq = m.group(1), int(m.group(2))
        if key not in best or seq > best[key][0]:
            best.pop(key, None)  # re-inserted last: dicts keep the order of insertion
            best[key] = (seq, name)
    kept = [name for _seq, name in best.values()]
    return kept[-trips_keep:] + recent


def stem_of(name: str, ext: str) -> str | None:
    """``x.tsv`` for any file the recorder makes from it (``x.tsv.part``, ``x.tsv.gz.json``...).

    None for names the recorder does not own. The stem ends with the extension, so the
    files of another extension in the same directory are left alone.
    """
    idx = name.find(ext)
    while idx != -1:
        stem, rest = name[: idx + len(ext)], name[idx + len(ext) :]
        if rest in _SUFFIXES and parse_stem(stem, ext) is not None:
            return stem
        idx = name.find(ext, idx + 1)
    return None


_STEM = re.compile(r"([A-Za-z0-9._-]{1,64})_(\d{8}T\d{6}Z)_(\d{4,})")


def parse_stem(stem: str, ext: str) -> tuple[str, str, int] | None:
    """(car, trip, seq) of ``{CAR}_{TRIP_ID}_{SEQ}{EXT}``; None for anyone else's file."""
    if not stem.endswith(ext):
        return None
    m = _STEM.fullmatch(stem[: -len(ext)])
    if m is None:
        return None
    return m.group(1), m.group(2), int(m.group(3))


_SUFFIXES = frozenset(
    {
        "",
        PART,
        GZ,
        SIDECAR,
        GZ + SIDECAR,
        META,
        GZ + TMP,
        SIDECAR + TMP,
        GZ + SIDECAR + TMP,
        META + TMP,
    }
)


class Reason(StrEnum):
    AGE = "age"
    SIZE = "size"
    TRIP = "trip changed"
    LAYOUT = "columns changed"
    TRIP_END = "trip ended"
    REQUESTED = "requested"
    STOP = "stopping"


@dataclass(frozen=True, slots=True)
class OpenState:
    """What a rotation decision needs to know about the open file."""

    trip_id: str
    layout: Layout
    opened_at: float  # monotonic
    size: int  # bytes, header included
    rows: int


@dataclass(frozen=True, slots=True)
class RotationPolicy:
    max_seconds: float
    max_bytes: int

    def before_row(
        self, state: OpenState | None, trip_id: str, layout: Layout, row_bytes: int, now: float
    ) -> Reason | None:
        """Whether the open file must be closed before this row is written to it."""
        if state is None:
            return None
        if trip_id != state.trip_id:
            return Reason.TRIP
        if layout != state.layout:
            return Reason.LAYOUT
        if now - state.opened_at >= self.max_seconds:
            return Reason.AGE
        # A single row larger than the limit still goes into a file of its own.
        if state.rows > 0 and state.size + row_bytes > self.max_bytes:
            return Reason.SIZE
        return None

    def idle(self, state: OpenState | None, now: float) -> Reason | None:
        """Whether a file that receives no rows is old enough to be closed anyway."""
        if state is not None and now - state.opened_at >= self.max_seconds:
            return Reason.AGE
        return None


def flush_due(interval: float, last_flush: float, now: float) -> bool:
    """FILE_FLUSH_INTERVAL=0 syncs every row; otherwise at most once per interval."""
    return interval <= 0 or now - last_flush >= interval
